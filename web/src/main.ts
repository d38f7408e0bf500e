// The demo page: sign in, connect with the official socket.io-client, list the company's
// documents, edit one live, see who is online, and get a toast for each ERP event.

import { io, type Socket } from "socket.io-client";
import "./style.css";
import {
  type DocumentSummary,
  demoConfig,
  listDocuments,
  type Me,
  meFromToken,
  mintToken,
  onlineUsers,
  savedMe,
  saveMe,
} from "./api";
import { DocumentEditor } from "./editor";
import { listenForErpEvents, toast } from "./toasts";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const PRESETS = [
  { name: "Ann Builder", user: "ann", company: "acme" },
  { name: "Bob Foreman", user: "bob", company: "acme" },
  { name: "Cleo Surveyor", user: "cleo", company: "globex" },
];

// -- sign in ---------------------------------------------------------------------------------

const ERROR_KEY = "collab-demo-error";

async function main(): Promise<void> {
  const me = savedMe();
  if (me) return enter(me);
  const { tokens } = await demoConfig().catch(() => ({ tokens: false }));
  const error = sessionStorage.getItem(ERROR_KEY) ?? "";
  sessionStorage.removeItem(ERROR_KEY);
  showSignIn(tokens, error);
}

function showSignIn(tokens: boolean, error = ""): void {
  $("signin").hidden = false;
  $("workspace").hidden = true;
  $("me").hidden = true;
  $("signin-error").textContent = error;
  const dev = $<HTMLFormElement>("signin-dev");
  const pasted = $<HTMLFormElement>("signin-token");
  dev.hidden = !tokens;
  pasted.hidden = tokens;
  const presets = $("presets");
  presets.replaceChildren(
    ...PRESETS.map((p) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "ghost small";
      b.textContent = `${p.name.split(" ")[0]} · ${p.company}`;
      b.addEventListener("click", () => {
        (dev.elements.namedItem("name") as HTMLInputElement).value = p.name;
        (dev.elements.namedItem("user") as HTMLInputElement).value = p.user;
        (dev.elements.namedItem("company") as HTMLInputElement).value = p.company;
        dev.requestSubmit();
      });
      return b;
    }),
  );
  const nameInput = dev.elements.namedItem("name") as HTMLInputElement;
  const userInput = dev.elements.namedItem("user") as HTMLInputElement;
  nameInput.oninput = () => {
    userInput.value = nameInput.value.trim().split(/\s+/)[0]?.toLowerCase() ?? "";
  };
  dev.onsubmit = async (e) => {
    e.preventDefault();
    const f = new FormData(dev);
    try {
      const me = await mintToken(String(f.get("user")), String(f.get("company")), String(f.get("name")));
      saveMe(me);
      enter(me);
    } catch (err) {
      $("signin-error").textContent = (err as Error).message;
    }
  };
  pasted.onsubmit = (e) => {
    e.preventDefault();
    try {
      const me = meFromToken(String(new FormData(pasted).get("token")));
      saveMe(me);
      enter(me);
    } catch (err) {
      $("signin-error").textContent = (err as Error).message;
    }
  };
}

// -- the workspace ---------------------------------------------------------------------------

