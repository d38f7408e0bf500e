// One open document, edited live: `document:update` on input (debounced), incoming
// `document:updated` applied without moving the caret, `user:typing`, and the conflict events.
//
// The page keeps three states of the document:
//   server — the newest state it has heard of (join ack, document:updated, conflict:resolved);
//   base   — the server state the form's edits derive from (what a write names as `version`);
//   local  — what the form shows.
// One write is in flight at a time. Someone else's change is folded into the form at once when
// it touches other fields or other parts of a text (merge3); when both sides changed the same
// thing, the page keeps its value and writes from its older base, so the server's strategy
// decides (merge, last-write-wins, or a conflict dialog for manual).

import type { Socket } from "socket.io-client";
import type { Me } from "./api";
import { ConflictDialog, type PendingConflict } from "./conflict";
import { type Data, merge3, same, setFieldValue } from "./text";
import { toast } from "./toasts";

interface State {
  version: number;
  data: Data;
}

interface InFlight {
  seq: number;
  opId: string;
  version: number;
  data: Data;
}

type Ack = { ok: true; [k: string]: unknown } | { ok: false; error: { code: string; message: string } };

const DEBOUNCE_MS = 150;
const TYPING_EVERY_MS = 1000;
const TYPING_SHOWN_MS = 2500;
const TEXT_FIELDS = ["notes"];
const FIELDS = ["title", "status", "notes"] as const;

function newOpId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

export class DocumentEditor {
  docId: string | null = null;
  private strategy = "merge";
  private textFields: string[] = TEXT_FIELDS;
  private joined = false;
  /** Whether a join has answered since the document was opened (else the next one is fresh). */
  private loaded = false;
  private wantedStrategy: string | undefined;
  private server: State = { version: 0, data: {} };
  private base: State = { version: 0, data: {} };
  private local: Data = {};
  private inflight: InFlight | null = null;
  private seq = 0;
  private timer: number | undefined;
  private lastTyping = 0;
  private readonly typers = new Map<string, { name: string; timer: number }>();
  private readonly conflicts = new Map<string, PendingConflict>();
  private readonly myConflicts = new Set<string>();
  private readonly dialog: ConflictDialog;

  private readonly form = $<HTMLFormElement>("doc-form");
  private readonly inputs = {
    title: $<HTMLInputElement>("field-title"),
    status: $<HTMLSelectElement>("field-status"),
    notes: $<HTMLTextAreaElement>("field-notes"),
  };

  constructor(
    private readonly socket: Socket,
    private readonly me: Me,
    private readonly hooks: { changed: (docId: string, title: string, version: number) => void },
  ) {
    this.dialog = new ConflictDialog((c, value) => this.resolve(c, value));
    for (const name of FIELDS) {
      const el = this.inputs[name];
      el.addEventListener("input", () => this.edited(name, el.value));
      el.addEventListener("change", () => this.edited(name, el.value));
    }
    this.form.addEventListener("submit", (e) => e.preventDefault());
    $("review-conflict").addEventListener("click", () => this.showConflict());

    socket.on("document:updated", (p: { documentId: string; version: number; data: Data }) => {
      if (p.documentId === this.docId) this.remote({ version: p.version, data: p.data });
    });
    socket.on("document:conflict", (p: Data) => this.conflictRaised(p));
    socket.on("conflict:resolved", (p: Data) => this.conflictResolved(p));
    socket.on("user:typing", (p: { userId: string; userName: string; resourceId: string }) => {
      if (p.resourceId === this.docId && p.userId !== this.me.userId) this.typing(p.userId, p.userName);
    });
  }

  // -- opening and joining ---------------------------------------------------------------

  /** Show document `docId` (created with `strategy` if it does not exist yet). */
  async open(docId: string, strategy?: string): Promise<void> {
    if (this.docId && this.docId !== docId && this.socket.connected) {
      this.socket.emit("document:leave", { documentId: this.docId }, () => undefined);
    }
    clearTimeout(this.timer);
    this.docId = docId;
    this.wantedStrategy = strategy;
    this.joined = false;
    this.loaded = false;
    this.inflight = null;
    this.conflicts.clear();
    this.myConflicts.clear();
    for (const t of this.typers.values()) clearTimeout(t.timer);
    this.typers.clear();
    this.renderTyping();
    this.dialog.close();
    this.server = this.base = { version: 0, data: {} };
    this.local = {};
    $("doc-error").textContent = "";
    $("empty").hidden = true;
    this.form.hidden = true;
    this.form.dataset.documentId = docId;
    $("doc-title-head").textContent = docId;
    await this.join();
  }

  /** After a reconnect: join again, then resend an unanswered write or send unsent edits. */
  async rejoin(): Promise<void> {
    if (this.docId) await this.join();
  }

  disconnected(): void {
    this.joined = false;
    this.render();
  }

