// Toasts: one per ERP event (the seed guide's notification, project, finance and inventory
// events) and for the page's own news (conflict resolved, reconnected, errors).

import type { Socket } from "socket.io-client";

export type Tone = "info" | "success" | "warning" | "error";

const box = () => document.getElementById("toasts") as HTMLElement;

export function toast(title: string, message = "", tone: Tone = "info", event?: string): void {
  const el = document.createElement("div");
  el.className = `toast ${tone}`;
  el.setAttribute("role", tone === "error" ? "alert" : "status");
  if (event) el.dataset.event = event;
  const strong = document.createElement("strong");
  strong.textContent = title;
  el.append(strong);
  if (message) {
    const p = document.createElement("p");
    p.textContent = message;
    el.append(p);
  }
  el.addEventListener("click", () => el.remove());
  box().append(el);
  while (box().childElementCount > 5) box().firstElementChild?.remove();
  setTimeout(() => el.remove(), tone === "error" ? 10000 : 7000);
}

type Payload = Record<string, unknown>;
const s = (v: unknown) => (v === undefined || v === null ? "" : String(v));
const money = (v: unknown) =>
  typeof v === "number" ? v.toLocaleString(undefined, { style: "currency", currency: "USD" }) : s(v);

/** How each ERP event reads as a toast: [title, message, tone]. */
const ERP_EVENTS: Record<string, (d: Payload) => [string, string, Tone]> = {
  "notification:new": (d) => [
    s(d.title) || "Notification",
    s(d.message),
    (["info", "warning", "error", "success"] as const).find((t) => t === d.type) ?? "info",
  ],
  "project:created": (d) => ["Project created", `${s(d.name)} (${s(d.status)})`, "info"],
  "project:updated": (d) => ["Project updated", `${s(d.name)} is ${s(d.status)}`, "info"],
  "project:deleted": (d) => ["Project deleted", s(d.id), "warning"],
  "task:assigned": (d) => ["Task assigned to you", `${s(d.taskName)}${d.dueDate ? `, due ${s(d.dueDate)}` : ""}`, "info"],
  "invoice:paid": (d) => ["Invoice paid", `${s(d.invoiceNumber)}: ${money(d.amount)}`, "success"],
  "expense:approved": (d) => ["Expense approved", money(d.amount), "success"],
  "expense:rejected": (d) => ["Expense rejected", `${money(d.amount)}${d.reason ? `: ${s(d.reason)}` : ""}`, "warning"],
  "payment:processed": (d) => ["Payment processed", `${money(d.amount)} by ${s(d.method)} (${s(d.status)})`, "info"],
  "stock:updated": (d) => ["Stock updated", `${s(d.itemName)}: ${s(d.quantity)}${d.location ? ` at ${s(d.location)}` : ""}`, "info"],
  "item:added": (d) => ["Item added", `${s(d.itemName)}: ${s(d.quantity)}`, "info"],
  "reorder:triggered": (d) => ["Reorder triggered", `${s(d.itemName)}: ${s(d.currentStock)} left (reorder at ${s(d.reorderLevel)})`, "warning"],
};

/** Show a toast for every ERP event the socket receives. */
export function listenForErpEvents(socket: Socket): void {
  for (const [event, describe] of Object.entries(ERP_EVENTS)) {
    socket.on(event, (data: Payload) => {
      const [title, message, tone] = describe(data ?? {});
      toast(title, message, tone, event);
    });
  }
}
