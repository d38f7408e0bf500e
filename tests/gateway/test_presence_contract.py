"""The presence contract, run against every backend: the in-memory reference and Redis.

Several :class:`NodePresence` share one backend, as the nodes of a cluster share one Redis.
A user is online once however many connections on however many nodes, offline once after the
last one closes or after the node holding it dies (its entries expire after ``ttl``), and
exactly one surviving node announces it. A node cut off from the backend catches up at its
next heartbeat, announcing what it could not.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from gateway.presence import (
    Backend,
    Changes,
    MemoryBackend,
    NodePresence,
    RedisBackend,
    SyncReply,
)
from tests.store.redis_server import RedisServer

TTL = 0.6


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(Path(tmp_path_factory.mktemp("presence-redis"))) as server:
        yield server.url


class Flaky:
    """A backend proxy that fails every call while ``down`` (an unreachable Redis)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self.down = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.backend, name)

        async def call(*args: Any) -> Any:
            if self.down and name != "close":
                raise ConnectionError("backend down")
            return await target(*args)

        return call


class Nodes:
    """Nodes of one cluster over one backend, and a way to make the backend lose its data."""

    def __init__(self, make_backend: Callable[[], Backend], wipe: Callable[[], Any]) -> None:
        self.make_backend = make_backend
        self.wipe = wipe
        self.started: list[NodePresence] = []

    async def node(self, name: str) -> tuple[NodePresence, Flaky]:
        flaky = Flaky(self.make_backend())
        node = NodePresence(flaky, node=name, ttl=TTL)  # type: ignore[arg-type]
        await node.start()
        self.started.append(node)
        return node, flaky


@pytest_asyncio.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    if request.param == "memory":
        shared = MemoryBackend()

        async def wipe_memory() -> None:
            shared.__init__()  # type: ignore[misc]

        yield Nodes(lambda: shared, wipe_memory)
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"presence-{uuid.uuid4().hex[:8]}:"
    admin = Redis.from_url(url)

    async def wipe_redis() -> None:
        keys = [k async for k in admin.scan_iter(match=prefix + "*")]
        if keys:
            await admin.delete(*keys)

    result = Nodes(lambda: RedisBackend(url, prefix=prefix), wipe_redis)
    yield result
    for node in result.started:
        await node.stop()
    await admin.aclose()


def users(changes: Changes) -> tuple[list[str], list[str]]:
    return sorted(u for _, u in changes.online), sorted(u for _, u in changes.offline)


