// The load generator of the fan-out and edit benchmarks (benchmarks/fanout.py, edit.py,
// compare.py): many socket.io-client websockets against one server, a publisher, and the
// measurements, in processes of their own so that the server under test is measured from
// outside.
//
//   node clients.mjs --url http://127.0.0.1:3001 [--procs 1] [--server-pid PID] [--no-deflate]
//                    [--script '[{"cmd":"connect","clients":100}, ...]']
//
// The process reads one JSON command per line on stdin (or runs --script) and answers each
// with one JSON line on stdout; progress and errors go to stderr. Commands:
//
//   {"cmd":"connect", "clients":C, "users":"one"|"distinct", "concurrency":100, "quietMs":500}
//       open C websockets (socket.io-client, transports ["websocket"], one engine.io
//       connection each) as one user or as C users of one company, at most `concurrency`
//       handshakes in flight; answers connects/s and, for the storm of `user:online` events
//       (every user's first socket announces itself to the company room), how many arrived
//       and when the last one did (waiting until none came for quietMs).
//   {"cmd":"join", "documentId":D}                  every socket joins document D (document:join)
//   {"cmd":"publish", "room":"company"|"document", "mode":"rate"|"saturate", "rate":10,
//    "window":W, "warmup":1, "seconds":5, "bytes":200, "documentId":D}
//       publish events carrying a sequence number and a send time, and count their deliveries:
//       - room company: `POST /api/events` {event: "project:updated", companyId, data} with a
//         service token: the server emits `project:updated` to the company room;
//       - room document: a publisher socket (joined, not counted) writes `document:update`
//         with acks; the server broadcasts `document:updated` to the room.
//       mode rate: `rate` publishes per second, open loop. mode saturate: closed loop, at most
//       `window` events published and not yet delivered to every socket, so the server always
//       has work queued but its queues stay bounded. Deliveries and latencies are counted over
//       [start + warmup, start + warmup + seconds) by arrival time.
//   {"cmd":"edit", "documentId":D, "mode":"current"|"stale"|"concurrent", "warmup":1,
//    "seconds":5}
//       every connected socket is an editor of D (strategy merge, text field `notes`, one line
//       per editor): each types one character into its line per acknowledged write. current:
//       the editors take turns, each writing as soon as it learns of the version it is to
//       follow, so every write is based on the current version (the fast path); stale: each
//       editor writes again as soon as its ack arrives, based on the version before the newest
//       it knows (a merge every time); concurrent: likewise, based on the newest it knows (what
//       uncoordinated typists do: writes crossing in flight are merged).
//   {"cmd":"disconnect"}   close every socket
//   {"cmd":"quit"}
//
// Latency is arrival time minus send time, both `performance.timeOrigin + performance.now()`
// (wall-clock based, sub-millisecond), the worker's clock offset from the publisher's (measured
// at start over IPC, shortest round trip of 9) taken out. The sockets live in --procs worker
// processes (child_process fork), the publisher in this one. Each worker reports its CPU time
// and event-loop utilization over the measured window, so a saturated generator shows up in
// the results; the server's CPU is read from /proc/<--server-pid>/stat at the window's ends.
// Tokens are HS256 JWTs signed with LOADGEN_JWT_SECRET (or COLLAB_JWT_SECRET); servers that
// do not verify them (the baselines) only read their claims.

import { fork } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const log = (...args) => console.error("[loadgen]", ...args);

const { values: opts } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3001" },
    procs: { type: "string", default: "1" },
    "server-pid": { type: "string", default: "" },
    "clk-tck": { type: "string", default: "100" },
    company: { type: "string", default: "bench" },
    "no-deflate": { type: "boolean", default: false },
    script: { type: "string", default: "" },
    worker: { type: "boolean", default: false },
  },
});
const SECRET = process.env.LOADGEN_JWT_SECRET || process.env.COLLAB_JWT_SECRET || "unverified";
const COMPANY = opts.company;

// -- tokens ------------------------------------------------------------------------------

function mintToken(claims) {
  const iat = Math.floor(Date.now() / 1000);
  const enc = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = { iat, exp: iat + 6 * 3600, ...claims };
  const head = `${enc({ alg: "HS256", typ: "JWT" })}.${enc(body)}`;
  const sig = crypto.createHmac("sha256", SECRET).update(head).digest("base64url");
  return `${head}.${sig}`;
}

const userToken = (user) => mintToken({ sub: user, companyId: COMPANY, name: user });

// -- a latency histogram: 1 µs buckets below 1 ms, then 1 % wide -----------------------------

const LINEAR = 1000;
const GROWTH = Math.log(1.01);
const BUCKETS = LINEAR + Math.ceil(Math.log(600_000) / GROWTH) + 1; // up to 10 minutes