  private async join(): Promise<void> {
    const docId = this.docId;
    if (!docId || !this.socket.connected) return this.render();
    const ack = await this.call("document:join", {
      documentId: docId,
      strategy: this.wantedStrategy,
      textFields: TEXT_FIELDS,
    });
    if (docId !== this.docId) return; // another document was opened meanwhile
    const fresh = !this.loaded;
    if (!ack.ok) {
      const why =
        ack.error.code === "forbidden"
          ? `You cannot open “${docId}”: it belongs to another company.`
          : ack.error.message;
      $("doc-error").textContent = why;
      this.form.hidden = true;
      return;
    }
    this.joined = true;
    this.loaded = true;
    this.strategy = String(ack.strategy);
    this.textFields = (ack.textFields as string[]) ?? TEXT_FIELDS;
    const state = { version: Number(ack.version), data: (ack.data as Data) ?? {} };
    if (fresh) {
      this.server = this.base = state;
      this.local = { ...state.data };
    } else if (state.version >= this.server.version) {
      this.server = state;
    }
    for (const c of (ack.conflicts as Data[]) ?? []) {
      const author = (c.author as { userId?: string } | undefined)?.userId;
      this.addConflict({
        documentId: docId,
        conflictId: String(c.conflictId),
        conflictedFields: c.conflictedFields as string[],
        originalValue: c.originalValue as Data,
        incomingValue: c.incomingValue as Data,
        mine: author === this.me.userId,
      });
    }
    this.form.hidden = false;
    if (this.inflight) this.send(this.inflight); // unanswered before the drop: same opId
    else this.reconcile();
    this.render();
    if (this.conflicts.size && (fresh || !this.dialog.conflictId)) this.showConflict();
  }

  // -- local edits -------------------------------------------------------------------------

  private edited(field: string, value: string): void {
    if (same(this.local[field], value)) return;
    this.local = { ...this.local, [field]: value };
    const now = Date.now();
    if (this.joined && now - this.lastTyping > TYPING_EVERY_MS) {
      this.lastTyping = now;
      this.socket.emit("user:typing", { documentId: this.docId }, () => undefined);
    }
    clearTimeout(this.timer);
    this.timer = window.setTimeout(() => this.flush(), field === "status" ? 0 : DEBOUNCE_MS);
    this.renderState();
  }

  private dirty(): boolean {
    return !same(this.local, this.base.data);
  }

  /** Send the form if it differs from its base (one write in flight at a time). */
  private flush(): void {
    if (!this.joined || !this.socket.connected || this.inflight || this.conflicts.size) return;
    if (!this.dirty()) return;
    this.send({ seq: 0, opId: newOpId(), version: this.base.version, data: { ...this.local } });
  }

  private send(w: InFlight): void {
    w.seq = ++this.seq;
    this.inflight = w;
    this.renderState();
    this.socket.emit(
      "document:update",
      { documentId: this.docId, version: w.version, data: w.data, opId: w.opId },
      (ack: Ack) => this.answered(w.seq, ack),
    );
  }

  private answered(seq: number, ack: Ack): void {
    const sent = this.inflight;
    if (!sent || sent.seq !== seq) return; // an answer from before a reconnect
    this.inflight = null;
    if (!ack.ok) return this.refused(ack.error);
    const status = String(ack.status);
    if (status === "conflict") {
      this.myConflicts.add(String(ack.conflictId));
      const c = this.conflicts.get(String(ack.conflictId));
      if (c && !c.mine) {
        c.mine = true;
        this.showConflict();
      }
      return this.render();
    }
    let landed: State = { version: Number(ack.version), data: ack.data as Data };
    if (status === "duplicate" && this.server.version >= landed.version) landed = this.server;
    if (landed.version >= this.base.version) {
      // fold edits typed while the write was in flight onto what the server made of it
      this.local = merge3(sent.data, this.local, landed.data).data;
      this.base = landed;
      if (landed.version > this.server.version) this.server = landed;
    }
    this.reconcile();
    this.render();
    if (this.dirty()) this.flush();
  }

  private refused(error: { code: string; message: string }): void {
    if (error.code === "conflict_pending") {
      toast("Resolve your pending conflict first", error.message, "warning");
    } else if (["version_ahead", "history_gone", "not_found"].includes(error.code)) {
      // our base is unusable: start again from the server's state, keeping the form
      this.base = { ...this.server };
      this.render();
      void this.rejoin();
      return;
    } else {
      toast("Your change was refused", error.message, "error");
    }
    this.render();
  }

  // -- others' changes ---------------------------------------------------------------------

  private remote(state: State): void {
    if (state.version <= this.server.version) return;
    this.server = state;
    if (!this.inflight) {
      this.reconcile();
      this.render();
      if (this.dirty()) this.flush();
    }
  }

  /** Fold the newest server state into the form (see the top of this file). */
  private reconcile(): void {
    if (this.server.version <= this.base.version) return;
    const m = merge3(this.base.data, this.local, this.server.data);
    this.local = m.data;
    if (m.overlap.length === 0) this.base = this.server;
    // else: the base stays older, and the next write lets the server's strategy decide
    if (this.dirty()) {
      clearTimeout(this.timer);
      this.timer = window.setTimeout(() => this.flush(), DEBOUNCE_MS);
    }
  }

