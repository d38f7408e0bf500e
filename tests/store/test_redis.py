"""What only the Redis store promises: a compare-and-set that holds across nodes, the key
layout, group commit, AOF durability through a redis-server SIGKILL, and bounded failures
(never a hang) while Redis is away, with recovery when it is back.

Every test here runs its own redis-server (``tests/store/redis_server.py``), since several
kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from collab.errors import StoreConflict
from collab.model import Author, Checkpoint, DocumentMeta, LogEntry, PendingConflict
from collab.store import open_store
from collab.store.redis import RedisStore
from tests.store.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def meta(doc_id: str, company: str = "acme") -> DocumentMeta:
    return DocumentMeta(id=doc_id, kind="document", company_id=company, strategy="merge")


def entry(version: int, **m: Any) -> LogEntry:
    return LogEntry(version, f"u{version}".encode(), {"v": version, **m})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as s:
        yield s


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", aof=True) as s:
        yield s


# -- compare-and-set across nodes -------------------------------------------------------------


async def test_two_nodes_racing_for_each_version(server: RedisServer) -> None:
    key = meta("race").key
    async with RedisStore(server.url) as a, RedisStore(server.url) as b:
        await a.create(meta("race"), Checkpoint(0, b"", {}))
        winners: list[str] = []
        for v in range(1, 101):
            # Both nodes issue version v in the same tick; whichever pipeline Redis reads
            # first wins. Alternating who calls first makes each node win and lose.
            nodes = [("a", a), ("b", b)] if v % 2 else [("b", b), ("a", a)]
            futures = [s.append(key, entry(v, node=name)) for name, s in nodes]
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert sorted(type(r).__name__ for r in results) == ["NoneType", "StoreConflict"]
            lost = next(r for r in results if isinstance(r, StoreConflict))
            assert (lost.doc_key, lost.expected, lost.actual) == (key, v - 1, v)
            winners.append(nodes[0][0] if results[0] is None else nodes[1][0])
            await a.load(key)  # the loser reloads before writing again (lifts poisoning)
            await b.load(key)
        doc_a, doc_b = await a.load(key), await b.load(key)
    assert doc_a == doc_b and doc_a is not None
    assert [e.version for e in doc_a.entries] == list(range(1, 101))  # no gap, no double
    assert [e.meta["node"] for e in doc_a.entries] == winners
    assert set(winners) == {"a", "b"}


async def test_retrying_nodes_interleave_without_gaps(server: RedisServer) -> None:
    """Three nodes each land 40 appends the way the engine does: on StoreConflict, reload
    the head and try the next version."""
    key = meta("busy").key
    stores = [RedisStore(server.url) for _ in range(3)]
    for s in stores:
        await s.start()
    try:
        await stores[0].create(meta("busy"), Checkpoint(0, b"", {}))

        async def node(name: str, store: RedisStore) -> int:
            landed = conflicts = 0
            doc = await store.load(key)
            assert doc is not None
            head = doc.version
            while landed < 40:
                try:
                    await store.append(key, entry(head + 1, node=name))
                except StoreConflict as exc:
                    assert exc.actual is not None and exc.actual > head
                    head, conflicts = exc.actual, conflicts + 1
                    await store.load(key)  # as the engine does before retrying
                else:
                    head, landed = head + 1, landed + 1
            return conflicts

        await asyncio.gather(*(node(f"n{i}", s) for i, s in enumerate(stores)))
        doc = await stores[1].load(key)
    finally:
        for s in stores:
            await s.stop()
    assert doc is not None
    assert [e.version for e in doc.entries] == list(range(1, 121))
    by_node = [e.meta["node"] for e in doc.entries]
    assert sorted(by_node.count(n) for n in ("n0", "n1", "n2")) == [40, 40, 40]


# -- state, layout, batching ------------------------------------------------------------------


async def test_reopening_gives_identical_state(server: RedisServer) -> None:
    keys = [f"document:d{i}" for i in range(5)]
    async with RedisStore(server.url) as first:
        for i in range(5):
            company = "acme" if i % 2 else "globex"
            await first.create(meta(f"d{i}", company), Checkpoint(0, bytes([i]), {"i": i}))
        await asyncio.gather(*(first.append(k, entry(v)) for v in range(1, 8) for k in keys))
        for cid in ("c1", "c2"):
            conflict = PendingConflict(cid, 7, 7, ("t",), {"t": 1}, {"t": 2}, Author("u"), 9.0)
            await first.add_conflict(keys[0], conflict)
        await first.append(keys[1], LogEntry(8, b"r", {}, resolves="none"))
        await first.compact(keys[2], Checkpoint(4, b"four", {"n": 4}))
        before = [await first.load(k) for k in keys]
        listings = [await first.list_documents(c) for c in ("acme", "globex")]

    async with RedisStore(server.url) as second:
        assert [await second.load(k) for k in keys] == before
        assert [await second.list_documents(c) for c in ("acme", "globex")] == listings
        with pytest.raises(StoreConflict):
            await second.append(keys[0], entry(7))
        await second.load(keys[0])
        await second.append(keys[0], entry(8))
    async with RedisStore(server.url, prefix="elsewhere:") as other:
        assert await other.load(keys[0]) is None  # prefixes isolate deployments


async def test_key_layout(server: RedisServer) -> None:
    async with RedisStore(f"{server.url}?prefix=app%3A") as store:
        assert store.prefix == "app:"
        await store.create(meta("d1"), Checkpoint(0, b"", {}))
        await store.add_conflict("document:d1", PendingConflict(
            "c1", 0, 1, ("t",), {}, {}, Author("u"), 1.0))  # fmt: skip
        await store.append("document:d1", entry(1))
    raw = Redis.from_url(server.url, decode_responses=True)
    try:
        types = {k: await raw.type(k) for k in await raw.keys("*")}
        assert types == {
            "app:{document:d1}:doc": "hash",
            "app:{document:d1}:log": "list",
            "app:{document:d1}:conflicts": "hash",
            "app:{document:d1}:order": "list",
            "app:{company:acme}:index": "zset",
        }
        assert await raw.hget("app:{document:d1}:doc", "head") == "1"
    finally:
        await raw.aclose()


async def test_group_commit_batches(server: RedisServer) -> None:
    async with RedisStore(server.url) as store:
        keys = [meta(f"d{i}").key for i in range(200)]
        for i in range(200):
            await store.create(meta(f"d{i}"), Checkpoint(0, b"", {}))
        before = store.round_trips
        await asyncio.gather(*(store.append(k, entry(1)) for k in keys))
        # Not a timing assertion: 200 appends queued in one go travel together.
        assert 1 <= store.round_trips - before < 200
        pending = store.append(keys[0], entry(2))
        doc = await store.load(keys[0])  # queued after the append, so it sees it
        assert pending.done() and doc is not None and doc.version == 2


async def test_cancelled_awaiter_does_not_cancel_the_write(server: RedisServer) -> None:
    async with RedisStore(server.url) as store:
        await store.create(meta("d1"), Checkpoint(0, b"", {}))
        store.append("document:d1", entry(1)).cancel()
        doc = await store.load("document:d1")
        assert doc is not None and doc.version == 1


async def test_scripts_are_reloaded_after_a_flush(server: RedisServer) -> None:
    async with RedisStore(server.url) as store:
        await store.create(meta("d1"), Checkpoint(0, b"", {}))
        raw = Redis.from_url(server.url)
        await raw.script_flush()  # what a Redis restart does to the script cache
        await raw.aclose()
        await store.append("document:d1", entry(1))
        doc = await store.load("document:d1")
        assert doc is not None and doc.version == 1


# -- URL handling -----------------------------------------------------------------------------


async def test_url_password_is_never_shown() -> None:
    store = open_store("redis://ops:s3cret@127.0.0.1:1/2?prefix=p%3A&socket_keepalive=True")
    assert isinstance(store, RedisStore)
    assert store.url == "redis://ops@127.0.0.1:1/2"
    assert store.prefix == "p:"
    report = await store.health()
    assert report["ok"] is False and "s3cret" not in repr(report)
    assert RedisStore("redis://:pw@h:1", prefix="x:").prefix == "x:"
    with pytest.raises(ValueError) as info:
        RedisStore("redis://:s3cret@host:nope")
    assert "s3cret" not in str(info.value) and info.value.__cause__ is None


# -- Redis going away -------------------------------------------------------------------------


async def test_start_fails_when_redis_is_unreachable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    with pytest.raises(RedisConnectionError):
        await store.start()
    assert (await store.health())["ok"] is False
    with pytest.raises(RuntimeError):
        store.append("document:d1", entry(1))
    await store.stop()


async def test_redis_going_away_and_coming_back(aof_server: RedisServer) -> None:
    key = meta("d1").key
    async with RedisStore(aof_server.url, timeout=2.0) as store:
        await store.create(meta("d1"), Checkpoint(0, b"", {}))
        await store.append(key, entry(1))

        aof_server.kill()
        started = time.monotonic()
        with pytest.raises(RedisError):
            await asyncio.wait_for(store.append(key, entry(2)), 10)
        with pytest.raises(RedisError):
            await asyncio.wait_for(store.load(key), 10)
        report = await asyncio.wait_for(store.health(), 10)
        assert report["ok"] is False and report["error"]
        assert time.monotonic() - started < 10  # failures, not hangs

        aof_server.start()  # same port, same AOF: the document is back
        assert (await store.health())["ok"] is True
        await store.append(key, entry(2))
        doc = await store.load(key)
        assert doc is not None and [e.version for e in doc.entries] == [1, 2]


async def test_a_hung_redis_times_out(server: RedisServer) -> None:
    key = meta("d1").key
    async with RedisStore(server.url, timeout=0.5) as store:
        await store.create(meta("d1"), Checkpoint(0, b"", {}))
        server.signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await asyncio.wait_for(store.append(key, entry(1)), 10)
            assert (await asyncio.wait_for(store.health(), 10))["ok"] is False
            assert time.monotonic() - started < 5
        finally:
            server.signal(signal.SIGCONT)
        assert (await store.health())["ok"] is True
        # The timed-out append reached Redis before it froze: its outcome was unknown, not
        # "not written". Whatever happened, the compare-and-set keeps the log whole.
        doc = await store.load(key)
        assert doc is not None and doc.version in (0, 1)
        await store.append(key, entry(doc.version + 1))
        doc = await store.load(key)
        assert doc is not None
        assert [e.version for e in doc.entries] == list(range(1, doc.version + 1))


# -- durability -------------------------------------------------------------------------------

WRITER_SCRIPT = """
import asyncio, sys
from collab.model import Checkpoint, DocumentMeta, LogEntry
from collab.store.redis import RedisStore

