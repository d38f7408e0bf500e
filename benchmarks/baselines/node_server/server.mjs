// A plain Node socket.io 4 server with the interface the fan-out benchmark drives
// (benchmarks/fanout.py, benchmarks/loadgen/clients.mjs), so the same load runs against it,
// against a stock python-socketio server (../stock_server.py) and against the gateway.
//
//   node server.mjs [--host 127.0.0.1] [--port 3101]        (or PORT / HOST in the environment)
//
// What it does, mirroring the gateway's room and event semantics (no engine, no checks):
// - CONNECT: the token in `auth.token` is decoded, NOT verified (a JWT's payload: sub and
//   companyId); the socket enters `company:<companyId>` and `user:<companyId>:<sub>`; a
//   user's first socket sends `user:online` to the company room (the socket itself left out),
//   their last one `user:offline`;
// - `document:join` {documentId} (ack): enters `document:<id>`; acks {documentId, version, data};
// - `document:update` {documentId, data} (ack): the document's version + 1; `document:updated`
//   {documentId, version, data, updatedBy, updatedAt} to the room, the writer left out (it has
//   the ack); acks {version, status: "applied", data};
// - `POST /api/events` {event, companyId, data}: `event` with `data` to the company room;
//   answers {ok: true} (any Authorization header is ignored);
// - `GET /health/websocket`: {status: "ok", connections}.
//
// Listens on loopback unless told otherwise. Stops on SIGTERM / SIGINT.

import http from "node:http";
import { parseArgs } from "node:util";
import { Server } from "socket.io";

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: process.env.HOST ?? "127.0.0.1" },
    port: { type: "string", default: process.env.PORT ?? "3101" },
  },
});

const MAX_BODY = 1 << 20;
const versions = new Map(); // documentId -> version
const online = new Map(); // "company\0user" -> sockets of that user

function claims(token) {
  // The payload of a JWT, unverified; {} when there is none.
  try {
    const part = String(token ?? "").split(".")[1];
    return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    return {};
  }
}

const companyRoom = (company) => `company:${company}`;

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/health/websocket") {
    json(res, 200, { status: "ok", connections: io.engine.clientsCount });
    return;
  }
  if (req.method === "POST" && req.url === "/api/events") {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(chunk);
    });
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        json(res, 400, { ok: false, error: { code: "invalid_payload", message: "not JSON" } });
        return;
      }
      if (typeof body?.event !== "string" || typeof body?.companyId !== "string") {
        const error = { code: "invalid_payload", message: "needs event and companyId" };
        json(res, 422, { ok: false, error });
        return;
      }
      io.to(companyRoom(body.companyId)).emit(body.event, body.data);
      json(res, 200, { ok: true, event: body.event, route: "company" });
    });
    return;
  }
  // engine.io handles /socket.io/ itself (it is attached before this listener runs).
  if (!req.url.startsWith("/socket.io/")) json(res, 404, { ok: false });
});

const io = new Server(httpServer, { serveClient: false });

io.on("connection", (socket) => {
  const c = claims(socket.handshake.auth?.token);
  const user = String(c.sub ?? socket.id);
  const company = String(c.companyId ?? "default");
  const key = `${company}\0${user}`;
  socket.join([companyRoom(company), `user:${company}:${user}`]);
  const count = (online.get(key) ?? 0) + 1;
  online.set(key, count);
  if (count === 1) {
    socket.to(companyRoom(company)).emit("user:online", {
      userId: user,
      status: "online",
      timestamp: new Date().toISOString(),
    });
  }

  socket.on("document:join", (p, ack) => {
    const id = String(p?.documentId ?? "");
    socket.join(`document:${id}`);
    const version = versions.get(id) ?? 0;
    if (typeof ack === "function") ack({ documentId: id, version, data: {} });
  });

  socket.on("document:update", (p, ack) => {
    const id = String(p?.documentId ?? "");
    const version = (versions.get(id) ?? 0) + 1;
    versions.set(id, version);
    const payload = {
      documentId: id,
      version,
      data: p?.data,
      updatedBy: user,
      updatedAt: Date.now(),
    };
    socket.to(`document:${id}`).emit("document:updated", payload);
    if (typeof ack === "function") ack({ version, status: "applied", data: p?.data });
  });

  socket.on("disconnect", () => {
    const left = (online.get(key) ?? 1) - 1;
    if (left > 0) {
      online.set(key, left);
      return;
    }
    online.delete(key);
    io.to(companyRoom(company)).emit("user:offline", {
      userId: user,
      status: "offline",
      timestamp: new Date().toISOString(),
    });
  });
});

httpServer.listen(Number(opts.port), opts.host, () => {
  console.log(JSON.stringify({ listening: `http://${opts.host}:${httpServer.address().port}` }));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
