"""document:sync: a pycrdt replica and a JSON client editing the same document, binary
messages in and out, the replica's own updates not echoed back."""

from __future__ import annotations

import asyncio
from typing import Any

from pycrdt import Doc, Map, Text, create_sync_message, create_update_message, handle_sync_message

from tests.gateway.conftest import Client, Server, ServerFactory


class Replica:
    """A Yjs replica of one document, speaking y-protocols through a Socket.IO client."""

    def __init__(self, client: Client, doc_id: str) -> None:
        self.client = client
        self.doc_id = doc_id
        self.doc: Doc[Any] = Doc()
        self.root: Map[Any] = self.doc.get("data", type=Map)

    async def sync(self) -> dict[str, Any]:
        ack = await self.client.call(
            "document:sync", {"documentId": self.doc_id, "message": create_sync_message(self.doc)}
        )
        assert ack["ok"] is True
        assert isinstance(ack["message"], bytes)
        handle_sync_message(ack["message"][1:], self.doc)
        return dict(ack)

    async def edit(self, change: Any, *, acked: bool = True) -> Any:
        state = self.doc.get_state()
        with self.doc.transaction():
            change(self.root)
        message = create_update_message(self.doc.get_update(state))
        payload = {"documentId": self.doc_id, "message": message}
        if acked:
            return await self.client.call("document:sync", payload)
        await self.client.send("document:sync", payload)
        return None

    async def receive(self) -> None:
        event = await self.client.next("document:sync")
        assert event["documentId"] == self.doc_id
        assert isinstance(event["message"], bytes)
        handle_sync_message(event["message"][1:], self.doc)

    def json(self) -> dict[str, Any]:
        return {
            k: (str(v) if isinstance(v, Text) else v) for k, v in (self.root.to_py() or {}).items()
        }


async def setup(server: Server, **join: Any) -> tuple[Client, Replica]:
    json_client = await server.client("jason")
    yjs_client = await server.client("yara")
    for c in (json_client, yjs_client):
        await c.call("document:join", {"documentId": "d", **join})
    return json_client, Replica(yjs_client, "d")


async def test_replica_and_json_client_see_each_other(server: Server) -> None:
    j, r = await setup(server, textFields=["notes"])
    await j.call(
        "document:update", {"documentId": "d", "version": 0, "data": {"notes": "hello", "qty": 1}}
    )
    assert (await r.client.next("document:updated"))["version"] == 1  # a JSON member too
    await r.sync()
    assert r.json() == {"notes": "hello", "qty": 1}

    def type_world(root: Map[Any]) -> None:
        root["notes"].insert(5, " world")
        root["qty"] = 2

    ack = await r.edit(type_world)
    assert (ack["ok"], ack["version"], ack["status"]) == (True, 2, "applied")
    assert "message" not in ack
    updated = await j.next("document:updated")
    assert updated == {
        "documentId": "d",
        "version": 2,
        "data": {"notes": "hello world", "qty": 2},
        "updatedBy": "yara",
        "updatedAt": updated["updatedAt"],
    }
    await r.client.assert_none("document:sync", "document:updated")  # not echoed

    await j.call(
        "document:update",
        {"documentId": "d", "version": 2, "data": {"notes": "hello world!", "qty": 3}},
    )
    await r.receive()
    assert r.json() == {"notes": "hello world!", "qty": 3}


async def test_json_view_after_a_burst_of_yjs_edits_is_the_last_state(server: Server) -> None:
    j, r = await setup(server, textFields=["notes"])
    await r.sync()
    for i in range(5):
        await r.edit(lambda root, i=i: root["notes"].insert(i, str(i)))
    # Coalesced or not, the last document:updated carries the last version.
    while True:
        event = await j.next("document:updated")
        if event["version"] == 5:
            break
    assert event["data"] == {"notes": "01234"}
    view = await j.call("document:join", {"documentId": "d"})
    assert (view["version"], view["data"]) == (5, {"notes": "01234"})


async def test_step1_without_ack_is_answered_by_an_event(server: Server) -> None:
    j, r = await setup(server)
    await j.call("document:update", {"documentId": "d", "version": 0, "data": {"k": "v"}})
    await r.client.send("document:sync", {"documentId": "d", "message": create_sync_message(r.doc)})
    await r.receive()
    assert r.json() == {"k": "v"}


