"""user:typing: relayed to the document room as the seed's payload, never echoed to its
sender, throttled per user and document."""

from __future__ import annotations

from tests.gateway.conftest import Server, ServerFactory


async def test_typing_is_relayed_but_not_echoed(server: Server) -> None:
    a = await server.client("a", name="Alice")
    b = await server.client("b", name="Bob")
    outsider = await server.client("c")
    for c in (a, b):
        await c.call("document:join", {"documentId": "d"})
    ack = await a.call("user:typing", {"documentId": "d", "userId": "b", "userName": "Mallory"})
    assert ack == {"ok": True}
    assert await b.next("user:typing") == {
        "userId": "a",
        "userName": "Alice",
        "resourceId": "d",
        "resourceType": "document",
    }
    await a.assert_none("user:typing")
    await outsider.assert_none("user:typing")  # same company, not in the document


async def test_typing_without_name_claim_uses_the_user_id(server: Server) -> None:
    a = await server.client("a")
    b = await server.client("b")
    for c in (a, b):
        await c.call("document:join", {"documentId": "d"})
    await a.send("user:typing", {"documentId": "d"})
    assert (await b.next("user:typing"))["userName"] == "a"


async def test_typing_is_throttled_per_user_and_document(make_server: ServerFactory) -> None:
    server = await make_server(typing_throttle_ms=600_000)
    a = await server.client("a")
    b = await server.client("b")
    for c in (a, b):
        await c.call("document:join", {"documentId": "d"})
        await c.call("document:join", {"documentId": "e"})
    assert await a.call("user:typing", {"documentId": "d"}) == {"ok": True}
    assert await a.call("user:typing", {"documentId": "d"}) == {"ok": True, "throttled": True}
    assert await a.call("user:typing", {"documentId": "e"}) == {"ok": True}
    assert await b.call("user:typing", {"documentId": "d"}) == {"ok": True}
    await b.barrier()
    assert [e["resourceId"] for e in b.received("user:typing")] == ["d", "e"]


async def test_typing_requires_join(server: Server) -> None:
    a = await server.client("a")
    ack = await a.call("user:typing", {"documentId": "d"})
    assert ack["error"]["code"] == "forbidden"