class Histogram {
  constructor() {
    this.counts = new Float64Array(BUCKETS);
    this.n = 0;
    this.sum = 0;
    this.max = -Infinity;
    this.min = Infinity;
    this.negative = 0;
  }

  record(ms) {
    if (ms < 0) {
      this.negative += 1;
      ms = 0;
    }
    const us = ms * 1000;
    const i =
      us < LINEAR
        ? Math.floor(us)
        : Math.min(BUCKETS - 1, LINEAR + Math.floor(Math.log(us / LINEAR) / GROWTH));
    this.counts[i] += 1;
    this.n += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  toJSON() {
    const sparse = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]) sparse.push([i, this.counts[i]]);
    const { n, sum, max, min, negative } = this;
    return { sparse, n, sum, max, min, negative };
  }

  merge(json) {
    for (const [i, c] of json.sparse) this.counts[i] += c;
    this.n += json.n;
    this.sum += json.sum;
    this.negative += json.negative;
    if (json.n) {
      this.max = Math.max(this.max, json.max);
      this.min = Math.min(this.min, json.min);
    }
  }

  percentile(q) {
    if (!this.n) return null;
    const rank = Math.max(1, Math.ceil((q / 100) * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) {
        const us = i < LINEAR ? i + 0.5 : LINEAR * Math.exp((i - LINEAR + 0.5) * GROWTH);
        return Math.min(us / 1000, this.max);
      }
    }
    return this.max;
  }

  summary() {
    const r = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
    return {
      count: this.n,
      mean_ms: this.n ? r(this.sum / this.n) : null,
      min_ms: this.n ? r(this.min) : null,
      p50_ms: r(this.percentile(50)),
      p90_ms: r(this.percentile(90)),
      p99_ms: r(this.percentile(99)),
      p999_ms: r(this.percentile(99.9)),
      max_ms: this.n ? r(this.max) : null,
      negative: this.negative,
    };
  }
}

// -- CPU from /proc -------------------------------------------------------------------------

function procCpuSeconds(pid) {
  // utime + stime of a process (all its threads), in seconds; null if unreadable.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / Number(opts["clk-tck"]);
  } catch {
    return null;
  }
}

function machineCpu() {
  // [busy, total] jiffies of every core together.
  try {
    const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return [total - v[3] - v[4], total];
  } catch {
    return null;
  }
}

const ownCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

// A snapshot of every CPU counter, taken at both ends of a measured window.
function cpuSnapshot(serverPid) {
  return {
    at: now(),
    server: serverPid ? procCpuSeconds(serverPid) : null,
    machine: machineCpu(),
    self: ownCpu(),
    elu: performance.eventLoopUtilization(),
  };
}

function cpuDelta(a, b) {
  const seconds = (b.at - a.at) / 1000;
  const pct = (x) => (x === null ? null : Math.round((1000 * x) / seconds) / 10);
  let machine = null;
  if (a.machine && b.machine) {
    const busy = b.machine[0] - a.machine[0];
    const total = b.machine[1] - a.machine[1];
    // busy share of all cores, as % of one core (2 cores fully busy = 200)
    machine = total ? Math.round((1000 * busy * coreCount()) / total) / 10 : null;
  }
  return {
    seconds,
    server_pct: a.server === null || b.server === null ? null : pct(b.server - a.server),
    machine_pct: machine,
    self_pct: pct(b.self - a.self),
    self_elu: Math.round(performance.eventLoopUtilization(b.elu, a.elu).utilization * 1000) / 1000,
  };
}

let cores = 0;
function coreCount() {
  if (!cores) {
    try {
      const lines = fs.readFileSync("/proc/stat", "utf8").split("\n");
      cores = lines.filter((l) => /^cpu\d/.test(l)).length;
    } catch {
      cores = 1;
    }
  }
  return cores || 1;
}

// -- payloads -----------------------------------------------------------------------------

function padTo(bytes, build) {
  // A `pad` string making JSON.stringify(build(pad)) about `bytes` long.
  const base = JSON.stringify(build("")).length;
  return "x".repeat(Math.max(0, bytes - base));
}

const stamp = () => Math.round(now() * 1000) / 1000;

// ========================================================================================
// Workers: hold the sockets, count deliveries.
// ========================================================================================

