"""Resources: resource:update, last-write-wins ordered by the client's timestamp (ISO string or
epoch milliseconds), resource:updated and resource conflict events carrying resourceId."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.gateway.conftest import Client, Server

T0 = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


def iso(seconds: float) -> str:
    ts = T0.timestamp() + seconds
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(seconds: float) -> float:
    return (T0.timestamp() + seconds) * 1000


async def two(server: Server) -> tuple[Client, Client]:
    a = await server.client("a")
    b = await server.client("b")
    for c in (a, b):
        assert (await c.call("resource:join", {"resourceId": "crane"}))["ok"] is True
    return a, b


async def test_resource_updated_goes_to_the_resource_room(server: Server) -> None:
    a, b = await two(server)
    ack = await a.call(
        "resource:update",
        {"resourceId": "crane", "version": 0, "data": {"site": "north"}, "timestamp": iso(0)},
    )
    assert (ack["status"], ack["version"]) == ("applied", 1)
    event = await b.next("resource:updated")
    assert set(event) == {"resourceId", "version", "data", "updatedBy", "updatedAt"}
    assert (event["resourceId"], event["data"], event["updatedBy"]) == (
        "crane",
        {"site": "north"},
        "a",
    )
    await a.assert_none("resource:updated", "document:updated")


async def test_later_timestamp_wins_whatever_the_arrival_order(server: Server) -> None:
    a, b = await two(server)
    await a.call(
        "resource:update",
        {"resourceId": "crane", "version": 0, "data": {"site": "north"}, "timestamp": iso(10)},
    )
    await b.next("resource:updated")
    # b edited from version 0 earlier (older timestamp) and arrives later: a's value stays.
    await b.send(
        "resource:update",
        {"resourceId": "crane", "version": 0, "data": {"site": "south"}, "timestamp": iso(5)},
    )
    conflict = await b.next("document:conflict")
    assert conflict["resourceId"] == "crane"
    assert "documentId" not in conflict
    assert (conflict["strategy"], conflict["conflictedFields"]) == ("last-write-wins", ["site"])
    resolved = await a.next("conflict:resolved")
    assert resolved["resourceId"] == "crane"
    assert resolved["resolvedValue"] == {"site": "north"}
    updated = await b.next("resource:updated")
    assert (updated["version"], updated["data"]) == (2, {"site": "north"})

    # Epoch milliseconds work too: newer than both, so it wins.
    ack = await b.call(
        "resource:update",
        {"resourceId": "crane", "version": 1, "data": {"site": "east"}, "timestamp": ms(20)},
    )
    assert (ack["status"], ack["data"]) == ("merged", {"site": "east"})


async def test_missing_timestamp_orders_by_arrival(server: Server) -> None:
    a, _ = await two(server)
    ack = await a.call("resource:update", {"resourceId": "crane", "version": 0, "data": {"k": 1}})
    assert ack["status"] == "applied"


async def test_naive_timestamp_is_refused(server: Server) -> None:
    a, _ = await two(server)
    ack = await a.call(
        "resource:update",
        {"resourceId": "crane", "version": 0, "data": {}, "timestamp": "2024-01-15T10:30:00"},
    )
    assert ack["error"]["code"] == "invalid_payload"
    assert "UTC offset" in ack["error"]["message"]


async def test_manual_resource_conflict_resolves_with_resource_id(server: Server) -> None:
    a = await server.client("a")
    b = await server.client("b")
    for c in (a, b):
        await c.call("resource:join", {"resourceId": "bay", "strategy": "manual"})
    await a.call("resource:update", {"resourceId": "bay", "version": 0, "data": {"crew": 3}})
    await b.next("resource:updated")
    held = await b.call("resource:update", {"resourceId": "bay", "version": 0, "data": {"crew": 4}})
    assert held["status"] == "conflict"
    conflict = await a.next("document:conflict")
    assert (conflict["resourceId"], conflict["conflictId"]) == ("bay", held["conflictId"])
    ack = await a.call(
        "conflict:resolve",
        {"resourceId": "bay", "conflictId": held["conflictId"], "resolvedValue": {"crew": 5}},
    )
    assert ack == {"ok": True, "version": 2}
    resolved = await b.next("conflict:resolved")
    assert (resolved["resourceId"], resolved["resolvedValue"]) == ("bay", {"crew": 5})
    assert (await b.next("resource:updated"))["data"] == {"crew": 5}
