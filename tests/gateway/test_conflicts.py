"""The three strategies end to end, with the seed's document:conflict and conflict:resolved
payloads, and the manual round trip through conflict:resolve."""

from __future__ import annotations

import re

from tests.gateway.conftest import Client, Server

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
CONFLICT_KEYS = {
    "documentId",
    "strategy",
    "conflictedFields",
    "originalValue",
    "incomingValue",
    "timestamp",
    "version",
}


async def setup(
    server: Server, strategy: str, base: dict[str, object], **join: object
) -> tuple[Client, Client, Client]:
    """Writers a and b and a watcher w, all joined to "d" at version 1 (= ``base``)."""
    clients = []
    for user in ("a", "b", "w"):
        c = await server.client(user)
        ack = await c.call("document:join", {"documentId": "d", "strategy": strategy, **join})
        assert ack["strategy"] == strategy
        clients.append(c)
    a, b, w = clients
    await a.call("document:update", {"documentId": "d", "version": 0, "data": base})
    for c in (b, w):
        assert (await c.next("document:updated"))["version"] == 1
    return a, b, w


async def test_last_write_wins(server: Server) -> None:
    a, b, w = await setup(server, "last-write-wins", {"title": "T", "qty": 1, "site": "X"})
    await a.call(
        "document:update",
        {"documentId": "d", "version": 1, "data": {"title": "A", "qty": 1, "site": "X"}},
    )
    for c in (b, w):
        assert (await c.next("document:updated"))["version"] == 2
    # b edits from version 1 without an ack: title conflicts (b arrives later and wins),
    # qty changed on b's side only and is kept.
    await b.send(
        "document:update",
        {"documentId": "d", "version": 1, "data": {"title": "B", "qty": 5, "site": "X"}},
    )
    conflict = await b.next("document:conflict")
    assert set(conflict) == CONFLICT_KEYS
    assert conflict["documentId"] == "d"
    assert conflict["strategy"] == "last-write-wins"
    assert conflict["conflictedFields"] == ["title"]
    assert conflict["originalValue"] == {"title": "A", "qty": 1, "site": "X"}
    assert conflict["incomingValue"] == {"title": "B", "qty": 5, "site": "X"}
    assert ISO.fullmatch(conflict["timestamp"])
    assert conflict["version"] == 3
    resolved = {"title": "B", "qty": 5, "site": "X"}
    for c in (a, b, w):
        event = await c.next("conflict:resolved")
        assert set(event) == CONFLICT_KEYS | {"resolvedValue"}
        assert event["resolvedValue"] == resolved
        assert event["conflictedFields"] == ["title"]
        assert event["version"] == 3
    assert (await b.next("document:updated"))["data"] == resolved
    # The conflict goes to the writer only; the others hear it resolved.
    await a.assert_none("document:conflict")
    await w.assert_none("document:conflict")


async def test_merge_keeps_both_sides_text(server: Server) -> None:
    a, b, w = await setup(
        server, "merge", {"notes": "Pour the slab", "status": "open"}, textFields=["notes"]
    )
    await a.call(
        "document:update",
        {
            "documentId": "d",
            "version": 1,
            "data": {"notes": "Pour the concrete slab", "status": "a"},
        },
    )
    for c in (b, w):
        assert (await c.next("document:updated"))["version"] == 2
    ack = await b.call(
        "document:update",
        {"documentId": "d", "version": 1, "data": {"notes": "Pour the slab today", "status": "b"}},
    )
    merged = {"notes": "Pour the concrete slab today", "status": "b"}
    assert ack["ok"] is True
    assert (ack["status"], ack["version"], ack["data"]) == ("merged", 3, merged)
    assert ack["conflictedFields"] == ["notes", "status"]
    conflict = await b.next("document:conflict")
    assert (conflict["strategy"], conflict["conflictedFields"]) == ("merge", ["notes", "status"])
    assert conflict["incomingValue"] == {"notes": "Pour the slab today", "status": "b"}
    for c in (a, b, w):
        assert (await c.next("conflict:resolved"))["resolvedValue"] == merged
    for c in (a, w):
        assert (await c.next("document:updated"))["data"] == merged
    await b.assert_none("document:updated")  # it asked for an ack


