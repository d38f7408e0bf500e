// The load generator of the Yjs benchmark (benchmarks/yjs.py): Yjs writers and subscribers of
// one document, in processes of their own so that the server under test is measured from
// outside.
//
//   node yjs.mjs writer '<config JSON>'        one socket replaying precomputed Yjs updates
//   node yjs.mjs subscribers '<config JSON>'   N sockets, each a Yjs replica of the document
//
// config: {target: "gateway"|"hocuspocus", url, documentId, textFields, updatesFile, count,
//          window (writer), clients (subscribers), sendTimesFile, expectedFile, quietMs}
//
// Protocols:
// - gateway: socket.io-client (websocket transport, permessage-deflate offered as browsers
//   do), `document:join`, then `document:sync` (docs/protocol.md): step 1 with an ack carrying
//   step 2, then update messages with acks (`{ok, version}`); replicas receive every applied
//   change as a `document:sync` event.
// - hocuspocus: Hocuspocus 3's websocket protocol (a plain `ws` client, as its provider does):
//   every message is varString(documentName) then y-websocket's message; Auth (token) first,
//   then Sync step 1 (answered by step 2), then updates, each answered by a SyncStatus
//   message (its "ack"); every connection of the document receives each update.
//
// The updates file holds the writer's messages, each a y-protocols sync update message
// (type 0, update 2, payload), as uint32-LE length + bytes. Times are process.hrtime (the
// machine's CLOCK_MONOTONIC, shared by every process), in ms.
//
// Each process prints one JSON line when ready ({"ready": true, ...}), reads commands on
// stdin ("go" for the writer; "finish" for subscribers) and prints one JSON result line.

import crypto from "node:crypto";
import fs from "node:fs";
import readline from "node:readline";
import { io } from "socket.io-client";
import WebSocket from "ws";
import * as Y from "yjs";
import * as syncProtocol from "y-protocols/sync";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";

