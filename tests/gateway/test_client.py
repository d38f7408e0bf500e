"""gateway.client.CollabClient against a real gateway: typed requests, events, errors, and
what happens when the transport dies — rejoin, and writes resent with their opId."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from gateway.client import CollabClient, ConnectionLost, Event, RequestError
from tests.gateway.conftest import TIMEOUT, Server

Factory = Callable[..., Awaitable[CollabClient]]


@pytest_asyncio.fixture
async def connect(server: Server) -> AsyncIterator[Factory]:
    """Connected clients (closed after the test); fast reconnection for the transport tests."""
    clients: list[CollabClient] = []

    async def make(sub: str = "ann", company: str = "acme", **kw: Any) -> CollabClient:
        token = server.token(sub, company, name=sub.title())
        kw.setdefault("reconnection_delay", 0.05)
        kw.setdefault("reconnection_delay_max", 0.2)
        kw.setdefault("request_timeout", TIMEOUT)
        client = CollabClient(server.url, token, **kw)
        await client.connect()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def cut_transport(client: CollabClient) -> None:
    """Drop the websocket under the client, as a network failure would: no Socket.IO or
    Engine.IO goodbye, so python-socketio reconnects."""
    await client.sio.eio.ws.close()


async def test_join_update_typing_and_events(connect: Factory) -> None:
    ann, bob = await connect("ann"), await connect("bob")
    bob_events = bob.events("document:*", "user:typing")
    joined = await ann.join("rfi-1", strategy="merge", text_fields=["notes"])
    assert (joined.version, joined.data, joined.strategy) == (0, {"notes": ""}, "merge")
    assert joined.text_fields == ("notes",)
    await bob.join("rfi-1")

    result = await ann.update("rfi-1", 0, {"title": "Pour", "notes": "grid C"})
    assert (result.status, result.version, result.data) == (
        "applied",
        1,
        {"title": "Pour", "notes": "grid C"},
    )
    assert len(result.op_id) == 32
    async with asyncio.timeout(TIMEOUT):
        name, payload = await bob_events.next()
    assert name == "document:updated"
    assert (payload["version"], payload["updatedBy"]) == (1, "ann")
    assert bob.document("rfi-1") == ann.document("rfi-1")
    assert bob.document("rfi-1").version == 1  # type: ignore[union-attr]

    assert await ann.typing("rfi-1") is True
    assert await ann.typing("rfi-1") is False  # within the server's throttle
    async with asyncio.timeout(TIMEOUT):
        typing = await bob_events.wait_for("user:typing")
    assert typing == {
        "userId": "ann",
        "userName": "Ann",
        "resourceId": "rfi-1",
        "resourceType": "document",
    }

    # a stale write merges; the writer learns it in the ack
    merged = await bob.update("rfi-1", 0, {"title": "Pour", "notes": "grid C, pump at 7"})
    assert merged.status in ("applied", "merged") and merged.version == 2

    await ann.leave("rfi-1")
    assert ann.joined == [] and ann.document("rfi-1") is None


async def test_callbacks_and_async_for(connect: Factory, server: Server) -> None:
    ann = await connect("ann")
    seen: list[Event] = []
    remove = ann.on("project:*", lambda name, payload: seen.append(Event(name, payload)))
    stream = ann.events("invoice:paid")
    project = {
        "id": "p1",
        "name": "Tower",
        "companyId": "acme",
        "status": "planning",
        "createdAt": "2024-01-15T10:30:00.000Z",
    }
    invoice = {
        "id": "i1",
        "invoiceNumber": "INV-1",
        "amount": 10,
        "paidAt": "2024-01-15T10:30:00.000Z",
        "paidBy": "x",
    }
    await server.gw.publisher.publish("project:created", "acme", project)
    await server.gw.publisher.publish("invoice:paid", "acme", invoice)
    async with asyncio.timeout(TIMEOUT):
        async for name, payload in stream:
            assert (name, payload["invoiceNumber"]) == ("invoice:paid", "INV-1")
            break
    assert seen == [Event("project:created", project)]
    remove()
    stream.close()
    assert [e async for e in stream] == []


async def test_refusals_raise_request_errors(connect: Factory) -> None:
    ann, cleo = await connect("ann", "acme"), await connect("cleo", "globex")
    await ann.join("acme-doc")
    with pytest.raises(RequestError) as refused:
        await cleo.join("acme-doc")
    assert refused.value.code == "forbidden"
    assert cleo.joined == []
    with pytest.raises(RequestError) as not_joined:
        await cleo.update("acme-doc", 0, {"x": 1})
    assert not_joined.value.code == "forbidden"
    with pytest.raises(RequestError) as ahead:
        await ann.update("acme-doc", 5, {"x": 1})
    assert (ahead.value.code, ahead.value.details.get("version")) == ("version_ahead", 0)


async def test_manual_conflict_and_resolve(connect: Factory) -> None:
    ann, bob = await connect("ann"), await connect("bob")
    await ann.join("punch-1", strategy="manual")
    await bob.join("punch-1")
    ann_events, bob_events = ann.events("document:conflict", "conflict:resolved"), bob.events()
    await ann.update("punch-1", 0, {"title": "Fix handrail"})
    held = await bob.update("punch-1", 0, {"title": "Replace handrail"})
    assert held.status == "conflict" and held.conflict_id
    assert held.conflicted_fields == ("title",)
    async with asyncio.timeout(TIMEOUT):
        conflict = await ann_events.wait_for("document:conflict")
    assert conflict["conflictId"] == held.conflict_id
    assert conflict["originalValue"] == {"title": "Fix handrail"}
    assert conflict["incomingValue"] == {"title": "Replace handrail"}

    with pytest.raises(RequestError) as unknown:
        await ann.resolve("punch-1", "no-such-conflict", {"title": "?"})
    assert unknown.value.code == "not_found"
    version = await ann.resolve("punch-1", held.conflict_id, {"title": "Replace handrail"})
    assert version == 2
    async with asyncio.timeout(TIMEOUT):
        resolved = await bob_events.wait_for("conflict:resolved")
    assert resolved["resolvedValue"] == {"title": "Replace handrail"}
    assert bob.document("punch-1").version == 2  # type: ignore[union-attr]


async def test_write_cut_mid_flight_is_resent_with_its_op_id(
    connect: Factory, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server applies the write, the transport dies before the ack: after the reconnect
    the client rejoins and resends the same opId, and the server answers ``duplicate``."""
    ann, bob = await connect("ann"), await connect("bob")
    await ann.join("log-1", text_fields=["notes"])
    await bob.join("log-1")
    ann_events = ann.events("client:*", "document:updated")
    engine = server.gw.engine
    original = engine.write
    cuts = 0

    async def write_then_cut(*args: Any, **kw: Any) -> Any:
        nonlocal cuts
        outcome = await original(*args, **kw)
        if cuts == 0:
            cuts += 1
            await cut_transport(ann)  # before the handler can send the ack
        return outcome

    monkeypatch.setattr(engine, "write", write_then_cut)
    result = await ann.update("log-1", 0, {"notes": "concrete poured"}, op_id="op-cut-1")
    assert cuts == 1
    assert (result.status, result.version, result.op_id) == ("duplicate", 1, "op-cut-1")
    view = await engine.get("document", "log-1", company_id="acme")
    assert (view.version, view.data) == (1, {"notes": "concrete poured"})  # applied once

    async with asyncio.timeout(TIMEOUT):
        assert (await ann_events.wait_for("client:disconnected"))["reason"]
        rejoined = await ann_events.wait_for("client:rejoined")
    assert (rejoined["documentId"], rejoined["version"]) == ("log-1", 1)
    # back in the room: a later write by someone else reaches the rejoined client
    await bob.update("log-1", 1, {"notes": "concrete poured, cured"})
    async with asyncio.timeout(TIMEOUT):
        updated = await ann_events.wait_for("document:updated")
    assert updated["version"] == 2 and ann.document("log-1").version == 2  # type: ignore[union-attr]