async def test_two_replicas_converge(server: Server) -> None:
    a = Replica(await server.client("a"), "d")
    b = Replica(await server.client("b"), "d")
    for rep in (a, b):
        await rep.client.call("document:join", {"documentId": "d", "textFields": ["t"]})
        await rep.sync()
    await a.edit(lambda root: root["t"].insert(0, "abc"), acked=False)
    await b.receive()
    assert b.json()["t"] == "abc"
    await b.edit(lambda root: root["t"].insert(3, "def"))
    await a.receive()
    assert a.json() == b.json() == {"t": "abcdef"}
    # Without an ack the Yjs writer learns its outcome from a document:updated (coalesced, it
    # may carry a later state); a replica whose writes were acknowledged hears none.
    assert (await a.client.next("document:updated"))["version"] >= 1
    await b.client.assert_none("document:updated")


async def test_yjs_writes_reach_json_members_not_replicas(server: Server) -> None:
    """CONTRACT.md: "JSON members of the room get document:updated for such writes"; a
    replica has them as document:sync. JSON writes reach every member, replicas included."""
    j, r = await setup(server, textFields=["notes"])
    other = Replica(await server.client("otto"), "d")
    await other.client.call("document:join", {"documentId": "d"})
    for rep in (r, other):
        await rep.sync()
    ack = await r.edit(lambda root: root["notes"].insert(0, "hi"))
    assert (await j.next("document:updated"))["version"] == ack["version"] == 1
    await other.receive()
    assert other.json() == {"notes": "hi"}
    for rep in (r, other):
        await rep.client.assert_none("document:updated")

    await j.call("document:update", {"documentId": "d", "version": 1, "data": {"notes": "hi!"}})
    for rep in (r, other):
        assert (await rep.client.next("document:updated"))["version"] == 2
        await rep.receive()
        assert rep.json() == {"notes": "hi!"}

    # Leaving and joining again makes a JSON member of a former replica.
    await other.client.call("document:leave", {"documentId": "d"})
    await other.client.call("document:join", {"documentId": "d"})
    await r.edit(lambda root: root["notes"].insert(3, "?"))
    assert (await other.client.next("document:updated"))["data"] == {"notes": "hi!?"}
    assert (await j.next("document:updated"))["version"] == 3
    await r.client.assert_none("document:updated")


async def test_sync_requires_a_join(server: Server) -> None:
    c = await server.client()
    ack = await c.call("document:sync", {"documentId": "d", "message": create_sync_message(Doc())})
    assert ack["error"]["code"] == "forbidden"


def _updated_sent(server: Server) -> float:
    sent: float = server.gw.metrics.sent.labels(event="document:updated")._value.get()
    return sent


async def test_the_json_view_of_a_yjs_write_is_built_for_whoever_it_may_reach(
    make_server: ServerFactory,
) -> None:
    """A Yjs write's ``document:updated`` (and so its JSON view, a conversion of the texts)
    is built only when it may reach someone: not for a room of replicas alone, but for a
    JSON member whose connection dropped and whose session is held, since its recovery
    replays what it missed from the log."""
    server = await make_server(recovery_window=30)
    r = Replica(await server.client("yara"), "d")
    await r.client.call("document:join", {"documentId": "d", "textFields": ["notes"]})
    await r.sync()
    before = _updated_sent(server)
    await r.edit(lambda root: root["notes"].insert(0, "a"))
    await asyncio.sleep(0.2)  # past the coalescing window (50 ms)
    await r.client.barrier()
    assert _updated_sent(server) == before  # nobody to tell

    # A JSON member that opted into recovery, dropped: held.
    member = await server.client("jason", auth={"token": server.token("jason", "c1")})
    await member.call("document:join", {"documentId": "d"})
    await member.sio.eio.disconnect()
    for _ in range(500):
        if server.gw.recovery.stats()["held"] == 1:
            break
        await asyncio.sleep(0.01)
    assert server.gw.recovery.stats()["held"] == 1
    ack = await r.edit(lambda root: root["notes"].insert(1, "b"))
    assert ack["version"] == 2
    for _ in range(500):
        if _updated_sent(server) > before:
            break
        await asyncio.sleep(0.01)
    assert _updated_sent(server) == before + 1
