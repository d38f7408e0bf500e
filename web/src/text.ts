// Pure helpers for live editing: single-splice text diffs, rebasing unsent edits onto someone
// else's change, and keeping a caret in place when a field's value is replaced.

export type Data = Record<string, unknown>;

/** One contiguous change: `del` characters at `start` replaced by `ins`. */
export interface Splice {
  start: number;
  del: number;
  ins: string;
}

/** The single splice turning `a` into `b` (common prefix and suffix left out). */
export function splice(a: string, b: string): Splice {
  let start = 0;
  const max = Math.min(a.length, b.length);
  while (start < max && a.charCodeAt(start) === b.charCodeAt(start)) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a.charCodeAt(endA - 1) === b.charCodeAt(endB - 1)) {
    endA--;
    endB--;
  }
  return { start, del: endA - start, ins: b.slice(start, endB) };
}

function isNoop(s: Splice): boolean {
  return s.del === 0 && s.ins === "";
}

/**
 * `mine` and `theirs` both edited `base`: both edits together when they touch different parts
 * of the text, or `null` when they overlap (including two insertions at the same place, whose
 * order only the server's strategy may decide).
 */
export function rebaseText(base: string, mine: string, theirs: string): string | null {
  const m = splice(base, mine);
  const t = splice(base, theirs);
  if (isNoop(m)) return theirs;
  if (isNoop(t) || mine === theirs) return mine;
  const mEnd = m.start + m.del;
  const tEnd = t.start + t.del;
  const samePoint = m.start === t.start;
  if (mEnd <= t.start && !samePoint) {
    // mine is entirely before theirs: its offsets are unchanged
    return theirs.slice(0, m.start) + m.ins + theirs.slice(mEnd);
  }
  if (tEnd <= m.start && !samePoint) {
    const shift = t.ins.length - t.del;
    return theirs.slice(0, m.start + shift) + m.ins + theirs.slice(mEnd + shift);
  }
  return null;
}

/** Stable JSON equality for plain data. */
export function same(a: unknown, b: unknown): boolean {
  return canonical(a) === canonical(b);
}

function canonical(v: unknown): string {
  if (v === undefined) return "undefined";
  return JSON.stringify(v, (_k, value: unknown) => {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const obj = value as Record<string, unknown>;
      return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]));
    }
    return value;
  });
}

export interface Merge3 {
  data: Data;
  /** Top-level fields both sides changed in ways that cannot be combined here. */
  overlap: string[];
}

/**
 * Three-way merge of top-level fields: fields changed on one side take that side's value;
 * strings changed on both sides in different places are combined; anything else keeps `mine`
 * and is reported in `overlap` (the caller then lets the server's strategy decide).
 */
export function merge3(base: Data, mine: Data, theirs: Data): Merge3 {
  const data: Data = {};
  const overlap: string[] = [];
  const keys = new Set([...Object.keys(base), ...Object.keys(mine), ...Object.keys(theirs)]);
  for (const k of keys) {
    const b = base[k];
    const m = mine[k];
    const t = theirs[k];
    let v: unknown;
    if (same(m, b)) v = t;
    else if (same(t, b) || same(m, t)) v = m;
    else if (typeof m === "string" && typeof t === "string") {
      const combined = rebaseText(typeof b === "string" ? b : "", m, t);
      if (combined === null) overlap.push(k);
      v = combined ?? m;
    } else {
      overlap.push(k);
      v = m;
    }
    if (v !== undefined) data[k] = v;
  }
  return { data, overlap };
}

/** Where a caret at `pos` belongs after `old` became `next`. */
export function moveCaret(pos: number, old: string, next: string): number {
  const s = splice(old, next);
  if (pos <= s.start) return pos;
  if (pos >= s.start + s.del) return pos + s.ins.length - s.del;
  return s.start + s.ins.length;
}

/** Replace an input's value keeping its caret and selection where the user left them. */
export function setFieldValue(el: HTMLInputElement | HTMLTextAreaElement, next: string): void {
  const old = el.value;
  if (old === next) return;
  const focused = document.activeElement === el;
  const start = el.selectionStart ?? 0;
  const end = el.selectionEnd ?? 0;
  const scroll = el.scrollTop;
  el.value = next;
  if (focused) {
    el.setSelectionRange(moveCaret(start, old, next), moveCaret(end, old, next));
    el.scrollTop = scroll;
  }
}