  private typing(userId: string, name: string): void {
    const old = this.typers.get(userId);
    if (old) clearTimeout(old.timer);
    const timer = window.setTimeout(() => {
      this.typers.delete(userId);
      this.renderTyping();
    }, TYPING_SHOWN_MS);
    this.typers.set(userId, { name, timer });
    this.renderTyping();
  }

  // -- conflicts ---------------------------------------------------------------------------

  private conflictRaised(p: Data): void {
    const docId = this.docId;
    if (!docId || p.documentId !== docId) return;
    const fields = (p.conflictedFields as string[]) ?? [];
    if (!p.conflictId) {
      // merge / last-write-wins: already settled by the server; conflict:resolved follows
      toast("Edited at the same time", `Settled by ${String(p.strategy)}: ${fields.join(", ")}`, "info", "document:conflict");
      return;
    }
    const id = String(p.conflictId);
    const incoming = p.incomingValue as Data;
    this.addConflict({
      documentId: docId,
      conflictId: id,
      conflictedFields: fields,
      originalValue: p.originalValue as Data,
      incomingValue: incoming,
      mine: this.myConflicts.has(id) || (this.inflight !== null && same(this.inflight.data, incoming)),
    });
    this.render();
    this.showConflict();
  }

  private addConflict(c: PendingConflict): void {
    if (c.mine) this.myConflicts.add(c.conflictId);
    this.conflicts.set(c.conflictId, c);
  }

  private showConflict(): void {
    const c = this.conflicts.get(this.dialog.conflictId ?? "") ?? this.conflicts.values().next().value;
    if (c) this.dialog.open(c, () => ({ ...this.server.data }), this.textFields);
  }

  private async resolve(c: PendingConflict, value: Data): Promise<string | null> {
    const ack = await this.call("conflict:resolve", {
      documentId: c.documentId,
      conflictId: c.conflictId,
      resolvedValue: value,
    });
    return ack.ok ? null : ack.error.message;
  }

  private conflictResolved(p: Data): void {
    if (p.documentId !== this.docId) return;
    const version = Number(p.version);
    const resolved = p.resolvedValue as Data;
    const id = p.conflictId ? String(p.conflictId) : null;
    const held = id ? this.conflicts.get(id) : undefined;
    if (id) {
      this.conflicts.delete(id);
      this.dialog.close(id);
      toast("Conflict resolved", `${(p.conflictedFields as string[]).join(", ")} — now version ${version}`, "success", "conflict:resolved");
    }
    if (version <= this.server.version) return this.render();
    this.server = { version, data: resolved };
    if (this.inflight) return this.render(); // folded in when the write is answered
    if (held && this.myConflicts.has(held.conflictId)) {
      // our held write is settled: the form restarts from the resolution
      this.local = merge3(held.incomingValue, this.local, resolved).data;
      this.base = this.server;
    } else {
      this.reconcile();
    }
    this.render();
    if (this.conflicts.size) this.showConflict();
    else if (this.dirty()) this.flush();
  }

  // -- plumbing ----------------------------------------------------------------------------

  private call(event: string, payload: Data): Promise<Ack> {
    return this.socket
      .timeout(10_000)
      .emitWithAck(event, payload)
      .catch((e: Error) => ({ ok: false, error: { code: "timeout", message: e.message } }) as Ack);
  }

  private render(): void {
    if (!this.docId) return;
    const editable = this.loaded && this.conflicts.size === 0; // offline edits are kept
    for (const name of FIELDS) {
      const el = this.inputs[name];
      const value = this.local[name];
      const text = typeof value === "string" ? value : name === "status" ? "draft" : "";
      if (el instanceof HTMLSelectElement) el.value = text;
      else setFieldValue(el, text);
      if (el instanceof HTMLSelectElement) el.disabled = !editable;
      else el.readOnly = !editable;
    }
    const title = typeof this.local.title === "string" && this.local.title ? this.local.title : this.docId;
    $("doc-title-head").textContent = title;
    $("doc-strategy").textContent = this.strategy;
    $("doc-strategy").dataset.strategy = this.strategy;
    $("conflict-banner").hidden = this.conflicts.size === 0;
    this.hooks.changed(this.docId, typeof this.local.title === "string" ? this.local.title : "", this.server.version);
    this.renderState();
  }

  private renderState(): void {
    const state = !this.socket.connected
      ? ["offline", "Offline — your changes stay on this page until you reconnect"]
      : this.conflicts.size
        ? ["conflict", "Editing paused: a conflict is waiting for a decision"]
        : this.inflight || this.dirty()
          ? ["saving", "Saving…"]
          : ["saved", "All changes saved"];
    const el = $("save-state");
    el.dataset.state = state[0];
    el.textContent = state[1];
    $("doc-version").textContent = `v${this.server.version}`;
    this.form.dataset.version = String(this.server.version);
    this.form.dataset.state = state[0];
  }

  private renderTyping(): void {
    const names = [...this.typers.values()].map((t) => t.name);
    $("typing").textContent =
      names.length === 0 ? "" : `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…`;
  }
}
