// Drives the gateway with the official JS clients, as the seed's web client does
// (websocket-integration-guide.md), and prints what it observed: one JSON object per line,
// each with a unique `label`. Used by tests/gateway/test_js_client.py.
//
//   node interop.mjs <scenario> <server url> '<config JSON>'
//
// The config carries the tokens (minted by the Python test) and the scenario's data. Every
// wait is bounded; a timeout prints the events received so far and exits 1. Binary values
// are printed as {"$binary": <byte length>, "type": <constructor name>}.

import { io } from 'socket.io-client';
import msgpackParser from 'socket.io-msgpack-parser';
import * as Y from 'yjs';
import * as syncProtocol from 'y-protocols/sync';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';

const [scenario, URL, configJson] = process.argv.slice(2);
const cfg = JSON.parse(configJson ?? process.env.INTEROP_CONFIG ?? '{}');
const WAIT = cfg.waitMs ?? 8000;

function out(label, obj) {
  process.stdout.write(JSON.stringify({ label, ...obj }) + '\n');
}

function isBinary(v) {
  return v instanceof ArrayBuffer || ArrayBuffer.isView(v);
}

/** A JSON-printable copy of a received value (binary as a marker with its length). */
function printable(v) {
  if (isBinary(v)) return { $binary: v.byteLength, type: v.constructor.name };
  if (Array.isArray(v)) return v.map(printable);
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, printable(x)]));
  }
  return v;
}

