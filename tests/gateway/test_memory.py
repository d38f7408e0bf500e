"""``gateway.memory``: the background pass that prunes expired entries and gives freed heap
memory back (measured by ``benchmarks/soak.py``)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import engineio.async_socket
import pytest
from aiohttp import web

from gateway import memory, outgoing
from gateway.metrics import RECONNECT_WINDOW, Metrics
from gateway.throttle import Throttle
from tests.gateway.conftest import Server


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_prune_forgets_only_expired_keys() -> None:
    clock = Clock()
    throttle = Throttle(0.5, clock=clock)
    assert throttle.allow("a")
    clock.now += 0.4
    assert throttle.allow("b")
    clock.now += 0.2
    throttle.prune()
    assert len(throttle) == 1
    assert not throttle.allow("b"), "b is still within its interval"
    assert throttle.allow("a")


def test_metrics_prune_keeps_recent_disconnects() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.connected("c", "old")
    metrics.disconnected("c", "old")
    clock.now += RECONNECT_WINDOW + 1
    metrics.connected("c", "new")
    metrics.disconnected("c", "new")
    metrics.prune()
    metrics.connected("c", "new")
    metrics.connected("c", "old")
    assert metrics.reconnections._value.get() == 1  # only "new" counts as a reconnection


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_is_found_on_glibc() -> None:
    trim = memory.malloc_trim()
    if trim is None:
        pytest.skip("not glibc (musl?)")
    assert trim() in (0, 1)


async def test_maintain_prunes_and_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: lambda: calls.append("trim") or 0)
    gw = SimpleNamespace(
        typing=SimpleNamespace(prune=lambda: calls.append("typing")),
        metrics=SimpleNamespace(prune=lambda: calls.append("metrics")),
    )
    task = asyncio.create_task(memory.maintain(gw, interval=0.01))  # type: ignore[arg-type]
    for _ in range(200):
        await asyncio.sleep(0.01)
        if len(calls) >= 6:
            break
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert calls[:3] == ["typing", "metrics", "trim"] and len(calls) >= 6


async def test_maintain_without_glibc_still_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    pruned: list[str] = []
    monkeypatch.setattr(memory, "malloc_trim", lambda: None)
    gw = SimpleNamespace(
        typing=SimpleNamespace(prune=lambda: pruned.append("typing")),
        metrics=SimpleNamespace(prune=lambda: pruned.append("metrics")),
    )
    task = asyncio.create_task(memory.maintain(gw, interval=0.01))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert pruned[:2] == ["typing", "metrics"]


# -- connections end without garbage cycles (gateway.outgoing._Connection.wait) ----------------


def _server_connection_garbage() -> list[str]:
    """Collect, keeping what was unreachable, and name the server-side connection objects in
    it (python-engineio's socket, aiohttp's websocket response)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
    finally:
        gc.set_debug(0)
    found = [
        type(o).__qualname__
        for o in gc.garbage
        if isinstance(o, engineio.async_socket.AsyncSocket | web.WebSocketResponse)
    ]
    gc.garbage.clear()
    return found


@pytest.mark.parametrize("leave", [True, False], ids=["client disconnect", "transport close"])
async def test_a_closed_websocket_leaves_no_reference_cycle(server: Server, leave: bool) -> None:
    """A websocket that closes is freed by reference counting: python-engineio's driver would
    raise OSError in its reading task, and the exception's traceback would tie the task, its
    frames and every object of the connection into a cycle left to the cyclic collector."""
    gc.collect()
    gc.disable()
    try:
        client = await server.client()
        await client.call("test:barrier", {})
        if leave:
            await client.sio.disconnect()
        else:
            await client.sio.eio.disconnect()
        for _ in range(500):
            if not server.gw.sio.eio.sockets and not server.gw.sessions.sids():
                break
            await asyncio.sleep(0.01)
        assert not server.gw.sio.eio.sockets
        await asyncio.sleep(0.05)  # the connection's tasks finish
        assert _server_connection_garbage() == []
    finally:
        gc.enable()


async def test_quiet_close_reports_the_end_of_messages_as_none() -> None:
    """Text and binary messages pass; a close, a closed socket or an error end the messages."""
    driver = outgoing._Connection

    async def wait(data: object) -> object:
        async def receive() -> SimpleNamespace:
            return SimpleNamespace(data=data)

        conn = driver(None, None)
        conn._sock = SimpleNamespace(receive=receive)
        return await conn.wait()

    assert await wait("2probe") == "2probe"
    assert await wait(b"\x04bin") == b"\x04bin"
    assert await wait(1000) is None  # CLOSE: the close code
    assert await wait(None) is None  # CLOSED, CLOSING
    assert await wait(RuntimeError("boom")) is None  # ERROR


# -- the debug reports (COLLAB_MEMORY_DEBUG) ------------------------------------------------------


async def test_debug_reports_are_off_by_default(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(memory.DEBUG_ENV, raising=False)
    assert memory.install_debug(server.gw) is None


async def test_a_debug_report_names_the_tables_and_the_objects(
    server: Server, tmp_path: Path
) -> None:
    client = await server.client()
    await client.call("test:barrier", {})
    memory.dump(server.gw, tmp_path, "01")
    assert (tmp_path / "01.done").exists()
    assert "arenas allocated current" in (tmp_path / "01-mallocstats.txt").read_text()
    census = json.loads((tmp_path / "01-census.json").read_text())
    assert census["tables"]["sessions"] == 1
    assert census["tables"]["eio.sockets"] == 1
    assert census["objects"] > 0 and census["ranges"] > 0
    assert "AsyncSocket" in census["referrers"]
