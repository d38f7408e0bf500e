// The conflict dialog of the manual strategy: originalValue and incomingValue side by side,
// the conflicted fields highlighted, and three ways out: keep mine, keep theirs, or edit.

import { type Data, same } from "./text";

export interface PendingConflict {
  documentId: string;
  conflictId: string;
  conflictedFields: string[];
  /** The document as the conflicting write found it. */
  originalValue: Data;
  /** The conflicting write's data. */
  incomingValue: Data;
  /** True when this page sent the conflicting write (then "mine" is the incoming side). */
  mine: boolean;
}

type Side = "original" | "incoming";

/** What resolving with one side sends: the whole document. `current` is the newest state this
 * page knows (the original plus anything written since the conflict was raised). */
export function resolvedWith(c: PendingConflict, side: Side, current: Data): Data {
  if (side === "original") return { ...current };
  const out: Data = { ...current };
  const keys = new Set([...Object.keys(c.originalValue), ...Object.keys(c.incomingValue)]);
  for (const k of keys) {
    if (same(c.incomingValue[k], c.originalValue[k])) continue;
    if (k in c.incomingValue) out[k] = c.incomingValue[k];
    else delete out[k];
  }
  return out;
}

const show = (v: unknown) =>
  v === undefined ? "—" : typeof v === "string" ? (v === "" ? "(empty)" : v) : JSON.stringify(v, null, 2);

const topField = (path: string) => path.split(".")[0];

export class ConflictDialog {
  private readonly dialog = document.getElementById("conflict-dialog") as HTMLDialogElement;
  private readonly el = (id: string) => document.getElementById(id) as HTMLElement;
  private current: PendingConflict | null = null;
  private latest: () => Data = () => ({});
  private textFields: string[] = [];

  constructor(
    /** Sends `conflict:resolve`; resolves to an error message, or null on success. */
    private readonly resolve: (c: PendingConflict, value: Data) => Promise<string | null>,
  ) {
    this.el("keep-mine").addEventListener("click", () => this.pick(true));
    this.el("keep-theirs").addEventListener("click", () => this.pick(false));
    this.el("edit-resolution").addEventListener("click", () => this.editMode(true));
    this.el("cancel-edit").addEventListener("click", () => this.editMode(false));
    this.el("save-resolution").addEventListener("click", () => void this.saveEdit());
    this.el("conflict-later").addEventListener("click", () => this.dialog.close());
    this.dialog.addEventListener("cancel", () => undefined); // Esc closes: same as Later
  }

  get conflictId(): string | null {
    return this.current?.conflictId ?? null;
  }

  /** Open (or refresh) the dialog for `c`. */
  open(c: PendingConflict, latest: () => Data, textFields: string[]): void {
    this.current = c;
    this.latest = latest;
    this.textFields = textFields;
    this.dialog.dataset.conflictId = c.conflictId;
    this.dialog.dataset.mine = String(c.mine);
    this.el("conflict-error").textContent = "";
    this.el("conflict-summary").textContent =
      (c.mine
        ? "Your edit was made on an older version, and someone changed the same fields meanwhile. "
        : "Someone's edit was made on an older version and clashes with the current document. ") +
      `Changed on both sides: ${c.conflictedFields.join(", ")}.`;
    this.renderCompare(c);
    this.editMode(false);
    if (!this.dialog.open) this.dialog.showModal();
  }

  /** Close the dialog if it shows `conflictId` (or whatever it shows, without an id). */
  close(conflictId?: string): void {
    if (conflictId && this.current?.conflictId !== conflictId) return;
    this.current = null;
    delete this.dialog.dataset.conflictId;
    if (this.dialog.open) this.dialog.close();
  }

  private renderCompare(c: PendingConflict): void {
    const grid = this.el("conflict-compare");
    grid.replaceChildren();
    const head = (text: string, yours: boolean, cls: string) => {
      const h = document.createElement("div");
      h.className = `cell head ${cls}`;
      h.textContent = text;
      if (yours) {
        const chip = document.createElement("span");
        chip.className = "chip";
        chip.textContent = "yours";
        h.append(chip);
      }
      return h;
    };
    grid.append(
      head("Field", false, "field"),
      head("Current document (originalValue)", !c.mine, "original"),
      head("Incoming edit (incomingValue)", c.mine, "incoming"),
    );
    const conflicted = new Set(c.conflictedFields.map(topField));
    const keys = [...new Set([...Object.keys(c.originalValue), ...Object.keys(c.incomingValue)])]
      .filter((k) => conflicted.has(k) || !same(c.originalValue[k], c.incomingValue[k]))
      .sort((a, b) => Number(conflicted.has(b)) - Number(conflicted.has(a)) || a.localeCompare(b));
    for (const k of keys) {
      const cls = conflicted.has(k) ? " conflicted" : "";
      const name = document.createElement("div");
      name.className = `cell field${cls}`;
      name.textContent = k;
      const orig = document.createElement("pre");
      orig.className = `cell original${cls}`;
      orig.dataset.field = k;
      orig.textContent = show(c.originalValue[k]);
      const inc = document.createElement("pre");
      inc.className = `cell incoming${cls}`;
      inc.dataset.field = k;
      inc.textContent = show(c.incomingValue[k]);
      grid.append(name, orig, inc);
    }
  }

  private editMode(on: boolean): void {
    const c = this.current;
    this.el("conflict-compare").hidden = on;
    this.el("conflict-actions").hidden = on;
    this.el("edit-actions").hidden = !on;
    const box = this.el("conflict-edit");
    box.hidden = !on;
    box.replaceChildren();
    if (!on || !c) return;
    const mine = c.mine ? c.incomingValue : c.originalValue;
    for (const k of new Set(c.conflictedFields.map(topField))) {
      const label = document.createElement("label");
      label.textContent = k;
      const value = mine[k];
      const long = this.textFields.includes(k) || typeof value !== "string";
      const input = document.createElement(long ? "textarea" : "input");
      input.name = k;
      input.dataset.json = String(typeof value !== "string");
      input.value = typeof value === "string" ? value : JSON.stringify(value ?? null, null, 2);
      if (input instanceof HTMLTextAreaElement) input.rows = 6;
      label.append(input);
      box.append(label);
    }
    (box.querySelector("input, textarea") as HTMLElement | null)?.focus();
  }

  private async pick(mine: boolean): Promise<void> {
    const c = this.current;
    if (!c) return;
    const side: Side = mine === c.mine ? "incoming" : "original";
    await this.send(c, resolvedWith(c, side, this.latest()));
  }

  private async saveEdit(): Promise<void> {
    const c = this.current;
    if (!c) return;
    const value = resolvedWith(c, c.mine ? "incoming" : "original", this.latest());
    for (const input of this.el("conflict-edit").querySelectorAll<HTMLInputElement>("[name]")) {
      if (input.dataset.json === "true") {
        try {
          value[input.name] = JSON.parse(input.value);
        } catch {
          this.el("conflict-error").textContent = `${input.name}: not valid JSON`;
          return;
        }
      } else value[input.name] = input.value;
    }
    await this.send(c, value);
  }

  private async send(c: PendingConflict, value: Data): Promise<void> {
    for (const b of this.dialog.querySelectorAll("button")) b.disabled = true;
    const error = await this.resolve(c, value);
    for (const b of this.dialog.querySelectorAll("button")) b.disabled = false;
    if (error) this.el("conflict-error").textContent = error;
    else this.close(c.conflictId);
  }
}