async def test_once_per_user_across_tabs_and_nodes(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    b, _ = await nodes.node("b")
    assert await a.connect("c1", "alice", "s1") is True
    assert await a.connect("c1", "alice", "s2") is False
    assert await b.connect("c1", "alice", "s3") is False
    assert await b.online("c1") == ["alice"]
    assert await a.disconnect("c1", "alice", "s1") is False
    assert await b.disconnect("c1", "alice", "s3") is False
    assert await a.disconnect("c1", "alice", "s2") is True
    assert await a.online("c1") == []


async def test_calls_are_idempotent_per_socket(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    assert await a.connect("c1", "alice", "s1") is True
    assert await a.connect("c1", "alice", "s1") is False
    assert await a.disconnect("c1", "alice", "s1") is True
    assert await a.disconnect("c1", "alice", "s1") is False
    assert await a.disconnect("c1", "bob", "never") is False


async def test_online_is_per_company(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "alice", "s1")
    await b.connect("c2", "bob", "s2")
    await b.connect("c1", "carol", "s3")
    assert await a.online("c1") == ["alice", "carol"]
    assert await a.online("c2") == ["bob"]
    assert await a.online("c3") == []


async def test_a_dead_nodes_users_go_offline_once(nodes: Nodes) -> None:
    dead, _ = await nodes.node("dead")
    b, _ = await nodes.node("b")
    c, _ = await nodes.node("c")
    await dead.connect("c1", "only-dead", "s1")
    await dead.connect("c1", "only-dead", "s2")
    await dead.connect("c1", "both", "s3")
    await b.connect("c1", "both", "s4")
    await asyncio.sleep(TTL / 2)
    assert users(await b.heartbeat()) == ([], [])  # not dead yet
    await asyncio.sleep(TTL * 1.5)  # "dead" stopped beating; b and c go on
    found = await asyncio.gather(b.heartbeat(), c.heartbeat())
    offline = [u for changes in found for u in users(changes)[1]]
    assert offline == ["only-dead"]  # exactly one survivor announces it
    assert await b.online("c1") == ["both"]
    assert users(await b.heartbeat()) == ([], [])


async def test_a_heartbeat_keeps_a_node_alive(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "alice", "s1")
    for _ in range(8):
        await asyncio.sleep(TTL / 4)
        assert users(await a.heartbeat()) == ([], [])
        assert users(await b.heartbeat()) == ([], [])
    assert await b.online("c1") == ["alice"]


async def test_a_reaped_node_registers_again(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "alice", "s1")
    await a.connect("c1", "bob", "s2")
    await b.connect("c1", "bob", "s3")
    await asyncio.sleep(TTL * 1.5)  # a stalled longer than its ttl
    assert users(await b.heartbeat()) == ([], ["alice"])
    # a learns it was reaped: calls defer, its next heartbeat registers everything again.
    assert await a.connect("c1", "carol", "s4") is False
    assert await a.disconnect("c1", "bob", "s2") is False
    assert users(await a.heartbeat()) == (["alice", "carol"], [])
    assert await b.online("c1") == ["alice", "bob", "carol"]
    assert await a.disconnect("c1", "alice", "s1") is True


async def test_calls_that_fail_are_announced_at_the_next_heartbeat(nodes: Nodes) -> None:
    a, flaky = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "leaves", "s1")
    await a.connect("c1", "stays", "s2")
    await b.connect("c1", "elsewhere", "s3")
    flaky.down = True
    assert await a.disconnect("c1", "leaves", "s1") is False
    assert await a.connect("c1", "arrives", "s4") is False
    assert await a.connect("c1", "elsewhere", "s5") is False
    assert users(await a.heartbeat()) == ([], [])  # still down: nothing known yet
    flaky.down = False
    assert users(await a.heartbeat()) == (["arrives"], ["leaves"])
    assert await b.online("c1") == ["arrives", "elsewhere", "stays"]
    assert users(await a.heartbeat()) == ([], [])


async def test_after_a_data_loss_only_unannounced_changes_are_announced(nodes: Nodes) -> None:
    a, flaky = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "stays", "s1")
    await a.connect("c1", "leaves", "s2")
    await b.connect("c1", "other", "s3")
    flaky.down = True
    assert await a.disconnect("c1", "leaves", "s2") is False
    assert await a.connect("c1", "arrives", "s4") is False
    await nodes.wipe()  # the backend restarted without its data
    flaky.down = False
    assert users(await a.heartbeat()) == (["arrives"], ["leaves"])
    assert users(await b.heartbeat()) == ([], [])
    assert await a.online("c1") == ["arrives", "other", "stays"]


async def test_leave_forgets_the_nodes_connections(nodes: Nodes) -> None:
    a, _ = await nodes.node("a")
    b, _ = await nodes.node("b")
    await a.connect("c1", "alice", "s1")
    await a.connect("c1", "bob", "s2")
    await b.connect("c1", "bob", "s3")
    assert users(await a.leave()) == ([], ["alice"])
    assert await b.online("c1") == ["bob"]
    await asyncio.sleep(TTL * 1.5)
    assert users(await b.heartbeat()) == ([], [])  # nothing left to reap


async def test_health(nodes: Nodes) -> None:
    a, flaky = await nodes.node("a")
    report = await a.health()
    assert report["ok"] is True and report["node"] == "a"
    flaky.down = True
    report = await a.health()
    assert report["ok"] is False and "down" in report["error"]


def test_sync_reply_is_plain_data() -> None:
    reply = SyncReply("known", [("c", "u")], [])
    assert reply.state == "known" and reply.firsts == [("c", "u")]
