"""Several gateway processes on one Redis (fan-out, store, presence): every event crosses
nodes, tenants stay apart, concurrent writes make one history, presence is once per user
cluster-wide (a killed node's users go offline after the TTL, once), ``opId`` holds across
nodes, a rejoining client learns what it missed, and a Redis outage degrades health without
stopping local service.

Real processes (``tests.gateway.cluster``). Events relayed through Redis are not ordered with
anything this test can wait on, so "nothing else arrives" is checked after :data:`SETTLE`.
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from typing import Any

from collab.engine import Engine
from collab.store import open_store
from tests.gateway.cluster import (
    Cluster,
    ClusterFactory,
    GatewayProcess,
    eventually,
    make_cluster,
)
from tests.gateway.conftest import Client, ServerFactory

__all__ = ["make_cluster"]  # the fixture, used by name

#: Seconds after which an event relayed through Redis would have arrived.
SETTLE = 0.5


def project(pid: str, company: str = "c1") -> dict[str, Any]:
    return {
        "id": pid,
        "name": "Tower",
        "companyId": company,
        "status": "planning",
        "createdAt": "2024-01-15T10:30:00.000Z",
    }


async def next_about(client: Client, event: str, user: str, wait: float = 10.0) -> Any:
    """The next ``event`` about ``user`` (others' events of that name are skipped)."""
    async with asyncio.timeout(wait):
        while True:
            data = await client.next(event, wait)
            if data.get("userId") == user:
                return data


async def settled(client: Client, event: str, user: str | None = None) -> list[Any]:
    """Everything of ``event`` (about ``user``) received within :data:`SETTLE` from now."""
    await asyncio.sleep(SETTLE)
    return [d for d in client.received(event) if user is None or d.get("userId") == user]


async def test_every_event_crosses_nodes_and_tenants_stay_apart(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    alice = await n1.client("alice", "c1", name="Alice")
    bob = await n2.client("bob", "c1", name="Bob")
    eve = await n2.client("eve", "c2")

    # ERP events published on node 1 reach the company's clients on node 2, and only them.
    await n1.post_event("project:created", "c1", project("p1"))
    assert await bob.next("project:created") == project("p1")
    assert await alice.next("project:created") == project("p1")
    task = {"taskId": "t1", "taskName": "Pour", "assignedTo": "bob", "assignedBy": "Ann"}
    await n1.post_event("task:assigned", "c1", {**task, "projectId": "p1"})
    assert (await bob.next("task:assigned"))["taskId"] == "t1"

    # Documents: a write on node 1 is heard on node 2; typing on node 2 is heard on node 1.
    for c in (alice, bob):
        assert (await c.call("document:join", {"documentId": "d"}))["ok"] is True
    ack = await alice.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    assert (ack["ok"], ack["version"]) == (True, 1)
    updated = await bob.next("document:updated")
    assert (updated["version"], updated["data"], updated["updatedBy"]) == (1, {"x": 1}, "alice")
    assert (await bob.call("user:typing", {"documentId": "d"}))["ok"] is True
    typing = await alice.next("user:typing")
    assert (typing["userId"], typing["resourceId"]) == ("bob", "d")

    # Another company's user on node 2: no access to the document created on node 1.
    refused = await eve.call("document:join", {"documentId": "d"})
    assert refused["error"]["code"] == "forbidden"
    refused = await eve.call("document:update", {"documentId": "d", "version": 1, "data": {}})
    assert refused["ok"] is False
    for event in ("project:created", "task:assigned", "document:updated", "user:typing"):
        assert await settled(eve, event) == [], event
    assert alice.received("task:assigned") == []


async def concurrent_inserts(cluster: Cluster, rounds: int = 5) -> tuple[list[Any], list[str]]:
    """Three writers on each node insert text into one ``merge`` document, all from the same
    base at first, then each from its last ack, all at once: the acks and the inserts."""
    writers = [await node.client(f"w{i}") for i in range(3) for node in cluster.nodes]
    join = {"documentId": "m", "strategy": "merge", "textFields": ["body"]}
    for w in writers:
        assert (await w.call("document:join", join))["version"] == 0
    rng = random.Random(7)
    acks: list[dict[str, Any]] = []
    tokens: list[str] = []

    async def write(i: int, w: Client) -> None:
        version, body = 0, ""
        for r in range(rounds):
            # Three characters no other insert uses, put between two earlier inserts: the
            # text diff can only see it as itself, so it must survive whole.
            k = 3 * (i * rounds + r)
            token = "".join(chr(0x4E00 + k + j) for j in range(3))
            at = 3 * rng.randint(0, len(body) // 3)
            data = {"body": body[:at] + token + body[at:]}
            ack = await w.call(
                "document:update", {"documentId": "m", "version": version, "data": data}
            )
            assert ack["ok"] is True, ack
            assert ack["status"] in ("applied", "merged")
            acks.append(ack)
            tokens.append(token)
            version, body = ack["version"], ack["data"]["body"]

    await asyncio.gather(*(write(i, w) for i, w in enumerate(writers)))
    return acks, tokens


async def test_concurrent_stale_writes_on_both_nodes_make_one_linear_history(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster()
    acks, _ = await concurrent_inserts(cluster)
    versions = sorted(a["version"] for a in acks)
    assert versions == list(range(1, len(acks) + 1))  # no gap, no repeat
    async with Engine(open_store(cluster.store_url)) as engine:
        _, history = await engine.history("document", "m")
        view = await engine.get("document", "m", company_id="c1")
    assert [row["version"] for row in history] == versions
    assert view.version == len(acks)


async def test_concurrent_stale_writes_on_both_nodes_keep_every_insert_once(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    alice = await n1.client("alice")
    writers = [await n2.client(f"w{i}") for i in range(5)]
    tokens: list[str] = []

    def token() -> str:
        k = 3 * len(tokens)
        tokens.append("".join(chr(0x4E00 + k + j) for j in range(3)))
        return tokens[-1]

    async def insert(c: Client, doc: str, version: int, body: str) -> dict[str, Any]:
        data = {"body": body + token()}
        ack = await c.call("document:update", {"documentId": doc, "version": version, "data": data})
        assert ack["ok"] is True, ack
        return dict(ack)

    for doc in ("m1", "m2", "m3"):
        join = {"documentId": doc, "strategy": "merge", "textFields": ["body"]}
        for c in (alice, *writers):
            await c.call("document:join", join)  # both nodes now hold the document at v0
        await insert(alice, doc, 0, "")  # v1 on node 1: node 2's copy is behind
        # Node 2's writers all at once from v0: node 2 pipelines them on its stale copy.
        acks = await asyncio.gather(*(insert(w, doc, 0, "") for w in writers))
        # Each goes on from what its ack said the document was.
        await asyncio.gather(
            *(
                insert(w, doc, a["version"], a["data"]["body"])
                for w, a in zip(writers, acks, strict=True)
            )
        )
    async with Engine(open_store(cluster.store_url)) as engine:
        bodies = [
            (await engine.get("document", d, company_id="c1")).data["body"]
            for d in ("m1", "m2", "m3")
        ]
    text = "".join(bodies)
    assert [t for t in tokens if text.count(t) != 1] == []
    assert len(text) == 3 * len(tokens)


async def test_a_join_on_another_node_sees_the_latest_state(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    a, b = await n1.client("alice"), await n2.client("bob")
    for c in (a, b):
        await c.call("document:join", {"documentId": "s"})  # both nodes now hold it at v0
    for v in range(3):
        await a.call("document:update", {"documentId": "s", "version": v, "data": {"n": v}})
    assert (await b.next("document:updated"))["version"] == 1  # events do cross
    late = await n2.client("carol")
    ack = await late.call("document:join", {"documentId": "s"})
    assert (ack["version"], ack["data"]) == (3, {"n": 2})


async def test_presence_is_once_per_user_across_nodes(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    observers = [await n1.client("obs1"), await n2.client("obs2")]

    tab1 = await n1.client("alice")
    for o in observers:
        assert (await next_about(o, "user:online", "alice"))["status"] == "online"
    tab2 = await n2.client("alice")
    await tab1.disconnect()
    for o in observers:
        assert await settled(o, "user:online", "alice") == []
        assert await settled(o, "user:offline", "alice") == []
    await tab2.disconnect()
    for o in observers:
        assert (await next_about(o, "user:offline", "alice"))["status"] == "offline"
        assert await settled(o, "user:offline", "alice") == []


async def test_a_killed_nodes_users_go_offline_after_the_ttl_once(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(presence_ttl=1.5)
    n1, n2 = cluster.nodes
    n3 = await cluster.node("node3", presence_ttl=1.5)
    observers = [await n1.client("obs1"), await n2.client("obs2")]
    await n3.client("carol")  # carol's only connection
    await n3.client("dave")
    await n1.client("dave")  # dave also has a tab on a node that survives
    for o in observers:
        await next_about(o, "user:online", "carol")
        await next_about(o, "user:online", "dave")

    n3.kill(signal.SIGKILL)
    for o in observers:
        offline = await next_about(o, "user:offline", "carol", wait=10)
        assert offline["status"] == "offline"
    await asyncio.sleep(1.5)  # another TTL: nobody announces carol twice, nor dave at all
    for o in observers:
        assert await settled(o, "user:offline", "carol") == []
        assert await settled(o, "user:offline", "dave") == []


async def test_op_id_is_idempotent_across_nodes(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    a, b = await n1.client("alice"), await n2.client("bob")
    for c in (a, b):
        await c.call("document:join", {"documentId": "o"})
    write = {"documentId": "o", "version": 0, "data": {"x": 1}, "opId": "op-1"}
    first = await a.call("document:update", write)
    assert (first["status"], first["version"]) == ("applied", 1)
    again = await b.call("document:update", write)
    assert (again["ok"], again["status"], again["version"]) == (True, "duplicate", 1)
    other = await b.call("document:update", {**write, "opId": "op-2", "data": {"y": 2}})
    assert (other["status"], other["version"]) == ("merged", 2)
    assert (await a.call("document:update", write))["status"] == "duplicate"


async def test_a_rejoining_client_learns_what_it_missed(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster()
    n1, n2 = cluster.nodes
    a = await n1.client("alice")
    await a.call("document:join", {"documentId": "r"})
    for v in range(3):
        await a.call("document:update", {"documentId": "r", "version": v, "data": {"n": v}})

    b = await n2.client("bob")  # e.g. alice's colleague, back from a network blip at v1
    ack = await b.call("document:join", {"documentId": "r", "version": 1})
    assert (ack["version"], ack["data"], ack["historyGone"]) == (3, {"n": 2}, False)
    assert [(m["version"], m["updatedBy"], m["status"]) for m in ack["missed"]] == [
        (2, "alice", "applied"),
        (3, "alice", "applied"),
    ]
    assert all(m["updatedAt"].endswith("Z") for m in ack["missed"])
    ack = await b.call("document:join", {"documentId": "r", "version": 3})
    assert (ack["missed"], ack["historyGone"]) == ([], False)
    ack = await b.call("document:join", {"documentId": "r", "version": 9})
    assert (ack["missed"], ack["historyGone"]) == ([], True)
    ack = await b.call("document:join", {"documentId": "r"})
    assert "missed" not in ack and "historyGone" not in ack


async def test_rejoining_from_before_the_retained_history(make_server: ServerFactory) -> None:
    server = await make_server(history_limit=2)
    c = await server.client()
    await c.call("document:join", {"documentId": "h"})
    for v in range(8):
        ack = await c.call("document:update", {"documentId": "h", "version": v, "data": {"n": v}})
        assert ack["version"] == v + 1
    ack = await c.call("document:join", {"documentId": "h", "version": 0})
    assert (ack["version"], ack["missed"], ack["historyGone"]) == (8, [], True)
    ack = await c.call("document:join", {"documentId": "h", "version": 7})
    assert [m["version"] for m in ack["missed"]] == [8] and ack["historyGone"] is False
    refused = await c.call("document:join", {"documentId": "h", "version": -1})
    assert refused["error"]["code"] == "invalid_payload"
    refused = await c.call("document:join", {"documentId": "new", "version": -1})
    assert refused["error"]["code"] == "invalid_payload"
    assert await server.gw.engine.store.load("document:new") is None  # refused: nothing made


async def test_redis_outage_degrades_health_but_not_local_service(
    make_cluster: ClusterFactory,
) -> None:
    cluster = await make_cluster(aof=True)  # the store's data survives the restart
    n1, n2 = cluster.nodes
    a, a2 = await n1.client("alice"), await n1.client("ann")
    b = await n2.client("bob")
    for c in (a, a2, b):
        await c.call("document:join", {"documentId": "d"})

    cluster.redis.kill()

    async def unhealthy() -> bool:
        status, body = await n1.health()
        return status == 503 and {"store", "redis.fanout", "redis.presence"} <= set(body["failing"])

    await eventually(unhealthy)
    _, body = await n1.health()
    assert body["status"] == "degraded" and body["redis"]["ok"] is False
    # Local clients are still served: events reach this node's sockets without Redis.
    await n1.post_event("project:created", "c1", project("local"))
    assert (await a2.next("project:created"))["id"] == "local"
    assert (await a.call("user:typing", {"documentId": "d"}))["ok"] is True
    assert (await a2.next("user:typing"))["userId"] == "alice"
    failed = await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 0}})
    assert failed["ok"] is False  # the store is Redis: writes wait for it to return

    cluster.redis.start()  # same port, from its AOF

    async def healthy() -> bool:
        return [(await node.health())[0] for node in (n1, n2)] == [200, 200]

    await eventually(healthy, within=15)
    await crosses(n1, b)
    ack = await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    assert ack["ok"] is True, ack
    assert (await b.next("document:updated"))["data"] == {"x": 1}


async def crosses(origin: GatewayProcess, receiver: Client) -> None:
    """Wait until an event published on ``origin`` reaches ``receiver`` (on another node)."""
    async with asyncio.timeout(15):
        while True:
            marker = uuid.uuid4().hex
            await origin.post_event("project:created", "c1", project(marker))
            try:
                while (await receiver.next("project:created", 0.5))["id"] != marker:
                    pass
                return
            except TimeoutError:
                continue