function runWorker() {
  const url = opts.url;
  const deflate = !opts["no-deflate"];
  /** @type {{sock: any, user: string, index: number, live: boolean}[]} */
  let clients = [];
  let live = 0;
  const presence = { online: 0, offline: 0, last: 0, drops: 0 };
  let measure = null; // {event, from, to, hist, count, pending: Map, cpu0, cpu1, doneBuf}
  let clockOffset = 0; // this process's clock minus the publisher's, ms
  let editor = null;

  const send = (msg) => process.send(msg);

  function flushDone() {
    if (!measure || !measure.doneBuf.length) return;
    send({ type: "done", seqs: measure.doneBuf });
    measure.doneBuf = [];
  }

  function onDelivery(event, payload) {
    const t = now();
    const m = measure;
    if (!m || m.event !== event) return;
    const data = event === "document:updated" ? payload?.data : payload;
    const seq = data?.seq;
    if (typeof seq !== "number") return;
    if (t >= m.from && t < m.to) {
      m.count += 1;
      m.hist.record(t - clockOffset - data.t);
    }
    const c = (m.pending.get(seq) ?? 0) + 1;
    if (c >= live) {
      m.pending.delete(seq);
      if (m.doneBuf.push(seq) === 1) setImmediate(flushDone);
    } else {
      m.pending.set(seq, c);
    }
  }

  function onDrop() {
    // A socket went away: messages waiting only for it are complete.
    live -= 1;
    presence.drops += 1;
    if (!measure) return;
    for (const [seq, c] of measure.pending) {
      if (c >= live) {
        measure.pending.delete(seq);
        measure.doneBuf.push(seq);
      }
    }
    setImmediate(flushDone);
  }

  function connect({ from, to, users, concurrency, startAt }) {
    return new Promise((resolve) => {
      const hist = new Histogram();
      const errors = {};
      let next = from;
      let inflight = 0;
      let connected = 0;
      let failed = 0;
      let lastAt = 0;
      let negotiated = null;
      const oneToken = users === "one" ? userToken("user-0") : null;
      const finish = () => {
        if (next >= to && inflight === 0) {
          resolve({ connected, failed, errors, lastAt, hist: hist.toJSON(), deflate: negotiated });
        }
      };
      const launch = () => {
        while (inflight < concurrency && next < to) {
          const index = next++;
          const user = users === "one" ? "user-0" : `user-${index}`;
          const sock = io(url, {
            transports: ["websocket"],
            forceNew: true,
            reconnection: false,
            timeout: 60_000,
            auth: { token: oneToken ?? userToken(user) },
            perMessageDeflate: deflate ? { threshold: 1024 } : false,
          });
          const client = { sock, user, index, live: false };
          inflight += 1;
          const t0 = now();
          sock.on("project:updated", (p) => onDelivery("project:updated", p));
          sock.on("document:updated", (p) => {
            if (editor) editor.remote(client, p);
            else onDelivery("document:updated", p);
          });
          sock.on("user:online", () => {
            presence.online += 1;
            presence.last = now();
          });
          sock.on("user:offline", () => {
            presence.offline += 1;
          });
          sock.once("connect", () => {
            const t = now();
            hist.record(t - t0);
            lastAt = Math.max(lastAt, t);
            connected += 1;
            live += 1;
            client.live = true;
            if (negotiated === null) {
              const ext = sock.io?.engine?.transport?.ws?.extensions;
              negotiated = typeof ext === "string" ? ext.includes("permessage-deflate") : null;
            }
            clients.push(client);
            inflight -= 1;
            launch();
            finish();
          });
          sock.on("disconnect", () => {
            if (client.live) {
              client.live = false;
              onDrop();
            }
          });
          sock.once("connect_error", (err) => {
            failed += 1;
            errors[err.message] = (errors[err.message] ?? 0) + 1;
            sock.close();
            inflight -= 1;
            launch();
            finish();
          });
        }
      };
      sleep(startAt - now()).then(() => {
        launch();
        finish();
      });
    });
  }

  async function join(documentId, extra = {}) {
    const t0 = now();
    let ok = 0;
    let failed = 0;
    const errors = {};
    await Promise.all(
      clients
        .filter((c) => c.live)
        .map((c) =>
          c.sock
            .timeout(60_000)
            .emitWithAck("document:join", { documentId, ...extra })
            .then((ack) => {
              if (ack && ack.ok === false) {
                failed += 1;
                errors[ack.error?.code ?? "error"] = (errors[ack.error?.code ?? "error"] ?? 0) + 1;
              } else ok += 1;
              return ack;
            })
            .catch((err) => {
              failed += 1;
              errors[err.message] = (errors[err.message] ?? 0) + 1;
            }),
        ),
    );
    return { joined: ok, failed, errors, seconds: (now() - t0) / 1000 };
  }

  function startMeasure({ event, from, to }) {
    measure = {
      event,
      from,
      to,
      hist: new Histogram(),
      count: 0,
      pending: new Map(),
      doneBuf: [],
      cpu0: null,
      cpu1: null,
    };
    const m = measure;
    sleep(from - now()).then(() => (m.cpu0 = cpuSnapshot(null)));
    sleep(to - now()).then(() => (m.cpu1 = cpuSnapshot(null)));
  }

  async function collect() {
    const m = measure;
    while (m && !m.cpu1) await sleep(5);
    measure = null;
    if (!m) return { count: 0 };
    return {
      count: m.count,
      hist: m.hist.toJSON(),
      cpu: m.cpu0 && m.cpu1 ? cpuDelta(m.cpu0, m.cpu1) : null,
      incomplete: m.pending.size,
      drops: presence.drops,
    };
  }

  process.on("message", async (msg) => {
    try {
      let reply;
      switch (msg.cmd) {
        case "connect":
          reply = await connect(msg);
          break;
        case "presence":
          reply = { ...presence };
          break;
        case "clock":
          reply = { now: now() };
          break;
        case "offset":
          clockOffset = msg.offset;
          reply = { ok: true };
          break;
        case "join":
          reply = await join(msg.documentId, msg.extra);
          break;
        case "measure":
          startMeasure(msg);
          reply = { ok: true };
          break;
        case "collect":
          reply = await collect();
          break;
        case "edit":
          reply = await runEditors(msg);
          break;
        case "disconnect":
          for (const c of clients) c.sock.close();
          reply = { closed: clients.length };
          clients = [];
          live = 0;
          presence.online = presence.offline = presence.last = presence.drops = 0;
          break;
        default:
          reply = { error: `unknown command ${msg.cmd}` };
      }
      send({ type: "reply", id: msg.id, reply });
    } catch (err) {
      send({ type: "reply", id: msg.id, reply: { error: String(err?.stack ?? err) } });
    }
  });
  process.on("disconnect", () => process.exit(0)); // the coordinator is gone

  // -- editors ------------------------------------------------------------------------------

  async function runEditors({ documentId, mode, from, to, field, editors: total, first }) {
    const hist = new Histogram();
    const statuses = {};
    const errors = {};
    let acked = 0;
    let deliveries = 0;
    let running = true;
    const editors = clients.filter((c) => c.live);
    const states = new Map(); // client -> {versions: Map(version -> text), latest, k, ...}
    editor = {
      remote(client, p) {
        const t = now();
        if (t >= from && t < to) deliveries += 1;
        const s = states.get(client);
        if (s && p?.documentId === documentId) learn(client, s, p.version, p.data?.[field]);
      },
    };
    function learn(c, s, version, text) {
      if (typeof version !== "number" || typeof text !== "string") return;
      s.versions.set(version, text);
      if (version > s.latest) {
        s.latest = version;
        if (mode === "current") takeTurn(c, s);
      }
      if (s.versions.size > 8) {
        for (const v of s.versions.keys()) {
          if (v < s.latest - 4) s.versions.delete(v);
          if (s.versions.size <= 8) break;
        }
      }
    }

    // One keystroke as one acknowledged write based on `base`; true when acknowledged.
    async function write(c, s, base) {
      const next = typeInto(s.versions.get(base), lineOf(c.index), s.k++);
      const t0 = now();
      let ack;
      try {
        ack = await c.sock
          .timeout(30_000)
          .emitWithAck("document:update", { documentId, version: base, data: { [field]: next } });
      } catch (err) {
        errors[err.message] = (errors[err.message] ?? 0) + 1;
        return false;
      }
      const t = now();
      if (ack?.ok === false) {
        const code = ack.error?.code ?? "error";
        errors[code] = (errors[code] ?? 0) + 1;
        if (code === "rate_limited") await sleep(ack.error.retryAfterMs ?? 10);
        return false;
      }
      if (t >= from && t < to) {
        hist.record(t - t0);
        acked += 1;
        statuses[ack.status] = (statuses[ack.status] ?? 0) + 1;
      }
      if (t >= to) running = false;
      learn(c, s, ack.version, ack.data?.[field]);
      return true;
    }

    // current: editors take turns. Editor i writes on every version v with
    // (v - first) % editors == i (first: the version the document was seeded at), as soon as
    // it learns of v (its own ack, or the broadcast of the previous editor's write): every
    // write is based on the current version.
    function takeTurn(c, s) {
      if (!running || s.busy) return;
      if ((s.latest - first) % total !== c.index || s.wrote === s.latest) return;
      s.wrote = s.latest;
      s.busy = true;
      write(c, s, s.latest).then((ok) => {
        s.busy = false;
        if (!ok) s.wrote = -1; // refused: try again on the same version
        takeTurn(c, s);
      });
    }

    // stale and concurrent: every editor writes again as soon as its ack arrives.
    async function loop(c) {
      const s = states.get(c);
      while (running) {
        let base = s.latest;
        if (mode === "stale") {
          // the newest version before the latest that this editor has the text of
          let best = -1;
          for (const v of s.versions.keys()) if (v < s.latest && v > best) best = v;
          if (best >= 0) base = best;
        }
        await write(c, s, base);
      }
    }

    // Join (the ack has the current state), then type until `to`.
    await Promise.all(
      editors.map(async (c) => {
        const ack = await c.sock.timeout(60_000).emitWithAck("document:join", { documentId });
        const s = { versions: new Map(), latest: -1, k: 0, busy: false, wrote: -1 };
        states.set(c, s);
        learn(c, s, ack.version, ack.data?.[field]);
      }),
    );
    const cpu = { a: null, b: null };
    sleep(from - now()).then(() => (cpu.a = cpuSnapshot(null)));
    sleep(to - now()).then(() => (cpu.b = cpuSnapshot(null)));
    let typing = [];
    if (mode !== "current") typing = editors.map(loop);
    await sleep(to - now());
    running = false;
    await Promise.all(typing);
    while ([...states.values()].some((s) => s.busy)) await sleep(5);
    editor = null;
    while (!cpu.b) await sleep(5);
    const usage = cpuDelta(cpu.a, cpu.b);
    return { acked, statuses, errors, deliveries, hist: hist.toJSON(), cpu: usage };
  }
}