async def test_merge_of_disjoint_edits_is_no_conflict(server: Server) -> None:
    a, b, w = await setup(server, "merge", {"x": 1, "y": 1})
    await a.call("document:update", {"documentId": "d", "version": 1, "data": {"x": 2, "y": 1}})
    ack = await b.call(
        "document:update", {"documentId": "d", "version": 1, "data": {"x": 1, "y": 3}}
    )
    assert (ack["status"], ack["data"]) == ("merged", {"x": 2, "y": 3})
    assert "conflictedFields" not in ack
    assert (await w.next("document:updated"))["version"] == 2
    assert (await w.next("document:updated"))["data"] == {"x": 2, "y": 3}
    await b.assert_none("document:conflict", "conflict:resolved")


async def test_manual_conflict_and_resolution(server: Server) -> None:
    a, b, w = await setup(server, "manual", {"price": 100, "note": "n"})
    await a.call(
        "document:update", {"documentId": "d", "version": 1, "data": {"price": 120, "note": "n"}}
    )
    for c in (b, w):
        assert (await c.next("document:updated"))["version"] == 2
    held = await b.call(
        "document:update", {"documentId": "d", "version": 1, "data": {"price": 90, "note": "n"}}
    )
    assert held["ok"] is True
    assert (held["status"], held["version"]) == ("conflict", 2)
    assert held["conflictedFields"] == ["price"]
    conflict_id = held["conflictId"]
    for c in (a, b, w):  # the whole room, the writer included
        event = await c.next("document:conflict")
        assert set(event) == CONFLICT_KEYS | {"conflictId"}
        assert event["conflictId"] == conflict_id
        assert event["strategy"] == "manual"
        assert event["originalValue"] == {"price": 120, "note": "n"}
        assert event["incomingValue"] == {"price": 90, "note": "n"}
        assert event["version"] == 2
    # Nothing was applied.
    await w.assert_none("document:updated")

    resolved_value = {"price": 105, "note": "agreed"}
    ack = await w.call(
        "conflict:resolve",
        {"documentId": "d", "conflictId": conflict_id, "resolvedValue": resolved_value},
    )
    assert ack == {"ok": True, "version": 3}
    for c in (a, b, w):
        event = await c.next("conflict:resolved")
        assert event["conflictId"] == conflict_id
        assert event["resolvedValue"] == resolved_value
        assert event["version"] == 3
        assert event["conflictedFields"] == ["price"]
        assert event["incomingValue"] == {"price": 90, "note": "n"}
    for c in (a, b):
        event = await c.next("document:updated")
        assert (event["version"], event["data"], event["updatedBy"]) == (3, resolved_value, "w")
    await w.assert_none("document:updated")  # the resolver asked for an ack

    again = await w.call(
        "conflict:resolve",
        {"documentId": "d", "conflictId": conflict_id, "resolvedValue": resolved_value},
    )
    assert again["error"]["code"] == "not_found"


async def test_manual_conflict_without_ack_reaches_the_writer_once(server: Server) -> None:
    a, b, _ = await setup(server, "manual", {"v": 1})
    await a.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 2}})
    await b.next("document:updated")
    await b.send("document:update", {"documentId": "d", "version": 1, "data": {"v": 3}})
    event = await b.next("document:conflict")
    assert event["conflictId"]
    await b.assert_none("document:conflict", "document:updated", "error")
    # Without an ack, the resolution reaches the resolver through the room.
    await b.send(
        "conflict:resolve",
        {"documentId": "d", "conflictId": event["conflictId"], "resolvedValue": {"v": 4}},
    )
    assert (await b.next("conflict:resolved"))["resolvedValue"] == {"v": 4}
    assert (await b.next("document:updated"))["data"] == {"v": 4}


async def test_unknown_conflict_id(server: Server) -> None:
    a, _, _ = await setup(server, "manual", {"v": 1})
    ack = await a.call(
        "conflict:resolve", {"documentId": "d", "conflictId": "nope", "resolvedValue": {"v": 2}}
    )
    assert ack["ok"] is False
    assert ack["error"]["code"] == "not_found"


async def test_conflict_pending(server: Server) -> None:
    a, b, _ = await setup(server, "manual", {"v": 1})
    await a.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 2}})
    first = await b.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 3}})
    assert first["status"] == "conflict"
    second = await b.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 4}})
    assert second["error"]["code"] == "conflict_pending"


async def test_conflict_metrics(server: Server) -> None:
    a, b, _ = await setup(server, "merge", {"v": 1})
    await a.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 2}})
    await b.call("document:update", {"documentId": "d", "version": 1, "data": {"v": 3}})
    text = server.gw.metrics.render().decode()
    assert 'collab_conflicts_total{strategy="merge"} 1.0' in text
    assert 'collab_merge_latency_seconds_count{strategy="merge"} 1.0' in text
