"""document:join / document:leave and resource:join / resource:leave."""

from __future__ import annotations

from tests.gateway.conftest import Server


async def test_join_creates_an_unknown_document_empty(server: Server) -> None:
    c = await server.client()
    ack = await c.call(
        "document:join", {"documentId": "new", "strategy": "manual", "textFields": ["notes"]}
    )
    assert ack == {
        "ok": True,
        "documentId": "new",
        "version": 0,
        "data": {"notes": ""},
        "strategy": "manual",
        "textFields": ["notes"],
        "conflicts": [],
    }


async def test_join_reports_current_state_and_default_strategy(server: Server) -> None:
    a = await server.client("a")
    assert (await a.call("document:join", {"documentId": "d"}))["strategy"] == "merge"
    await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    b = await server.client("b")
    ack = await b.call("document:join", {"documentId": "d", "version": 0, "strategy": "manual"})
    assert (ack["version"], ack["data"], ack["strategy"]) == (1, {"x": 1}, "merge")


async def test_resource_join_defaults_to_last_write_wins(server: Server) -> None:
    c = await server.client()
    ack = await c.call("resource:join", {"resourceId": "crane-7"})
    assert ack["resourceId"] == "crane-7"
    assert ack["strategy"] == "last-write-wins"
    assert "documentId" not in ack


async def test_documents_and_resources_are_separate(server: Server) -> None:
    c = await server.client()
    await c.call("document:join", {"documentId": "same"})
    await c.call("document:update", {"documentId": "same", "version": 0, "data": {"d": 1}})
    ack = await c.call("resource:join", {"resourceId": "same"})
    assert (ack["version"], ack["data"]) == (0, {})
    # Joined the resource, not the document of the same id: and vice versa.
    denied = await c.call("resource:update", {"resourceId": "other", "version": 0, "data": {}})
    assert denied["error"]["code"] == "forbidden"


async def test_update_requires_join_and_leave_ends_it(server: Server) -> None:
    a = await server.client("a")
    b = await server.client("b")
    update = {"documentId": "d", "version": 0, "data": {"x": 1}}
    ack = await a.call("document:update", update)
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    await a.call("document:join", {"documentId": "d"})
    await b.call("document:join", {"documentId": "d"})
    assert (await b.call("document:leave", {"documentId": "d"})) == {"ok": True}
    assert (await a.call("document:update", update))["status"] == "applied"
    await b.assert_none("document:updated")
    again = await b.call("document:update", {"documentId": "d", "version": 1, "data": {}})
    assert again["error"]["code"] == "forbidden"


async def test_resource_leave(server: Server) -> None:
    c = await server.client()
    await c.call("resource:join", {"resourceId": "r"})
    assert await c.call("resource:leave", {"resourceId": "r"}) == {"ok": True}
    ack = await c.call("resource:update", {"resourceId": "r", "version": 0, "data": {}})
    assert ack["error"]["code"] == "forbidden"


async def test_join_lists_pending_manual_conflicts(server: Server) -> None:
    a = await server.client("a")
    await a.call("document:join", {"documentId": "m", "strategy": "manual"})
    await a.call("document:update", {"documentId": "m", "version": 0, "data": {"t": "a"}})
    await a.call("document:update", {"documentId": "m", "version": 1, "data": {"t": "b"}})
    held = await a.call("document:update", {"documentId": "m", "version": 1, "data": {"t": "c"}})
    assert held["status"] == "conflict"
    b = await server.client("b")
    ack = await b.call("document:join", {"documentId": "m"})
    [conflict] = ack["conflicts"]
    assert conflict["conflictId"] == held["conflictId"]
    assert conflict["conflictedFields"] == ["t"]
    assert conflict["incomingValue"] == {"t": "c"}