// One keystroke into this editor's own line: the character at position k % width changes.
const LINE_WIDTH = 24;
const ALPHABET = "abcdefghijklmnopqrstuvwxyz";

function typeInto(text, prefix, k) {
  const lines = typeof text === "string" ? text.split("\n") : [];
  let i = lines.findIndex((l) => l.startsWith(prefix));
  if (i < 0) {
    lines.push(prefix + ".".repeat(LINE_WIDTH));
    i = lines.length - 1;
  }
  const body = lines[i].slice(prefix.length).padEnd(LINE_WIDTH, ".");
  const pos = k % LINE_WIDTH;
  const ch = ALPHABET[Math.floor(k / LINE_WIDTH) % ALPHABET.length];
  lines[i] = prefix + body.slice(0, pos) + ch + body.slice(pos + 1);
  return lines.join("\n");
}

// ========================================================================================
// The coordinator: commands in, results out; the publisher.
// ========================================================================================

async function runCoordinator() {
  const procs = Math.max(1, Number(opts.procs));
  const serverPid = opts["server-pid"] ? Number(opts["server-pid"]) : null;
  const target = new URL(opts.url);
  const self = fileURLToPath(import.meta.url);
  const forwarded = ["--url", opts.url, "--company", COMPANY, "--clk-tck", opts["clk-tck"]];
  if (opts["no-deflate"]) forwarded.push("--no-deflate");
  const workers = [];
  let shuttingDown = false;
  let nextId = 1;
  const waiting = new Map();
  let onDone = () => {};

  for (let w = 0; w < procs; w++) {
    const child = fork(self, ["--worker", ...forwarded], {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    child.on("message", (msg) => {
      if (msg.type === "done") onDone(w, msg.seqs);
      else if (msg.type === "reply") {
        const resolve = waiting.get(msg.id);
        waiting.delete(msg.id);
        resolve?.(msg.reply);
      }
    });
    child.on("exit", (code) => {
      if (!shuttingDown) {
        log(`worker ${w} exited (${code})`);
        process.exit(1);
      }
    });
    workers.push({ child, clients: 0 });
  }

  function ask(w, msg) {
    const id = nextId++;
    return new Promise((resolve) => {
      waiting.set(id, resolve);
      workers[w].child.send({ ...msg, id });
    });
  }
  const askAll = (msg) => Promise.all(workers.map((_, w) => ask(w, msg)));

  // Each worker's clock against this one's (the publisher's), from the exchange with the
  // shortest round trip; the workers subtract it from their latencies.
  async function syncClocks() {
    const offsets = [];
    for (let w = 0; w < workers.length; w++) {
      let best = null;
      for (let i = 0; i < 9; i++) {
        const t0 = now();
        const { now: there } = await ask(w, { cmd: "clock" });
        const t1 = now();
        if (!best || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: there - (t0 + t1) / 2 };
      }
      await ask(w, { cmd: "offset", offset: best.offset });
      const round = (ms) => Math.round(ms * 1000) / 1000;
      offsets.push({ offset_ms: round(best.offset), rtt_ms: round(best.rtt) });
    }
    return offsets;
  }
  const active = () => workers.map((wk, w) => (wk.clients > 0 ? w : -1)).filter((w) => w >= 0);

  // -- connect --------------------------------------------------------------------------

  async function connect(cmd) {
    const total = Number(cmd.clients);
    const concurrency = Math.max(1, Number(cmd.concurrency ?? 100));
    const users = cmd.users === "distinct" ? "distinct" : "one";
    const quietMs = Number(cmd.quietMs ?? 500);
    const startAt = now() + 50;
    const per = Math.ceil(total / procs);
    const replies = await Promise.all(
      workers.map((wk, w) => {
        const from = Math.min(total, w * per);
        const to = Math.min(total, from + per);
        return ask(w, {
          cmd: "connect",
          from,
          to,
          users,
          startAt,
          concurrency: Math.max(1, Math.round(concurrency / procs)),
        });
      }),
    );
    const hist = new Histogram();
    const errors = {};
    let connected = 0;
    let failed = 0;
    let lastAt = startAt;
    replies.forEach((r, w) => {
      workers[w].clients = r.connected;
      connected += r.connected;
      failed += r.failed;
      lastAt = Math.max(lastAt, r.lastAt);
      hist.merge(r.hist);
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    });
    const seconds = (lastAt - startAt) / 1000;
    // The user:online storm: wait until none arrived for quietMs (at most 120 s).
    let presence;
    const deadline = now() + 120_000;
    for (;;) {
      const ps = await askAll({ cmd: "presence" });
      presence = {
        online: ps.reduce((a, p) => a + p.online, 0),
        last: Math.max(0, ...ps.map((p) => p.last)),
        drops: ps.reduce((a, p) => a + p.drops, 0),
      };
      if (now() - Math.max(presence.last, lastAt) >= quietMs || now() > deadline) break;
      await sleep(Math.min(200, quietMs / 2));
    }
    return {
      clients: total,
      users,
      connected,
      failed,
      errors,
      seconds,
      connects_per_s: seconds > 0 ? connected / seconds : null,
      connect_latency: hist.summary(),
      deflate: replies.find((r) => r.deflate !== null)?.deflate ?? null,
      presence_online_received: presence.online,
      presence_settled_s: presence.online ? (presence.last - startAt) / 1000 : null,
      dropped: presence.drops,
    };
  }

  // -- publish --------------------------------------------------------------------------

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const serviceToken = mintToken({ sub: "bench-service", companyId: COMPANY, role: "service" });

  function post(body) {
    return new Promise((resolve) => {
      const text = JSON.stringify(body);
      const req = http.request(
        {
          agent,
          host: target.hostname,
          port: target.port,
          method: "POST",
          path: "/api/events",
          headers: {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(text),
            authorization: `Bearer ${serviceToken}`,
          },
        },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }),
          );
        },
      );
      req.on("error", (err) => resolve({ status: 0, body: String(err) }));
      req.end(text);
    });
  }

  async function openPublisherSocket(documentId) {
    const sock = io(opts.url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      auth: { token: userToken("bench-publisher") },
      perMessageDeflate: opts["no-deflate"] ? false : { threshold: 1024 },
    });
    await new Promise((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("connect_error", reject);
    });
    const ack = await sock
      .timeout(30_000)
      .emitWithAck("document:join", { documentId, strategy: "last-write-wins" });
    return { sock, version: Number(ack?.version ?? 0) };
  }

  async function publish(cmd) {
    const room = cmd.room === "document" ? "document" : "company";
    const saturate = cmd.mode === "saturate";
    const event = room === "company" ? "project:updated" : "document:updated";
    const bytes = Number(cmd.bytes ?? 200);
    const warmup = Number(cmd.warmup ?? 1) * 1000;
    const seconds = Number(cmd.seconds ?? 5) * 1000;
    const window = Math.max(1, Number(cmd.window ?? 8));
    const rate = Number(cmd.rate ?? 10);
    const documentId = String(cmd.documentId ?? "bench-doc");
    const peers = active();
    if (!peers.length) return { error: "no connected sockets" };

    let publisher = null;
    if (room === "document") publisher = await openPublisherSocket(documentId);

    const start = now() + 100;
    const from = start + warmup;
    const to = from + seconds;
    await Promise.all(peers.map((w) => ask(w, { cmd: "measure", event, from, to })));

    // What one event carries, sized so that the delivered payload is about `bytes`.
    const updatedAt = new Date().toISOString();
    const companyData = (pad) => ({
      id: "bench-project",
      name: "Benchmark project",
      companyId: COMPANY,
      status: "in_progress",
      updatedAt,
      seq: 1_000_000,
      t: stamp(),
      pad,
    });
    const docData = (pad) => ({ seq: 1_000_000, t: stamp(), pad });
    const docEnvelope = (pad) => ({
      documentId,
      version: 100_000,
      data: docData(pad),
      updatedBy: "bench-publisher",
      updatedAt: 1_732_000_000_000,
    });
    const pad = room === "company" ? padTo(bytes, companyData) : padTo(bytes, docEnvelope);
    const sample = room === "company" ? companyData(pad) : docEnvelope(pad);
    const payloadBytes = JSON.stringify(sample).length;

    const outstanding = new Map(); // seq -> [workers left, sent at]
    let seq = 0;
    let published = 0;
    let publishedInWindow = 0;
    let completed = 0;
    let stalled = 0;
    const errors = {};
    let running = true;
    const ackHist = new Histogram(); // publish -> HTTP answer / write ack
    let unanswered = 0; // publishes whose HTTP answer or write ack has not come yet

    const fail = (key) => (errors[key] = (errors[key] ?? 0) + 1);
    const complete = (s) => {
      outstanding.delete(s);
      completed += 1;
    };
    onDone = (w, seqs) => {
      for (const s of seqs) {
        const entry = outstanding.get(s);
        if (!entry) continue;
        entry[0] -= 1;
        if (entry[0] <= 0) complete(s);
      }
      if (saturate) pump();
    };

    function publishOne() {
      const s = seq++;
      const t0 = now();
      if (t0 >= from && t0 < to) publishedInWindow += 1;
      published += 1;
      outstanding.set(s, [peers.length, t0]);
      unanswered += 1;
      const answered = () => (unanswered -= 1);
      if (room === "company") {
        const data = { ...companyData(pad), seq: s, t: stamp() };
        post({ event, companyId: COMPANY, data })
          .then((res) => {
            ackHist.record(now() - t0);
            if (res.status !== 200) {
              fail(`HTTP ${res.status}: ${res.body.slice(0, 120)}`);
              outstanding.delete(s);
              if (saturate) pump();
            }
          })
          .finally(answered);
      } else {
        const data = { seq: s, t: stamp(), pad };
        const version = publisher.version++;
        publisher.sock
          .timeout(30_000)
          .emitWithAck("document:update", { documentId, version, data })
          .then((ack) => {
            ackHist.record(now() - t0);
            if (ack?.status !== "applied") {
              fail(`write ${ack?.status ?? ack?.error?.code ?? "refused"}`);
              if (typeof ack?.version === "number") publisher.version = ack.version;
              if (ack?.ok === false) outstanding.delete(s);
            }
          })
          .catch((err) => fail(`write ${err.message}`))
          .finally(answered);
      }
    }

    function pump() {
      while (running && outstanding.size < window) publishOne();
    }

    // A message lost (a socket dropped without its worker noticing yet) must not stall the
    // window: after 10 s it is given up on and counted.
    const reaper = setInterval(() => {
      const t = now();
      for (const [s, [, at]] of outstanding) {
        if (t - at > 10_000) {
          outstanding.delete(s);
          stalled += 1;
        }
      }
      if (saturate) pump();
    }, 500);

    const cpu = { a: null, b: null };
    const ended = sleep(to - now()).then(() => {
      cpu.b = cpuSnapshot(serverPid);
      running = false;
    });
    sleep(from - now()).then(() => (cpu.a = cpuSnapshot(serverPid)));
    await sleep(start - now());
    if (saturate) {
      pump();
    } else {
      // open loop, drift-free schedule
      const interval = 1000 / rate;
      for (let k = 0; running; k++) {
        publishOne();
        await sleep(start + (k + 1) * interval - now());
      }
    }
    await ended;
    // Let what is in flight arrive (it is not counted), then collect.
    const drainUntil = now() + 15_000;
    while ((outstanding.size || unanswered) && now() < drainUntil) await sleep(20);
    clearInterval(reaper);
    const leftover = outstanding.size;
    onDone = () => {};
    const replies = await Promise.all(peers.map((w) => ask(w, { cmd: "collect" })));
    if (publisher) publisher.sock.close();

    const hist = new Histogram();
    let deliveries = 0;
    let drops = 0;
    const loadgen = [];
    for (const r of replies) {
      deliveries += r.count;
      drops += r.drops ?? 0;
      if (r.hist) hist.merge(r.hist);
      loadgen.push(r.cpu);
    }
    const span = (cpu.b.at - cpu.a.at) / 1000;
    return {
      room,
      mode: saturate ? "saturate" : "rate",
      event,
      payload_bytes: payloadBytes,
      clients: peers.reduce((a, w) => a + workers[w].clients, 0),
      window: saturate ? window : null,
      rate: saturate ? null : rate,
      seconds: span,
      published,
      published_in_window: publishedInWindow,
      publishes_per_s: publishedInWindow / span,
      completed,
      deliveries,
      deliveries_per_s: deliveries / span,
      latency: hist.summary(),
      publish_ack: ackHist.summary(),
      errors,
      stalled,
      not_drained: leftover,
      dropped: drops,
      cpu: { ...cpuDelta(cpu.a, cpu.b), loadgen_workers: loadgen },
    };
  }

  // -- edit -----------------------------------------------------------------------------

  async function edit(cmd) {
    const documentId = String(cmd.documentId ?? `bench-edit-${Date.now()}`);
    const mode = ["current", "stale", "concurrent"].includes(cmd.mode) ? cmd.mode : "current";
    const field = "notes";
    const peers = active();
    const editors = peers.reduce((a, w) => a + workers[w].clients, 0);
    // Seed the document: strategy merge, `notes` a text field, one line per editor.
    const seeder = io(opts.url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      auth: { token: userToken("bench-seeder") },
    });
    await new Promise((resolve, reject) => {
      seeder.once("connect", resolve);
      seeder.once("connect_error", reject);
    });
    const joined = await seeder
      .timeout(30_000)
      .emitWithAck("document:join", { documentId, strategy: "merge", textFields: [field] });
    let text = "";
    for (let i = 0; i < editors; i++) text = typeInto(text, lineOf(i), 0);
    const seeded = await seeder
      .timeout(30_000)
      .emitWithAck("document:update", {
        documentId,
        version: Number(joined?.version ?? 0),
        data: { [field]: text },
      });
    seeder.close();
    if (seeded?.ok === false) return { error: `seeding failed: ${JSON.stringify(seeded.error)}` };

    const warmup = Number(cmd.warmup ?? 1) * 1000;
    const seconds = Number(cmd.seconds ?? 5) * 1000;
    const from = now() + 500 + warmup;
    const to = from + seconds;
    const cpu = { a: null, b: null };
    sleep(from - now()).then(() => (cpu.a = cpuSnapshot(serverPid)));
    sleep(to - now()).then(() => (cpu.b = cpuSnapshot(serverPid)));
    const replies = await Promise.all(
      peers.map((w) =>
        ask(w, {
          cmd: "edit",
          documentId,
          mode,
          from,
          to,
          field,
          editors,
          first: Number(seeded?.version),
        }),
      ),
    );
    while (!cpu.b) await sleep(5);
    const hist = new Histogram();
    const statuses = {};
    const errors = {};
    let acked = 0;
    let deliveries = 0;
    for (const r of replies) {
      if (r.error) return { error: r.error };
      acked += r.acked;
      deliveries += r.deliveries;
      hist.merge(r.hist);
      for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    }
    const span = (cpu.b.at - cpu.a.at) / 1000;
    return {
      documentId,
      mode,
      editors,
      seconds: span,
      acked,
      writes_per_s: acked / span,
      statuses,
      errors,
      deliveries,
      deliveries_per_s: deliveries / span,
      ack_latency: hist.summary(),
      document_bytes: Buffer.byteLength(JSON.stringify({ [field]: text })),
      cpu: { ...cpuDelta(cpu.a, cpu.b), loadgen_workers: replies.map((r) => r.cpu) },
    };
  }

  // -- the command loop -----------------------------------------------------------------

  async function run(cmd) {
    switch (cmd.cmd) {
      case "connect":
        return connect(cmd);
      case "join": {
        const join = { cmd: "join", documentId: cmd.documentId };
        const replies = await Promise.all(active().map((w) => ask(w, join)));
        return {
          joined: replies.reduce((a, r) => a + r.joined, 0),
          failed: replies.reduce((a, r) => a + r.failed, 0),
          errors: Object.assign({}, ...replies.map((r) => r.errors)),
          seconds: Math.max(...replies.map((r) => r.seconds)),
        };
      }
      case "publish":
        return publish(cmd);
      case "edit":
        return edit(cmd);
      case "disconnect": {
        const replies = await askAll({ cmd: "disconnect" });
        for (const wk of workers) wk.clients = 0;
        return { closed: replies.reduce((a, r) => a + r.closed, 0) };
      }
      default:
        return { error: `unknown command ${cmd.cmd}` };
    }
  }

  async function quit(code = 0) {
    shuttingDown = true;
    for (const { child } of workers) child.kill("SIGTERM");
    agent.destroy();
    process.exit(code);
  }
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => quit(0));

  const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);
  const handle = async (cmd) => {
    if (cmd.cmd === "quit") await quit(0);
    try {
      out({ cmd: cmd.cmd, ...(await run(cmd)) });
    } catch (err) {
      out({ cmd: cmd.cmd, error: String(err?.stack ?? err) });
    }
  };

  const clocks = await syncClocks();
  out({ ready: true, procs, pids: workers.map((wk) => wk.child.pid), clocks });
  if (opts.script) {
    for (const cmd of JSON.parse(opts.script)) await handle(cmd);
    await quit(0);
  }
  const lines = readline.createInterface({ input: process.stdin });
  // One command at a time, in order.
  let chain = Promise.resolve();
  lines.on("line", (line) => {
    if (!line.trim()) return;
    chain = chain.then(() => handle(JSON.parse(line)));
  });
  lines.on("close", () => chain.then(() => quit(0)));
}

// Editors' line prefixes: "e<index>: ".
function lineOf(index) {
  return `e${index}: `;
}

if (opts.worker) runWorker();
else await runCoordinator();