function toU8(v) {
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new Error(`expected binary, got ${JSON.stringify(v)}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const peers = [];

/** A socket.io-client socket whose received events are logged in order and can be awaited. */
class Peer {
  constructor(name, opts) {
    this.name = name;
    this.log = []; // every event received, in order: [event, payload]
    this.queues = new Map(); // event -> payloads not yet consumed by next()
    this.waiters = [];
    this.socket = io(URL, { reconnection: false, ...opts });
    this.openTransport = null; // the engine.io transport the connection opened with
    this.upgrades = [];
    this.socket.io.on('open', () => {
      const engine = this.socket.io.engine;
      this.openTransport = engine.transport.name;
      engine.on('upgrade', (t) => this.upgrades.push(t.name));
    });
    this.socket.onAny((event, ...args) => {
      // As the guide's listeners do: the payload is the first argument. With connection
      // state recovery the server appends an offset string, which apps ignore; check it is
      // one whenever present, so the extra argument is never anything else.
      if (args.length > 2 || (args.length === 2 && typeof args[1] !== 'string')) {
        throw new Error(`unexpected arguments for ${event}: ${JSON.stringify(args)}`);
      }
      const data = args[0];
      this.log.push([event, printable(data)]);
      if (!this.queues.has(event)) this.queues.set(event, []);
      this.queues.get(event).push(data);
      for (const w of [...this.waiters]) w();
    });
    peers.push(this);
  }

  /** Resolves {connected: true} on connect, {connected: false, message, ...} on connect_error. */
  connected() {
    const s = this.socket;
    if (s.connected) return Promise.resolve({ connected: true });
    return withTimeout(
      new Promise((resolve) => {
        s.once('connect', () => resolve({ connected: true }));
        s.once('connect_error', (err) =>
          resolve({ connected: false, message: err.message, data: err.data ?? null }),
        );
      }),
      WAIT,
      `${this.name} connect`,
    );
  }

  /** The next `event` whose payload satisfies `pred` (consumed; earlier ones are kept). */
  next(event, pred = () => true) {
    const take = () => {
      const q = this.queues.get(event) ?? [];
      const i = q.findIndex(pred);
      if (i < 0) return undefined;
      return q.splice(i, 1)[0];
    };
    const found = take();
    if (found !== undefined) return Promise.resolve(found);
    let waiter;
    const p = new Promise((resolve) => {
      waiter = () => {
        const got = take();
        if (got !== undefined) resolve(got);
      };
      this.waiters.push(waiter);
    });
    return withTimeout(p, WAIT, `${this.name} waiting for ${event}`).finally(() => {
      this.waiters = this.waiters.filter((w) => w !== waiter);
    });
  }

  /** emit with an ack callback; resolves with the ack. */
  call(event, payload) {
    return this.socket.timeout(WAIT).emitWithAck(event, payload);
  }

  /** emit without an ack, exactly as the guide does. */
  send(event, payload) {
    this.socket.emit(event, payload);
  }

  /** Returns once everything the server emitted to this socket so far has arrived: the
   * gateway handles one socket's events in order and answers an unknown event. */
  async barrier() {
    const ack = await this.call('test:barrier', {});
    if (ack?.ok !== false || ack.error?.code !== 'invalid_payload') {
      throw new Error(`unexpected barrier ack ${JSON.stringify(ack)}`);
    }
  }

  close() {
    this.socket.disconnect();
  }
}

/** Barriers on every peer, twice: all events sent so far handled, their emissions received. */
async function settle(...ps) {
  for (let round = 0; round < 2; round++) {
    for (const p of ps) await p.barrier();
  }
}

function guideOptions(token, extra = {}) {
  // The guide's web client: io(url, {auth: {token}, transports: ['websocket', 'polling']}).
  return { auth: { token }, transports: ['websocket', 'polling'], ...extra };
}

async function connectPeer(name, token, extra = {}) {
  const p = new Peer(name, guideOptions(token, extra));
  const result = await p.connected();
  if (!result.connected) throw new Error(`${name} refused: ${result.message}`);
  return p;
}

async function postEvent(body, token) {
  const res = await fetch(`${URL}/api/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

function printLogs(...ps) {
  for (const p of ps) out(`log:${p.name}`, { events: p.log });
}

// -- scenarios ------------------------------------------------------------------------------

const scenarios = {
  /** Refused handshakes (connect_error text), the guide's refresh-and-reconnect, and valid
   * connections over each transport configuration. */
  async auth() {
    for (const [name, token] of Object.entries(cfg.refused)) {
      // `token: null` stands for the guide's `auth: {token: accessToken}` before login.
      const p = new Peer(`refused-${name}`, guideOptions(token ?? undefined));
      const r = await p.connected();
      out(`refused:${name}`, {
        ...r,
        includesAuthentication: r.message?.includes('authentication') ?? false,
        active: p.socket.active,
      });
      p.close();
    }

    // The guide's "Connection Errors" handler, with its reconnection options: on an
    // authentication error, refresh the token and reconnect.
    {
      const p = new Peer('refresh', {
        ...guideOptions(cfg.expired),
        reconnection: true,
        reconnectionDelay: 1000,
        reconnectionAttempts: 5,
      });
      const errors = [];
      const connected = new Promise((resolve) => p.socket.on('connect', resolve));
      p.socket.on('connect_error', (error) => {
        errors.push(error.message);
        if (error.message.includes('authentication')) {
          p.socket.auth = { token: cfg.valid };
          p.socket.connect();
        }
      });
      await withTimeout(connected, WAIT, 'refresh and reconnect');
      const ack = await p.call('document:join', { documentId: 'auth-refresh' });
      out('refresh', { errors, connected: p.socket.connected, joinOk: ack.ok });
      p.close();
    }

    const transports = {
      guide: { transports: ['websocket', 'polling'] },
      polling: { transports: ['polling'] },
      websocket: { transports: ['websocket'] },
      default: {}, // socket.io-client's default: polling first, then upgrade
    };
    for (const [name, opts] of Object.entries(transports)) {
      const p = new Peer(`valid-${name}`, { auth: { token: cfg.valid }, ...opts });
      const r = await p.connected();
      const engine = p.socket.io.engine;
      if (name === 'default' && engine.transport.name !== 'websocket') {
        await withTimeout(new Promise((resolve) => engine.once('upgrade', resolve)), WAIT,
          'upgrade to websocket');
      }
      const ack = await p.call('document:join', { documentId: `auth-${name}` });
      out(`valid:${name}`, {
        ...r,
        firstTransport: p.openTransport,
        upgrades: p.upgrades,
        transport: engine.transport.name,
        join: ack,
      });
      p.close();
    }
  },

  /** ERP events published through POST /api/events reach the company's clients only. */
  async events() {
    const a = await connectPeer('a', cfg.tokenA);
    const b = await connectPeer('b', cfg.tokenB);
    const published = [];
    for (const body of cfg.publish) published.push(await postEvent(body, cfg.serviceToken));
    out('published', { responses: published });
    // The sentinels are published last, one per company: once each arrived, anything
    // published before it to that socket has arrived too.
    await a.next('project:deleted', (d) => d.id === cfg.sentinelA);
    await b.next('project:deleted', (d) => d.id === cfg.sentinelB);
    printLogs(a, b);
  },

  /** Two clients edit one document from the same version, as the guide emits updates. */
  async conflict() {
    const doc = cfg.documentId;
    const alice = await connectPeer('alice', cfg.tokens.alice);
    const bob = await connectPeer('bob', cfg.tokens.bob);
    const join = { documentId: doc, strategy: cfg.strategy };
    if (cfg.textFields) join.textFields = cfg.textFields;
    out('join:alice', { ack: await alice.call('document:join', join) });
    out('join:bob', { ack: await bob.call('document:join', join) });

    // The guide: socket.emit('document:update', {documentId, version, data, userId}).
    alice.send('document:update', { documentId: doc, version: 0, data: cfg.base, userId: 'alice' });
    for (const p of [alice, bob]) await p.next('document:updated', (d) => d.version === 1);
    alice.send('document:update', { documentId: doc, version: 1, data: cfg.alice, userId: 'alice' });
    for (const p of [alice, bob]) await p.next('document:updated', (d) => d.version === 2);

    // bob edited from version 1 too, and claims to be someone else (identity is the token's).
    const stale = { documentId: doc, version: 1, data: cfg.bob, userId: 'mallory' };
    if (cfg.bobAck) out('update:bob', { ack: await bob.call('document:update', stale) });
    else bob.send('document:update', stale);

    if (cfg.strategy === 'manual') {
      const conflicts = [];
      for (const p of [alice, bob]) conflicts.push(await p.next('document:conflict'));
      const resolver = cfg.resolveBy === 'bob' ? bob : alice;
      const resolve = {
        documentId: doc,
        conflictId: conflicts[0].conflictId,
        resolvedValue: cfg.resolvedValue,
      };
      if (cfg.resolveAck) out('resolve', { ack: await resolver.call('conflict:resolve', resolve) });
      else resolver.send('conflict:resolve', resolve);
    } else {
      await bob.next('document:conflict');
    }
    for (const p of [alice, bob]) await p.next('conflict:resolved');
    await settle(alice, bob);
    printLogs(alice, bob);
  },

  /** Failures: an `error` event {code, message, event} without an ack, {ok: false, error}
   * with one; the connection stays usable. */
  async errors() {
    const p = await connectPeer('errors', cfg.token);
    await p.call('document:join', { documentId: 'err-doc' });
    const cases = {
      badVersion: ['document:update', { documentId: 'err-doc', version: 'one', data: {} }],
      badData: ['document:update', { documentId: 'err-doc', version: 0, data: 'text' }],
      notObject: ['document:update', 'not an object'],
      notJoined: ['document:update', { documentId: 'elsewhere', version: 0, data: {} }],
      unknownEvent: ['document:frobnicate', { documentId: 'err-doc' }],
      unknownConflict: ['conflict:resolve',
        { documentId: 'err-doc', conflictId: 'nope', resolvedValue: {} }],
    };
    for (const [name, [event, payload]] of Object.entries(cases)) {
      p.send(event, payload);
      const error = await p.next('error');
      out(`noack:${name}`, { error });
    }
    for (const [name, [event, payload]] of Object.entries(cases)) {
      out(`ack:${name}`, { ack: await p.call(event, payload) });
    }
    const ok = await p.call('document:update', { documentId: 'err-doc', version: 0, data: { a: 1 } });
    out('afterwards', { ack: ok, connected: p.socket.connected });
    await settle(p);
    printLogs(p);
  },

  /** The msgpack parser against a gateway started with serializer msgpack. */
  async msgpack() {
    const doc = 'mp-doc';
    const alice = await connectPeer('alice', cfg.tokens.alice,
      { parser: msgpackParser, transports: cfg.transports.alice });
    const bob = await connectPeer('bob', cfg.tokens.bob,
      { parser: msgpackParser, transports: cfg.transports.bob });
    out('transports', {
      alice: alice.socket.io.engine.transport.name,
      bob: bob.socket.io.engine.transport.name,
    });
    const join = { documentId: doc, strategy: 'merge', textFields: ['notes'] };
    out('join:alice', { ack: await alice.call('document:join', join) });
    out('join:bob', { ack: await bob.call('document:join', join) });
    alice.send('document:update',
      { documentId: doc, version: 0, data: { notes: 'hi', qty: 1.5, tags: ['a'] }, userId: 'alice' });
    for (const p of [alice, bob]) await p.next('document:updated', (d) => d.version === 1);
    out('update:bob', {
      ack: await bob.call('document:update',
        { documentId: doc, version: 1, data: { notes: 'hi there', qty: 2, tags: ['a', 'b'] } }),
    });
    await alice.next('document:updated', (d) => d.version === 2);
    out('published', { response: await postEvent(cfg.publish, cfg.serviceToken) });
    for (const p of [alice, bob]) await p.next('project:created');
    bob.send('document:update', { documentId: doc, version: 'x', data: {} });
    await bob.next('error');
    // Binary over msgpack: a Yjs replica syncs (step 1 -> step 2 in the ack). y-protocols
    // writes a Uint8Array (all a browser has); in Node it can be wrapped in a Buffer.
    // notepack (the parser's codec) encodes a Buffer as msgpack bin, any other
    // ArrayBuffer or view as ext type 0.
    const replica = new Replica(bob, doc, { buffer: cfg.binary === 'buffer' });
    const ack = await replica.syncStep1();
    out('sync', { ack: printable(ack), state: replica.json() });
    await settle(alice, bob);
    printLogs(alice, bob);
  },

  /** A room whose members use different transports: a JSON write by `writer` must reach
   * the websocket member and the polling member alike (as a Yjs update to replicas, when
   * `yjs`; with the msgpack parser, when `msgpack`). */
  async mixed() {
    const doc = 'mixed-doc';
    const parser = cfg.msgpack ? { parser: msgpackParser } : {};
    const members = {};
    for (const [name, transports] of [['ws', ['websocket']], ['poll', ['polling']]]) {
      const p = await connectPeer(name, cfg.tokens[name], { ...parser, transports });
      p.disconnectReason = null;
      p.socket.on('disconnect', (reason) => { p.disconnectReason = reason; });
      await p.call('document:join', { documentId: doc });
      if (cfg.yjs) {
        p.replica = new Replica(p, doc);
        await p.replica.syncStep1();
      }
      members[name] = p;
    }
    const writer = await connectPeer('writer', cfg.tokens.writer, parser);
    await writer.call('document:join', { documentId: doc });
    out('write', {
      ack: await writer.call('document:update', { documentId: doc, version: 0, data: cfg.data }),
    });
    for (const [name, p] of Object.entries(members)) {
      const received = cfg.yjs
        ? p.replica.until((state) => JSON.stringify(state) === JSON.stringify(cfg.data))
        : p.next('document:updated');
      const dropped = p.socket.connected
        ? new Promise((resolve) => p.socket.once('disconnect', resolve))
        : Promise.resolve();
      let outcome;
      try {
        outcome = await Promise.race([received.then(() => 'received'), dropped.then(() => 'dropped')]);
      } catch (err) {
        outcome = `error: ${err.message}`;
      }
      out(`member:${name}`, {
        outcome,
        connected: p.socket.connected,
        disconnectReason: p.disconnectReason,
        state: cfg.yjs ? p.replica.json() : null,
      });
    }
  },

  /** A Yjs replica (yjs + y-protocols over document:sync) co-editing with a Python JSON
   * client (which the test drives concurrently). */
  async yjs() {
    const doc = cfg.documentId;
    const p = await connectPeer('yara', cfg.token, { transports: cfg.transports });
    out('join', { ack: await p.call('document:join', { documentId: doc }) });
    const replica = new Replica(p, doc);
    const step2 = await replica.syncStep1();
    out('synced', {
      ack: printable(step2),
      messageType: step2.message?.constructor.name,
      state: replica.json(),
      notesIsYText: replica.root.get('notes') instanceof Y.Text,
    });

    // Type into the Y.Text and set a plain value, in one transaction: one update, one write.
    const ack = await replica.edit((root) => {
      root.get('notes').insert(cfg.insertAt, cfg.insert);
      root.set('qty', cfg.qty);
    }, { ack: true });
    out('edit', { ack, state: replica.json() });

    // The Python client's JSON writes arrive as document:sync updates into the Y.Doc.
    await replica.until((state) => JSON.stringify(state) === JSON.stringify(cfg.expectFinal));
    // A second edit without an ack, as a provider would send it.
    await replica.edit((root) => root.get('notes').insert(root.get('notes').length, cfg.append),
      { ack: false });
    await p.next('document:updated', (d) => d.updatedBy === cfg.user && d.data.notes.endsWith(cfg.append));
    await settle(p);
    out('final', {
      state: replica.json(),
      notesIsYText: replica.root.get('notes') instanceof Y.Text,
      received: replica.received,
    });
    printLogs(p);
  },
};

/** A Yjs replica of one document speaking y-protocols sync messages over document:sync. */
class Replica {
  constructor(peer, documentId, { buffer = false } = {}) {
    this.peer = peer;
    this.wrap = buffer ? (u8) => Buffer.from(u8) : (u8) => u8;
    this.documentId = documentId;
    this.doc = new Y.Doc();
    this.root = this.doc.getMap('data');
    this.remote = Symbol('remote');
    this.received = []; // per incoming document:sync: its type and whether it changed the doc
    this.watchers = [];
    peer.socket.on('document:sync', (event) => {
      if (event.documentId !== documentId) return;
      const before = Y.encodeStateVector(this.doc);
      const reply = this.apply(event.message);
      const after = Y.encodeStateVector(this.doc);
      this.received.push({
        binaryType: event.message?.constructor.name,
        changed: Buffer.compare(Buffer.from(before), Buffer.from(after)) !== 0,
        replied: reply !== null,
      });
      for (const w of [...this.watchers]) w();
    });
  }

  /** Apply a sync message; returns the reply (for a step 1) or null. */
  apply(message) {
    const decoder = decoding.createDecoder(toU8(message));
    const type = decoding.readVarUint(decoder);
    if (type !== 0) throw new Error(`unexpected message type ${type}`);
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0);
    syncProtocol.readSyncMessage(decoder, encoder, this.doc, this.remote);
    if (encoding.length(encoder) > 1) {
      const reply = encoding.toUint8Array(encoder);
      this.peer.send('document:sync', { documentId: this.documentId, message: this.wrap(reply) });
      return reply;
    }
    return null;
  }

  async syncStep1() {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0);
    syncProtocol.writeSyncStep1(encoder, this.doc);
    const ack = await this.peer.call('document:sync',
      { documentId: this.documentId, message: this.wrap(encoding.toUint8Array(encoder)) });
    if (ack?.ok && ack.message) this.apply(ack.message);
    return ack;
  }

  /** Make a local change and send it as an update message (with or without an ack). */
  async edit(change, { ack }) {
    const updates = [];
    const record = (update, origin) => {
      if (origin !== this.remote) updates.push(update);
    };
    this.doc.on('update', record);
    this.doc.transact(() => change(this.root));
    this.doc.off('update', record);
    if (updates.length !== 1) throw new Error(`expected one update, got ${updates.length}`);
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0);
    syncProtocol.writeUpdate(encoder, updates[0]);
    const payload = { documentId: this.documentId, message: this.wrap(encoding.toUint8Array(encoder)) };
    if (ack) return this.peer.call('document:sync', payload);
    this.peer.send('document:sync', payload);
    return null;
  }

  /** Wait until the replica's JSON view satisfies `pred`. */
  until(pred) {
    if (pred(this.json())) return Promise.resolve();
    let watcher;
    const p = new Promise((resolve) => {
      watcher = () => pred(this.json()) && resolve();
      this.watchers.push(watcher);
    });
    return withTimeout(p, WAIT, `replica state ${JSON.stringify(this.json())}`).finally(() => {
      this.watchers = this.watchers.filter((w) => w !== watcher);
    });
  }

  json() {
    return this.root.toJSON();
  }
}

async function main() {
  const run = scenarios[scenario];
  if (!run) throw new Error(`unknown scenario ${scenario}; one of ${Object.keys(scenarios)}`);
  await run();
}

main().then(
  () => {
    for (const p of peers) p.close();
    process.exit(0);
  },
  (err) => {
    process.stderr.write(`${err.stack ?? err}\n`);
    for (const p of peers) {
      process.stderr.write(`${p.name} received: ${JSON.stringify(p.log)}\n`);
    }
    for (const p of peers) p.close();
    process.exit(1);
  },
);