function enter(me: Me): void {
  $("signin").hidden = true;
  $("workspace").hidden = false;
  $("me").hidden = false;
  $("who").textContent = `${me.name} · ${me.companyId}`;
  document.title = `${me.name} · collab demo`;

  const socket: Socket = io({ auth: { token: me.token }, transports: ["websocket", "polling"] });
  const docs = new Map<string, DocumentSummary>();
  const online = new Map<string, string>();
  const editor = new DocumentEditor(socket, me, {
    changed(docId, title, version) {
      const d = docs.get(docId);
      if (d && (d.title !== title || d.version !== version)) {
        d.title = title;
        d.version = version;
        renderDocs();
      }
    },
  });
  const strategies = new Map<string, string>(); // chosen for documents opened by id
  let manualOffline = false;

  // connection
  const conn = $("conn");
  const setConn = (state: string, text: string) => {
    conn.dataset.state = state;
    conn.textContent = text;
  };
  socket.on("connect", () => {
    setConn("online", "connected");
    void refreshPresence();
    void editor.rejoin();
  });
  socket.on("disconnect", (reason) => {
    setConn("offline", manualOffline ? "offline (by you)" : "reconnecting…");
    editor.disconnected();
    if (!manualOffline && reason === "io server disconnect") toast("Disconnected by the server", "", "warning");
  });
  socket.on("connect_error", (err: Error) => {
    if (err.message.includes("authentication")) startOver(err.message);
    else setConn("offline", "reconnecting…");
  });
  socket.on("error", (e: { code?: string; message?: string; event?: string }) => {
    if (e.code === "unauthenticated") startOver(e.message ?? "authentication failed");
    else toast("Error", `${e.event ?? ""} ${e.message ?? ""}`.trim(), "error");
  });
  /** The token is refused (expired, signed with another secret): back to the sign-in. */
  function startOver(reason: string): void {
    socket.disconnect();
    saveMe(null);
    sessionStorage.setItem(ERROR_KEY, `${reason}. Sign in again.`);
    location.reload();
  }

  $("offline-toggle").onclick = () => {
    manualOffline = !manualOffline;
    $("offline-toggle").textContent = manualOffline ? "Go online" : "Go offline";
    if (manualOffline) socket.disconnect();
    else socket.connect();
  };
  $("sign-out").onclick = () => {
    socket.disconnect();
    saveMe(null);
    location.hash = "";
    location.reload();
  };

  // presence
  async function refreshPresence(): Promise<void> {
    try {
      for (const u of await onlineUsers(me.token)) online.set(u.userId, u.name);
    } catch {
      /* shown as ids until the next refresh */
    }
    renderOnline();
  }
  function renderOnline(): void {
    online.set(me.userId, me.name);
    const items = [...online.entries()]
      .sort(([a], [b]) => (a === me.userId ? -1 : b === me.userId ? 1 : a.localeCompare(b)))
      .map(([id, name]) => {
        const li = document.createElement("li");
        li.dataset.userId = id;
        li.textContent = id === me.userId ? `${name} (you)` : name;
        return li;
      });
    $("online").replaceChildren(...items);
    $("online-count").textContent = String(items.length);
  }
  socket.on("user:online", (p: { userId: string }) => {
    if (!online.has(p.userId)) online.set(p.userId, p.userId);
    renderOnline();
    void refreshPresence();
  });
  socket.on("user:offline", (p: { userId: string }) => {
    if (p.userId !== me.userId) online.delete(p.userId);
    renderOnline();
  });

  // ERP events
  listenForErpEvents(socket);

  // documents
  async function refreshDocs(): Promise<void> {
    try {
      const list = await listDocuments(me.token);
      docs.clear();
      for (const d of list) docs.set(d.documentId, d);
    } catch (err) {
      toast("Could not list documents", (err as Error).message, "error");
    }
    renderDocs();
  }
  function renderDocs(): void {
    const items = [...docs.values()].map((d) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `#doc=${encodeURIComponent(d.documentId)}`;
      a.dataset.documentId = d.documentId;
      if (d.documentId === editor.docId) a.className = "active";
      const title = document.createElement("span");
      title.className = "doc-name";
      title.textContent = d.title || d.documentId;
      const meta = document.createElement("span");
      meta.className = "doc-meta";
      meta.textContent = `${d.documentId} · ${d.strategy} · v${d.version}`;
      a.append(title, meta);
      li.append(a);
      return li;
    });
    if (items.length === 0) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = "No documents yet.";
      items.push(li);
    }
    $("doc-list").replaceChildren(...items);
  }
  $("refresh-docs").onclick = () => void refreshDocs();
  $<HTMLFormElement>("open-doc").onsubmit = (e) => {
    e.preventDefault();
    const f = new FormData(e.target as HTMLFormElement);
    const id = String(f.get("documentId")).trim();
    if (!id) return;
    strategies.set(id, String(f.get("strategy")));
    const target = `#doc=${encodeURIComponent(id)}`;
    if (location.hash === target) void openFromHash();
    else location.hash = target;
    (e.target as HTMLFormElement).reset();
  };

  async function openFromHash(): Promise<void> {
    const m = /^#doc=(.+)$/.exec(location.hash);
    if (!m) return;
    const id = decodeURIComponent(m[1]);
    await editor.open(id, strategies.get(id));
    if (!docs.has(id)) await refreshDocs();
    else renderDocs();
  }
  window.addEventListener("hashchange", () => void openFromHash());

  void refreshDocs().then(openFromHash);
}

void main();
