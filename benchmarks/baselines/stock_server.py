"""A stock python-socketio ``AsyncServer`` on aiohttp with the interface the fan-out benchmark
drives (``benchmarks/fanout.py``, ``benchmarks/loadgen/clients.mjs``): the baseline that shows
what python-socketio itself costs, beside the gateway and Node's socket.io.

::

    .venv/bin/python benchmarks/baselines/stock_server.py [--host 127.0.0.1] [--port 3102]

Everything is python-socketio's defaults (standard ``json`` module, default manager, asyncio's
default event loop, as the gateway runs). The semantics mirror the gateway's, minus every check
and the engine (the same as ``node_server/server.mjs``):

- CONNECT: the token in ``auth.token`` is decoded, NOT verified (a JWT's payload: ``sub`` and
  ``companyId``); the socket enters ``company:<companyId>`` and ``user:<companyId>:<sub>``; a
  user's first socket sends ``user:online`` to the company room (the socket itself left out),
  their last one ``user:offline``;
- ``document:join`` ``{documentId}`` (ack): enters ``document:<id>``; acks ``{documentId,
  version, data}``;
- ``document:update`` ``{documentId, data}`` (ack): the document's version + 1;
  ``document:updated`` ``{documentId, version, data, updatedBy, updatedAt}`` to the room, the
  writer left out (it has the ack); acks ``{version, status: "applied", data}``;
- ``POST /api/events`` ``{event, companyId, data}``: ``event`` to the company room; answers
  ``{ok: true}`` (any ``Authorization`` header is ignored);
- ``GET /health/websocket``: ``{status: "ok", connections}``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import time
from datetime import UTC, datetime
from typing import Any

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
versions: dict[str, int] = {}
#: (company, user) -> that user's sockets; sid -> (company, user)
online: dict[tuple[str, str], int] = {}
who: dict[str, tuple[str, str]] = {}


def claims(token: Any) -> dict[str, Any]:
    """A JWT's payload, unverified; ``{}`` when there is none."""
    try:
        part = str(token).split(".")[1]
        decoded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def company_room(company: str) -> str:
    return f"company:{company}"


def presence(user: str, status: str) -> dict[str, Any]:
    return {"userId": user, "status": status, "timestamp": datetime.now(UTC).isoformat()}


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> None:
    c = claims(auth.get("token") if isinstance(auth, dict) else None)
    user, company = str(c.get("sub", sid)), str(c.get("companyId", "default"))
    who[sid] = (company, user)
    await sio.enter_room(sid, company_room(company))
    await sio.enter_room(sid, f"user:{company}:{user}")
    count = online.get((company, user), 0) + 1
    online[(company, user)] = count
    if count == 1:
        await sio.emit(
            "user:online", presence(user, "online"), to=company_room(company), skip_sid=sid
        )


@sio.event
async def disconnect(sid: str, *_: Any) -> None:
    company, user = who.pop(sid, ("default", sid))
    left = online.get((company, user), 1) - 1
    if left > 0:
        online[(company, user)] = left
        return
    online.pop((company, user), None)
    await sio.emit("user:offline", presence(user, "offline"), to=company_room(company))


@sio.on("document:join")
async def document_join(sid: str, p: Any) -> dict[str, Any]:
    doc = str(p.get("documentId", "")) if isinstance(p, dict) else ""
    await sio.enter_room(sid, f"document:{doc}")
    return {"documentId": doc, "version": versions.get(doc, 0), "data": {}}


@sio.on("document:update")
async def document_update(sid: str, p: Any) -> dict[str, Any]:
    p = p if isinstance(p, dict) else {}
    doc = str(p.get("documentId", ""))
    version = versions.get(doc, 0) + 1
    versions[doc] = version
    payload = {
        "documentId": doc,
        "version": version,
        "data": p.get("data"),
        "updatedBy": who.get(sid, ("", sid))[1],
        "updatedAt": time.time() * 1000,
    }
    await sio.emit("document:updated", payload, to=f"document:{doc}", skip_sid=sid)
    return {"version": version, "status": "applied", "data": p.get("data")}


async def post_event(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"ok": False, "error": {"code": "invalid_payload"}}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("event"), str):
        return web.json_response({"ok": False, "error": {"code": "invalid_payload"}}, status=422)
    await sio.emit(body["event"], body.get("data"), to=company_room(str(body.get("companyId"))))
    return web.json_response({"ok": True, "event": body["event"], "route": "company"})


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "connections": len(who)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3102)
    args = parser.parse_args()
    app = web.Application()
    sio.attach(app)
    app.router.add_post("/api/events", post_event)
    app.router.add_get("/health/websocket", health)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