async def test_writes_made_while_disconnected_go_out_after_the_rejoin(
    connect: Factory, server: Server
) -> None:
    ann = await connect("ann")
    await ann.join("log-2")
    ready = ann.events("client:rejoined")
    await cut_transport(ann)
    first = asyncio.ensure_future(ann.update("log-2", 0, {"a": 1}))
    second = asyncio.ensure_future(ann.update("log-2", 0, {"a": 1, "b": 2}))
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(first, second)
        await ready.next()
    # sent in order after the rejoin: the first applies, the second merges onto it
    assert [r.status for r in results] == ["applied", "merged"]
    assert results[1].version == 2 and results[1].data == {"a": 1, "b": 2}
    assert ann.connected


async def test_resolve_cut_mid_flight_raises_connection_lost(
    connect: Factory, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann, bob = await connect("ann"), await connect("bob")
    await ann.join("punch-2", strategy="manual")
    await bob.join("punch-2")
    await ann.update("punch-2", 0, {"t": "a"})
    held = await bob.update("punch-2", 0, {"t": "b"})
    assert held.conflict_id
    original = server.gw.engine.resolve

    async def resolve_then_cut(*args: Any, **kw: Any) -> Any:
        outcome = await original(*args, **kw)
        await cut_transport(ann)
        return outcome

    monkeypatch.setattr(server.gw.engine, "resolve", resolve_then_cut)
    with pytest.raises(ConnectionLost):
        await ann.resolve("punch-2", held.conflict_id, {"t": "b"})
    async with asyncio.timeout(TIMEOUT):
        await ann.wait_ready()
    assert ann.document("punch-2").version == 2  # type: ignore[union-attr]  # from the rejoin


async def test_polling_transport_and_token_function(connect: Factory, server: Server) -> None:
    calls = 0

    async def token() -> str:
        nonlocal calls
        calls += 1
        return server.token("dan", "acme")

    async with CollabClient(server.url, token, transports=["polling"]) as dan:
        joined = await dan.join("poll-1")
        assert joined.version == 0
        assert (await dan.update("poll-1", 0, {"x": 1})).status == "applied"
    assert calls == 1


async def test_refused_handshake_names_the_reason(server: Server) -> None:
    client = CollabClient(server.url, "not-a-token", reconnection=False)
    with pytest.raises(ConnectionError, match="authentication failed: malformed token"):
        await client.connect()
    await client.close()