async def main():
    store = RedisStore(sys.argv[1])
    await store.start()
    meta = DocumentMeta(id="crash", kind="document", company_id="acme", strategy="merge")
    await store.create(meta, Checkpoint(0, b"", {}))
    version = 0
    while True:  # windows of 8 pipelined appends, so batches group-commit several
        window = [version + i for i in range(1, 9)]
        futures = [store.append(meta.key, LogEntry(v, bytes([v % 256]) * 64, {"v": v}))
                   for v in window]
        for v, future in zip(window, futures):
            await future
            print(v, flush=True)
        version = window[-1]

asyncio.run(main())
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
async def test_sigkilled_redis_loses_nothing_acknowledged(aof_server: RedisServer) -> None:
    raw = Redis.from_url(aof_server.url)
    try:
        assert await raw.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        await raw.aclose()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER_SCRIPT,
        aof_server.url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[int] = []
    try:
        while len(acked) < 300:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                break
            acked.append(int(line))
    finally:
        aof_server.kill()  # SIGKILL the redis-server mid-stream...
        proc.kill()  # ...and the writer
    await proc.wait()
    rest = await proc.stdout.read()
    stderr = (await proc.stderr.read()).decode()
    assert len(acked) == 300, stderr
    # Everything printed was acknowledged; only whole lines count (the last may be torn).
    acked += [int(x) for x in rest.split(b"\n")[:-1]]

    aof_server.start()  # same port, same AOF directory
    async with RedisStore(aof_server.url) as reopened:
        doc = await reopened.load(meta("crash").key)
    assert doc is not None
    stored = [e.version for e in doc.entries]
    assert stored == list(range(1, len(stored) + 1))  # no gap
    assert set(acked) <= set(stored)  # nothing acknowledged was lost
    assert all(e.update == bytes([e.version % 256]) * 64 for e in doc.entries)
    assert all(e.meta == {"v": e.version} for e in doc.entries)
