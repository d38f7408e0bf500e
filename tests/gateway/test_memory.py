"""``gateway.memory``: the background pass that prunes expired entries and gives freed heap
memory back (measured by ``benchmarks/soak.py``)."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest

from gateway import memory
from gateway.metrics import RECONNECT_WINDOW, Metrics
from gateway.throttle import Throttle


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
