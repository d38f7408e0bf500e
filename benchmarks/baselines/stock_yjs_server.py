"""The floor of the Yjs benchmark (``benchmarks/yjs.py --target stock``): a stock
python-socketio ``AsyncServer`` on aiohttp speaking the gateway's ``document:sync`` protocol
with one pycrdt ``Doc`` per document and nothing else.

::

    .venv/bin/python benchmarks/baselines/stock_yjs_server.py [--host 127.0.0.1] [--port 3103]

What a Python server on python-socketio and pycrdt costs at the least for this workload: no
authentication, validation, engine, versions, store, recovery log or back-pressure. The
server runs on uvloop, as the gateway does. Everything else is python-socketio's defaults.

- CONNECT: accepted (the token is not read);
- ``document:join`` ``{documentId}`` (ack): enters ``document:<id>``; acks ``{ok: true}``;
- ``document:sync`` ``{documentId, message}`` (ack): a y-protocols sync message. Step 1 is
  answered with step 2 in the ack (``{ok: true, message}``); an update (or step 2) is applied to
  the document and sent to the room as ``document:sync`` ``{documentId, message}``, the sender
  left out; acks ``{ok: true}``;
- ``GET /health/websocket``: ``{status: "ok"}``.

Documents are created empty on first use: the benchmark sends the structure first, as it
does for Hocuspocus.
"""

from __future__ import annotations

import argparse
from typing import Any

import socketio
import uvloop
from aiohttp import web
from pycrdt import Doc, YMessageType, YSyncMessageType, handle_sync_message

sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)
docs: dict[str, Doc[Any]] = {}


def room(document: str) -> str:
    return f"document:{document}"


@sio.on("document:join")
async def document_join(sid: str, p: Any) -> dict[str, Any]:
    document = str(p.get("documentId", "")) if isinstance(p, dict) else ""
    docs.setdefault(document, Doc())
    await sio.enter_room(sid, room(document))
    return {"ok": True}


@sio.on("document:sync")
async def document_sync(sid: str, p: Any) -> dict[str, Any]:
    if not isinstance(p, dict) or not isinstance(p.get("message"), bytes | bytearray):
        return {"ok": False, "error": {"code": "invalid_payload", "message": "message"}}
    document = str(p.get("documentId", ""))
    doc = docs.setdefault(document, Doc())
    message = bytes(p["message"])
    if message[0] != YMessageType.SYNC:
        return {"ok": True}
    if message[1] == YSyncMessageType.SYNC_STEP1:
        reply = handle_sync_message(message[1:], doc)
        return {"ok": True, "message": reply}
    handle_sync_message(message[1:], doc)  # step 2 or an update: applied to the document
    await sio.emit(
        "document:sync",
        {"documentId": document, "message": message},
        to=room(document),
        skip_sid=sid,
    )
    return {"ok": True}


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3103)
    args = parser.parse_args()
    uvloop.install()
    app = web.Application()
    sio.attach(app)
    app.router.add_get("/health/websocket", health)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
