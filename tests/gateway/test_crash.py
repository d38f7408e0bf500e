"""Nothing acknowledged is lost on a crash: writers hammer one document through a gateway
process, which is SIGKILLed mid-stream (and, for Redis, the redis-server with it) and started
again on the same store. Every acknowledged write is in the document, at the version its ack
named, and the version history has no gap.

Once with the embedded SQLite store (WAL, ``synchronous=FULL``), once with Redis under its
documented durable setting (AOF, ``appendfsync always``) restarted from its AOF.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from collab.engine import Engine
from collab.store import open_store
from tests.gateway.cluster import GatewayProcess
from tests.gateway.conftest import Client
from tests.store.redis_server import RedisServer

WRITERS = 6
#: Acknowledged writes after which the process is killed (the writers keep going meanwhile).
CRASH_AFTER = 150


@dataclass
class Acked:
    """What the writers were told: key written -> (version acked, writer)."""

    writes: dict[str, tuple[int, str]] = field(default_factory=dict)
    enough: asyncio.Event = field(default_factory=asyncio.Event)


async def writer(i: int, client: Client, acked: Acked) -> None:
    """Write until the connection dies: each write adds one key to this writer's last view
    (the ack's data), from the version of its last ack: concurrent writers merge."""
    join = await client.call("document:join", {"documentId": "crash"})
    version, data = join["version"], join["data"]
    n = 0
    while client.sio.connected:
        key = f"w{i}-{n}"
        payload = {"documentId": "crash", "version": version, "data": {**data, key: n}}
        call = asyncio.ensure_future(client.call("document:update", payload, wait=5))
        gone = asyncio.ensure_future(client.disconnected.wait())
        await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not call.done():
            call.cancel()
            return  # in flight when the server died: outcome unknown, not acknowledged
        try:
            ack = call.result()
        except Exception:
            return
        if not ack.get("ok"):
            return
        acked.writes[key] = (ack["version"], f"w{i}")
        if len(acked.writes) >= CRASH_AFTER:
            acked.enough.set()
        version, data = ack["version"], ack["data"]
        n += 1


async def hammer_crash_restart(
    node: GatewayProcess, crash: Callable[[], None], restart: Callable[[], Awaitable[None]]
) -> Acked:
    acked = Acked()
    clients = [await node.client(f"w{i}") for i in range(WRITERS)]
    tasks = [asyncio.ensure_future(writer(i, c, acked)) for i, c in enumerate(clients)]
    await asyncio.wait_for(acked.enough.wait(), 30)
    crash()  # mid-stream: the writers have writes in flight
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    await node.close_clients()
    await restart()
    return acked


async def check(node: GatewayProcess, store_url: str, acked: Acked) -> None:
    """Every acknowledged write is in the document, at its version; the history is gapless."""
    assert len(acked.writes) >= CRASH_AFTER
    reader = await node.client("reader")
    state = await reader.call("document:join", {"documentId": "crash"})
    missing = [k for k in acked.writes if k not in state["data"]]
    assert missing == [], f"acknowledged but lost: {missing}"
    assert state["version"] >= max(v for v, _ in acked.writes.values())

    async with Engine(open_store(store_url)) as engine:
        _, history = await engine.history("document", "crash")
    versions = [row["version"] for row in history]
    assert versions == list(range(versions[0], versions[-1] + 1)), "gap in the history"
    assert versions[-1] == state["version"]
    by_version = {row["version"]: row for row in history}
    acked_versions = sorted(v for v, _ in acked.writes.values())
    assert len(set(acked_versions)) == len(acked_versions), "two acks for one version"
    for key, (version, who) in acked.writes.items():
        row = by_version.get(version)
        assert row is not None and row["by"] == who, (key, version, row)


async def test_sigkill_loses_no_acknowledged_write_sqlite(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'collab.db'}"
    node = GatewayProcess(tmp_path, "crash-sqlite", ["--store", store_url])
    await node.start()
    try:

        def crash() -> None:
            node.kill(signal.SIGKILL)

        acked = await hammer_crash_restart(node, crash, node.start)
        await check(node, store_url, acked)
    finally:
        await node.close_clients()
        node.kill()


async def test_sigkill_loses_no_acknowledged_write_redis_aof(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis", aof=True)  # appendonly yes, appendfsync always
    redis.start()
    store_url = f"{redis.url}?prefix=crash:"
    node = GatewayProcess(tmp_path, "crash-redis", ["--store", store_url])
    try:
        await node.start()

        def crash() -> None:
            node.kill(signal.SIGKILL)
            redis.kill(signal.SIGKILL)  # the redis-server crashes too

        async def restart() -> None:
            redis.start()  # same port, replaying its AOF
            await node.start()

        acked = await hammer_crash_restart(node, crash, restart)
        await check(node, store_url, acked)
    finally:
        await node.close_clients()
        node.kill()
        redis.kill()
