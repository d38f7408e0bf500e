// Connection state recovery with the official client (socket.io-client 4.8), as an app
// following docs/recovery.md does it. Used by tests/gateway/test_recovery.py.
//
//   node recovery.mjs '<config JSON>'
//
// Client `a` connects exactly as the guide's apps do (auth {token}: recovery is on by default)
// company, another user, no recovery) writes to it. Then `a` goes away: its transport is
// dropped (`socket.io.engine.close()`, the documented way to simulate a network failure) or
// it disconnects cleanly (`socket.disconnect()`). While it is away, ERP events are posted
// (POST /api/events) and `b` writes and types. `a` then reconnects (optionally to another
// node, or with another user's token) and, when `socket.recovered` is false, joins the
// document again as the docs tell a client to. Finally more events follow, to show that
// `a` is back in its rooms, and a round trip on `a` ensures everything sent has arrived.
//
// Prints one JSON line per client: {"label": "a"|"b", ...} with every event received, in
// order, as {phase, event, args} (args as received: offsets included). Phases: "before"
// (before the drop), "away", "reconnecting" (received with or before the CONNECT reply, i.e.
// the replay: socket.io-client emits those right before "connect"), "live" (after it). For
// `b`: "before", "away" (while `a` is away), "live" (once `a` is back).

import { io } from 'socket.io-client';
import msgpackParser from 'socket.io-msgpack-parser';

const cfg = JSON.parse(process.argv[2]);
const WAIT = cfg.waitMs ?? 8000;
const DOC = cfg.doc;

function out(label, obj) {
  process.stdout.write(JSON.stringify({ label, ...obj }) + '\n');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${WAIT} ms: ${what}`)), WAIT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function until(check, what) {
  const deadline = Date.now() + WAIT;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(20);
  }
}

class Peer {
  constructor(name, url, auth) {
    this.name = name;
    this.phase = 'before';
    this.log = [];
    this.socket = io(url, {
      auth,
      transports: cfg.transports ?? ['websocket'],
      parser: cfg.msgpack ? msgpackParser : undefined,
      reconnection: false,
      forceNew: true,
    });
    this.socket.onAny((event, ...args) => {
      this.log.push({ phase: this.phase, event, args });
    });
    this.socket.on('connect', () => {
      if (this.phase === 'reconnecting') this.phase = 'live';
    });
  }

  connected() {
    if (this.socket.connected) return Promise.resolve();
    return withTimeout(
      new Promise((resolve, reject) => {
        this.socket.once('connect', resolve);
        this.socket.once('connect_error', reject);
      }),
      `${this.name} connect`,
    );
  }

  async call(event, payload) {
    return await this.socket.timeout(WAIT).emitWithAck(event, payload);
  }

  received(event, test = () => true) {
    return this.log.some((e) => e.event === event && test(e.args[0]));
  }
}

async function post(event, data, extra = {}) {
  const res = await fetch(`${cfg.postUrl}/api/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${cfg.service}` },
    body: JSON.stringify({ event, companyId: cfg.company, data, ...extra }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`POST ${event}: ${res.status} ${JSON.stringify(body)}`);
}

async function connections(url) {
  const res = await fetch(`${url}/health/websocket`);
  return (await res.json()).connections;
}

const now = () => new Date().toISOString();
const project = (id, at) => ({
  id, name: `Project ${id}`, companyId: cfg.company, status: 'planning', [at]: now(),
});

let version = 0;
async function write(peer, n) {
  const ack = await peer.call('document:update', { documentId: DOC, version, data: { n } });
  if (!ack.ok) throw new Error(`update: ${JSON.stringify(ack)}`);
  version = ack.version;
}

const a = new Peer('a', cfg.urlA, { token: cfg.tokenA });
const b = new Peer('b', cfg.urlB, { token: cfg.tokenB, recovery: false });
try {
  await Promise.all([a.connected(), b.connected()]);
  const firstId = a.socket.id;
  const firstPid = a.socket._pid;
  for (const p of [a, b]) {
    const ack = await p.call('document:join', { documentId: DOC });
    if (!ack.ok) throw new Error(`join: ${JSON.stringify(ack)}`);
    version = ack.version;
  }
  if (!cfg.quiet) {
    await write(b, 1);
    await until(() => a.received('document:updated', (d) => d.version === version), 'a live');
  }

  // -- away ---------------------------------------------------------------------------------
  const before = await connections(cfg.urlA);
  const gone = withTimeout(new Promise((r) => a.socket.once('disconnect', r)), 'disconnect');
  if (cfg.away === 'disconnect') a.socket.disconnect();
  else a.socket.io.engine.close();
  await gone;
  a.phase = 'away';
  b.phase = 'away';
  await until(async () => (await connections(cfg.urlA)) < before, 'the server saw the drop');

  await post('project:created', project('p1', 'createdAt'));
  await write(b, 2);
  await post('notification:new', {
    id: 'n1', title: 'Hi', message: 'while you were away', type: 'info',
    userId: cfg.userA, createdAt: now(),
  });
  const typing = await b.call('user:typing', { documentId: DOC });
  if (!typing.ok) throw new Error(`typing: ${JSON.stringify(typing)}`);
  await post('invoice:paid', {
    id: 'i1', invoiceNumber: 'INV-1', amount: 12.5, paidAt: now(), paidBy: 'someone',
  });
  const awayVersion = version;
  if (cfg.pauseMs) await sleep(cfg.pauseMs);

  // -- back -----------------------------------------------------------------------------------
  if (cfg.reconnectUrl) a.socket.io.uri = cfg.reconnectUrl;
  if (cfg.reconnectToken) a.socket.auth = { token: cfg.reconnectToken };
  a.phase = 'reconnecting';
  a.socket.connect();
  await a.connected();
  b.phase = 'live';
  const recovered = a.socket.recovered === true;
  let rejoin = null;
  if (!recovered) {
    // What the docs tell a client: the session is new, join the documents again.
    rejoin = await a.call('document:join', { documentId: DOC });
  }
  await write(b, 3);
  await post('project:updated', project('p1', 'updatedAt'));
  const lastVersion = version;
  if (!cfg.reconnectToken) {
    await until(
      () => a.received('document:updated', (d) => d.version === lastVersion)
        && a.received('project:updated'),
      'a is back in its rooms',
    );
  }
  const barrier = await a.call('test:barrier', {}); // everything sent before has arrived
  out('a', {
    recovered,
    recoveredFlag: a.socket.recovered ?? null,
    sameId: a.socket.id === firstId,
    samePid: firstPid !== undefined && a.socket._pid === firstPid,
    hadPid: firstPid !== undefined,
    awayVersion,
    lastVersion,
    rejoinVersion: rejoin ? rejoin.version : null,
    barrier,
    events: a.log,
  });
  await b.call('test:barrier', {});
  out('b', { events: b.log });
} catch (err) {
  out('error', { message: String(err && err.stack ? err.stack : err), a: a.log, b: b.log });
  process.exitCode = 1;
} finally {
  // The engine closes once what it had to send (the DISCONNECT packet) is out.
  const closed = (p) => new Promise((resolve) => {
    const engine = p.socket.io.engine;
    if (!engine || engine.readyState === 'closed') resolve();
    else engine.once('close', resolve);
  });
  const both = Promise.all([closed(a), closed(b)]);
  a.socket.disconnect();
  b.socket.disconnect();
  await Promise.race([both, sleep(3000)]);
}
// A dropped polling engine leaves its long-poll GET open until the server's ping timeout:
// do not wait for it.
process.stdout.write('', () => process.exit());
