"""Transports and serializers: long-polling-only clients (binary attachments, many pipelined
events per polling request) and the opt-in msgpack serializer."""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Doc, Map, create_sync_message, create_update_message, handle_sync_message

from tests.gateway.conftest import Server, ServerFactory


async def test_polling_only_clients(server: Server) -> None:
    a = await server.client("a", transports=["polling"])
    b = await server.client("b", transports=["polling"])
    assert a.sio.transport() == "polling"
    for c in (a, b):
        await c.call("document:join", {"documentId": "d"})
    ack = await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    assert ack["status"] == "applied"
    assert (await b.next("document:updated"))["data"] == {"x": 1}
    await a.assert_none("document:updated")


async def test_polling_binary_sync_and_pipelining(server: Server) -> None:
    c = await server.client("a", transports=["polling"])
    await c.call("document:join", {"documentId": "d"})
    doc: Doc[Any] = Doc()
    step1 = create_sync_message(doc)
    # Far more than python-engineio's default 16 packets per polling payload, each of them
    # an event with a binary attachment (two packets).
    acks = await asyncio.gather(
        *(c.call("document:sync", {"documentId": "d", "message": step1}) for _ in range(60))
    )
    assert all(ack["ok"] and isinstance(ack["message"], bytes) for ack in acks)
    handle_sync_message(acks[0]["message"][1:], doc)
    state = doc.get_state()
    doc.get("data", type=Map)["k"] = "v"
    ack = await c.call(
        "document:sync",
        {"documentId": "d", "message": create_update_message(doc.get_update(state))},
    )
    assert ack["version"] == 1


async def test_msgpack_serializer(make_server: ServerFactory) -> None:
    server = await make_server(serializer="msgpack")
    a = await server.client("a", serializer="msgpack")
    b = await server.client("b", serializer="msgpack", transports=["polling"])
    for c in (a, b):
        ack = await c.call("document:join", {"documentId": "d"})
        assert ack["ok"] is True
    await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": [1, 2]}})
    assert (await b.next("document:updated"))["data"] == {"x": [1, 2]}
    ack = await b.call("document:sync", {"documentId": "d", "message": create_sync_message(Doc())})
    assert isinstance(ack["message"], bytes)
    bad = await a.call("document:update", {"documentId": "d", "version": "x", "data": {}})
    assert bad["error"]["code"] == "invalid_payload"
