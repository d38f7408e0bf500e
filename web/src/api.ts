// The gateway's small HTTP API for the demo (gateway/routes/demo.py), and the signed-in user
// kept in sessionStorage (per tab, so two windows can be two people).

export interface Me {
  token: string;
  userId: string;
  companyId: string;
  name: string;
}

export interface DocumentSummary {
  documentId: string;
  strategy: string;
  textFields: string[];
  version: number;
  title: string;
  pendingConflicts: number;
}

export interface OnlineUser {
  userId: string;
  name: string;
}

const KEY = "collab-demo-me";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function request<T>(method: string, path: string, token?: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json().catch(() => null)) as
    | (T & { error?: { message?: string } })
    | null;
  if (!res.ok) {
    throw new HttpError(res.status, json?.error?.message ?? `${method} ${path}: ${res.status}`);
  }
  return json as T;
}

export async function demoConfig(): Promise<{ tokens: boolean }> {
  return request("GET", "/demo/config");
}

export async function mintToken(user: string, company: string, name: string): Promise<Me> {
  return request("POST", "/demo/token", undefined, { user, company, name });
}

export async function listDocuments(token: string): Promise<DocumentSummary[]> {
  return (await request<{ documents: DocumentSummary[] }>("GET", "/api/documents", token))
    .documents;
}

export async function onlineUsers(token: string): Promise<OnlineUser[]> {
  return (await request<{ users: OnlineUser[] }>("GET", "/api/presence", token)).users;
}

/** The identity a pasted token claims (for display only: the server verifies it). */
export function meFromToken(token: string): Me {
  const part = token.trim().split(".")[1];
  if (!part) throw new Error("that is not a JWT");
  const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>;
  const userId = String(claims.sub ?? "");
  const companyId = String(claims.companyId ?? "");
  if (!userId || !companyId) throw new Error("the token has no sub or companyId claim");
  return { token: token.trim(), userId, companyId, name: String(claims.name ?? userId) };
}

export function savedMe(): Me | null {
  try {
    const raw = sessionStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Me) : null;
  } catch {
    return null;
  }
}

export function saveMe(me: Me | null): void {
  if (me) sessionStorage.setItem(KEY, JSON.stringify(me));
  else sessionStorage.removeItem(KEY);
}