const [role, configJson] = process.argv.slice(2);
const cfg = JSON.parse(configJson);
const SECRET = process.env.LOADGEN_JWT_SECRET || "unverified";
const now = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const log = (...args) => console.error(`[yjsload ${role}]`, ...args);
const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function mintToken(sub) {
  const iat = Math.floor(Date.now() / 1000);
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = { iat, exp: iat + 6 * 3600, sub, companyId: "bench", name: sub };
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(body)}`;
  const sig = crypto.createHmac("sha256", SECRET).update(head).digest("base64url");
  return `${head}.${sig}`;
}

function toU8(v) {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`expected binary, got ${typeof v}`);
}

/** The updates file: an array of sync update messages. */
function readUpdates(path, count) {
  const buf = fs.readFileSync(path);
  const out = [];
  let at = 0;
  while (at < buf.length && out.length < count) {
    const n = buf.readUInt32LE(at);
    out.push(new Uint8Array(buf.buffer, buf.byteOffset + at + 4, n));
    at += 4 + n;
  }
  return out;
}

/** The payload (a Yjs update) of a sync message of type step 2 or update. */
function syncPayload(message) {
  const d = decoding.createDecoder(message);
  if (decoding.readVarUint(d) !== 0) throw new Error("not a sync message");
  const sub = decoding.readVarUint(d);
  if (sub !== 1 && sub !== 2) throw new Error(`sync message of type ${sub}`);
  return decoding.readVarUint8Array(d);
}

function step1Message(doc) {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, 0);
  syncProtocol.writeSyncStep1(e, doc);
  return encoding.toUint8Array(e);
}

function percentiles(values) {
  if (!values.length) return { count: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((q / 100) * sorted.length) - 1))];
  let sum = 0;
  for (const v of sorted) sum += v;
  const r = (x) => Math.round(x * 1000) / 1000;
  return {
    count: sorted.length,
    mean_ms: r(sum / sorted.length),
    p50_ms: r(at(50)),
    p90_ms: r(at(90)),
    p99_ms: r(at(99)),
    max_ms: r(sorted[sorted.length - 1]),
  };
}

// -- connections ----------------------------------------------------------------------------

/** A Yjs client of the gateway over socket.io. */
class GatewayClient {
  constructor(name) {
    this.name = name;
    this.onUpdate = null; // (messageBytes, t) for every broadcast update
    this.jsonEvents = 0; // document:updated events received (the JSON view of each write)
    this.disconnect = null;
    this.deflate = null;
  }

  async open() {
    this.socket = io(cfg.url, {
      auth: { token: mintToken(this.name), recovery: false },
      transports: ["websocket"],
      reconnection: false,
      perMessageDeflate: { threshold: 1024 },
      timeout: 60000,
    });
    await new Promise((resolve, reject) => {
      this.socket.once("connect", resolve);
      this.socket.once("connect_error", (err) => reject(new Error(`${this.name}: ${err.message}`)));
    });
    const ext = this.socket.io?.engine?.transport?.ws?.extensions;
    this.deflate = typeof ext === "string" ? ext.includes("permessage-deflate") : null;
    this.socket.on("disconnect", (reason) => {
      this.disconnect = { reason, at: now() };
    });
    this.socket.on("document:updated", () => {
      this.jsonEvents += 1;
    });
    this.socket.on("document:sync", (event) => {
      const t = now();
      if (event?.documentId === cfg.documentId && this.onUpdate) this.onUpdate(toU8(event.message), t);
    });
    const join = await this.socket
      .timeout(60000)
      .emitWithAck("document:join", { documentId: cfg.documentId, textFields: cfg.textFields });
    if (!join?.ok) throw new Error(`${this.name} join: ${JSON.stringify(join)}`);
  }

  /** Sends step 1; resolves with the payload of the step 2 answer. */
  async sync(doc) {
    const ack = await this.socket
      .timeout(60000)
      .emitWithAck("document:sync", { documentId: cfg.documentId, message: step1Message(doc) });
    if (!ack?.ok || !ack.message) throw new Error(`${this.name} sync: ${JSON.stringify(ack)}`);
    return syncPayload(toU8(ack.message));
  }

  /** Sends an update message; calls done(error | null) on its ack. */
  send(message, done) {
    this.socket.timeout(120000).emit("document:sync", { documentId: cfg.documentId, message }, (err, ack) => {
      done(err ? err.message : ack?.ok ? null : JSON.stringify(ack?.error ?? ack));
    });
  }

  get connected() {
    return this.socket.connected;
  }

  close() {
    this.socket?.disconnect();
  }
}

/** A Yjs client of a Hocuspocus server: its wire protocol over a plain websocket. */
class HocuspocusClient {
  constructor(name) {
    this.name = name;
    this.onUpdate = null;
    this.jsonEvents = 0;
    this.disconnect = null;
    this.deflate = null;
    const e = encoding.createEncoder();
    encoding.writeVarString(e, cfg.documentId);
    this.prefix = encoding.toUint8Array(e);
    this.acks = []; // callbacks waiting for SyncStatus, in order
    this.step2 = null;
  }

  frame(body) {
    const out = new Uint8Array(this.prefix.length + body.length);
    out.set(this.prefix, 0);
    out.set(body, this.prefix.length);
    return out;
  }

  async open() {
    this.ws = new WebSocket(`${cfg.url.replace(/^http/, "ws")}/`, { perMessageDeflate: true });
    this.ws.binaryType = "nodebuffer";
    await new Promise((resolve, reject) => {
      this.ws.once("open", resolve);
      this.ws.once("error", reject);
    });
    this.deflate = this.ws.extensions.includes("permessage-deflate");
    this.ws.on("close", (code, reason) => {
      this.disconnect = { reason: `close ${code} ${reason}`, at: now() };
      for (const done of this.acks.splice(0)) done("closed");
    });
    const authed = new Promise((resolve, reject) => {
      this.authed = { resolve, reject };
    });
    this.ws.on("message", (data) => this.receive(toU8(data), now()));
    // Auth (type 2), token sub-type 0, then the token, as the provider sends first.
    const e = encoding.createEncoder();
    encoding.writeVarUint(e, 2);
    encoding.writeVarUint(e, 0);
    encoding.writeVarString(e, mintToken(this.name));
    this.ws.send(this.frame(encoding.toUint8Array(e)));
    await authed;
  }

  receive(data, t) {
    const d = decoding.createDecoder(data);
    decoding.readVarString(d);
    const type = decoding.readVarUint(d);
    const body = data.subarray(d.pos);
    if (type === 0 || type === 4) {
      // Sync / SyncReply: y-websocket's sync message after the type byte (0)
      const sub = decoding.peekVarUint(d);
      if (sub === 2) {
        if (this.onUpdate) this.onUpdate(concat0(body), t);
      } else if (sub === 1 && this.step2) {
        this.step2(syncPayload(concat0(body)));
        this.step2 = null;
      }
      // step 1 from the server (it asks what we have): nothing to answer for the benchmark
    } else if (type === 8) {
      const done = this.acks.shift();
      const applied = decoding.readVarUint(d);
      if (done) done(applied === 1 ? null : "not applied");
    } else if (type === 2) {
      const sub = decoding.readVarUint(d);
      if (sub === 2) this.authed.resolve();
      else this.authed.reject(new Error(`${this.name}: auth answer ${sub}`));
    }
  }

  sync(doc) {
    return new Promise((resolve) => {
      this.step2 = resolve;
      this.ws.send(this.frame(step1Message(doc)));
    });
  }

  send(message, done) {
    this.acks.push(done);
    this.ws.send(this.frame(message));
  }

  get connected() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close() {
    this.ws?.close();
  }
}

/** A sync message (starting with type 0) from the body after Hocuspocus's type byte. */
function concat0(body) {
  const out = new Uint8Array(body.length + 1);
  out[0] = 0;
  out.set(body, 1);
  return out;
}

const Client = cfg.target === "hocuspocus" ? HocuspocusClient : GatewayClient;

async function openAll(names, concurrency = 50) {
  const clients = [];
  for (let i = 0; i < names.length; i += concurrency) {
    const batch = names.slice(i, i + concurrency).map(async (name) => {
      const c = new Client(name);
      await c.open();
      const doc = new Y.Doc();
      c.step2Update = await c.sync(doc);
      return c;
    });
    clients.push(...(await Promise.all(batch)));
  }
  return clients;
}

function commands() {
  const rl = readline.createInterface({ input: process.stdin });
  const waiting = [];
  const lines = [];
  rl.on("line", (line) => {
    const w = waiting.shift();
    if (w) w(line.trim());
    else lines.push(line.trim());
  });
  rl.on("close", () => process.exit(0));
  return () => (lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiting.push(r)));
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// -- the writer -------------------------------------------------------------------------------

async function writer() {
  const next = commands();
  const updates = readUpdates(cfg.updatesFile, cfg.count);
  const [client] = await openAll([cfg.user ?? "yjs-writer"]);
  print({ ready: true, updates: updates.length, deflate: client.deflate });
  await next(); // go
  const sendTimes = new Float64Array(updates.length);
  const latencies = new Float64Array(updates.length);
  const errors = {};
  let sent = 0;
  let acked = 0;
  let failed = 0;
  const window = cfg.window ?? 32;
  const cpu0 = cpuSeconds();
  const start = now();
  let lastAck = start;
  await new Promise((resolve) => {
    const pump = () => {
      while (sent < updates.length && sent - acked - failed < window) {
        const i = sent++;
        sendTimes[i] = now();
        client.send(updates[i], (error) => {
          const t = now();
          if (error) {
            failed += 1;
            errors[error] = (errors[error] ?? 0) + 1;
          } else {
            acked += 1;
            latencies[i] = t - sendTimes[i];
          }
          lastAck = t;
          if (acked + failed === updates.length) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const wallMs = lastAck - start;
  fs.writeFileSync(cfg.sendTimesFile, Buffer.from(sendTimes.buffer));
  print({
    sent,
    acked,
    failed,
    errors,
    window,
    start_ms: start,
    end_ms: lastAck,
    wall_s: wallMs / 1000,
    acked_per_s: (acked * 1000) / wallMs,
    ack_latency: percentiles(Array.from(latencies).filter((x, i) => i < sent && x > 0)),
    connected: client.connected,
    disconnect: client.disconnect,
    cpu_s: cpuSeconds() - cpu0,
  });
  // Stay connected until told (a server without persistence, Hocuspocus, unloads a document
  // when its last connection closes: the final check must find it there).
  await next();
  client.close();
  process.exit(0);
}

// -- subscribers ------------------------------------------------------------------------------

async function subscribers() {
  const next = commands();
  const updates = readUpdates(cfg.updatesFile, cfg.count);
  const index = new Map();
  updates.forEach((u, i) => index.set(Buffer.from(u).toString("latin1"), i));
  const names = Array.from({ length: cfg.clients }, (_, i) => `${cfg.prefix ?? "yjs-sub"}-${i}`);
  const clients = await openAll(names);
  let total = 0;
  let lastArrival = 0;
  let firstArrival = Infinity;
  for (const c of clients) {
    c.indices = new Int32Array(updates.length + 16);
    c.arrivals = new Float64Array(updates.length + 16);
    c.n = 0;
    c.unknown = []; // received messages that are not one of the writer's (raw bytes)
    c.onUpdate = (message, t) => {
      total += 1;
      lastArrival = t;
      if (t < firstArrival) firstArrival = t;
      const i = index.get(Buffer.from(message.buffer, message.byteOffset, message.byteLength).toString("latin1"));
      if (i === undefined) {
        c.unknown.push(message.slice());
        return;
      }
      if (c.n >= c.indices.length) {
        c.indices = grow(c.indices);
        c.arrivals = grow(c.arrivals);
      }
      c.indices[c.n] = i;
      c.arrivals[c.n] = t;
      c.n += 1;
    };
  }
  print({ ready: true, clients: clients.length, deflate: clients[0]?.deflate ?? null });
  await next(); // finish: the writer is done; wait for what is still on its way
  const expected = updates.length;
  const quietMs = cfg.quietMs ?? 2000;
  const deadline = now() + (cfg.finishWithinMs ?? 120000);
  let seen = -1;
  let quietSince = now();
  while (now() < deadline) {
    const complete = clients.every((c) => !c.connected || c.n + c.unknown.length >= expected);
    if (complete) break;
    if (total !== seen) {
      seen = total;
      quietSince = now();
    } else if (now() - quietSince > quietMs) break;
    await sleep(50);
  }
  const cpuBeforeVerify = cpuSeconds();
  // Latency of every delivery: arrival minus the writer's send time of that update.
  const raw = fs.readFileSync(cfg.sendTimesFile); // small files come in a shared pool
  const sendTimes = new Float64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  const latencies = [];
  for (const c of clients) {
    for (let k = 0; k < c.n; k++) latencies.push(c.arrivals[k] - sendTimes[c.indices[k]]);
  }
  // Convergence: each replica's document = step 2 + every update it received. Replicas that
  // received byte-identical streams reach identical documents (Yjs is deterministic), so each
  // distinct stream is applied once.
  const expectedTexts = JSON.parse(fs.readFileSync(cfg.expectedFile, "utf8"));
  const verdicts = new Map();
  const per = [];
  for (const c of clients) {
    const h = crypto.createHash("sha1");
    h.update(c.step2Update);
    h.update(Buffer.from(c.indices.buffer, 0, c.n * 4));
    for (const u of c.unknown) h.update(u);
    const key = h.digest("hex");
    if (!verdicts.has(key)) {
      const doc = new Y.Doc();
      Y.applyUpdate(doc, c.step2Update);
      const parts = [];
      for (let k = 0; k < c.n; k++) parts.push(syncPayload(updates[c.indices[k]]));
      for (const u of c.unknown) parts.push(syncPayload(u));
      doc.transact(() => {
        for (const part of parts) Y.applyUpdate(doc, part);
      });
      const root = doc.getMap("data");
      const fields = {};
      for (const [field, text] of Object.entries(expectedTexts)) {
        const value = root.get(field)?.toString() ?? null;
        fields[field] = { ok: value === text, length: value?.length ?? null };
      }
      verdicts.set(key, { ok: Object.values(fields).every((f) => f.ok), fields });
    }
    const distinct = new Set(c.indices.subarray(0, c.n)).size;
    per.push({
      received: c.n + c.unknown.length,
      unknown: c.unknown.length,
      duplicates: c.n - distinct,
      missing: expected - distinct,
      converged: verdicts.get(key).ok,
      fields: verdicts.get(key).fields,
      connected: c.connected,
      disconnect: c.disconnect,
      json_events: c.jsonEvents,
    });
  }
  print({
    clients: clients.length,
    expected_per_client: expected,
    deliveries: total,
    first_arrival_ms: Number.isFinite(firstArrival) ? firstArrival : null,
    last_arrival_ms: lastArrival || null,
    latency: percentiles(latencies),
    distinct_streams: verdicts.size,
    converged: per.filter((p) => p.converged).length,
    connected: per.filter((p) => p.connected).length,
    per_client: per,
    verify_cpu_s: cpuSeconds() - cpuBeforeVerify,
  });
  for (const c of clients) c.close();
  process.exit(0);
}

function grow(array) {
  const out = new array.constructor(array.length * 2);
  out.set(array);
  return out;
}

const roles = { writer, subscribers };
if (!roles[role]) {
  log(`unknown role ${role}`);
  process.exit(2);
}
roles[role]().catch((err) => {
  log(err.stack ?? String(err));
  print({ error: String(err.message ?? err) });
  process.exit(1);
});
