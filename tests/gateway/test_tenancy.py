"""Tenant isolation: a company-B user can neither join, read nor update company A's documents,
and hears nothing of company A (documents, typing, presence, ERP events)."""

from __future__ import annotations

import aiohttp

from tests.gateway.conftest import Server


async def test_company_b_cannot_touch_company_a_documents(server: Server) -> None:
    a = await server.client("alice", "A")
    b = await server.client("bob", "B")
    await a.call("document:join", {"documentId": "plan"})
    await a.call("resource:join", {"resourceId": "crane"})

    ack = await b.call("document:join", {"documentId": "plan"})
    assert (ack["ok"], ack["error"]["code"]) == (False, "forbidden")
    assert "data" not in ack
    ack = await b.call("resource:join", {"resourceId": "crane"})
    assert ack["error"]["code"] == "forbidden"
    for event, payload in [
        ("document:update", {"documentId": "plan", "version": 0, "data": {"x": "pwned"}}),
        ("user:typing", {"documentId": "plan"}),
        ("document:sync", {"documentId": "plan", "message": b"\x00\x00\x01\x00"}),
        ("conflict:resolve", {"documentId": "plan", "conflictId": "c", "resolvedValue": {}}),
        ("resource:update", {"resourceId": "crane", "version": 0, "data": {}}),
    ]:
        ack = await b.call(event, payload)
        assert ack["error"]["code"] == "forbidden", event
    assert set(server.gw.sio.rooms(b.sid)) == {b.sid, "company:B", "user:B:bob"}

    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {server.token('bob', 'B')}"}
        async with http.get(f"{server.url}/api/documents/plan", headers=headers) as r:
            assert r.status == 403
            body = await r.json()
            assert body["error"]["code"] == "forbidden"
            assert "data" not in body


async def test_company_b_hears_nothing_of_company_a(server: Server) -> None:
    b = await server.client("bob", "B")
    a1 = await server.client("alice", "A")
    a2 = await server.client("ann", "A")
    for c in (a1, a2):
        await c.call("document:join", {"documentId": "plan"})
    await a1.call("document:update", {"documentId": "plan", "version": 0, "data": {"x": 1}})
    await a1.call("user:typing", {"documentId": "plan"})
    await server.gw.publisher.publish("project:deleted", "A", {"id": "p1", "companyId": "A"})
    await server.gw.publisher.publish(
        "notification:new",
        "A",
        {
            "id": "n1",
            "title": "t",
            "message": "m",
            "type": "info",
            "userId": "bob",
            "createdAt": "2024-01-15T10:30:00.000Z",
        },
    )
    await a2.next("document:updated")
    await a2.next("user:typing")
    await a2.next("project:deleted")
    await a2.disconnect()
    await b.assert_none(
        "document:updated",
        "user:typing",
        "user:online",
        "user:offline",
        "project:deleted",
        "notification:new",
    )
