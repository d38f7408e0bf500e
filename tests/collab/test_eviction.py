"""Idle eviction of live documents (``EngineConfig.idle_seconds``): a document unused for that
long leaves memory and is reloaded from the store on next use, with nothing observable changed
(state, version, history, pending conflicts, opIds answered as duplicates)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable

import pytest

from collab.engine import Engine, EngineConfig
from collab.model import Outcome, Write
from collab.store.base import Store
from collab.store.memory import MemoryStore

from .conftest import ANN, BOB

C = "acme"
IDLE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(idle_seconds: float = IDLE) -> EngineConfig:
    return EngineConfig(history_limit=4, idle_seconds=idle_seconds)


def summary(out: Outcome) -> tuple[object, ...]:
    return (out.status, out.version, out.data, out.conflicted_fields)


async def script(e: Engine, evict: Callable[[], None]) -> list[tuple[object, ...]]:
    """Writes of every kind, ``evict`` called between them; the outcomes."""
    seen: list[tuple[object, ...]] = []

    async def write(w: Write, doc: str = "d") -> Outcome:
        out = await e.write("document", doc, w, company_id=C)
        seen.append(summary(out))
        await asyncio.sleep(0)  # the append's done-callback (an already durable write)
        evict()
        return out

    await e.open("document", "d", company_id=C, text_fields=["notes"])
    await e.open("document", "m", company_id=C, strategy="manual")
    evict()
    for v in range(10):  # past 2 x history_limit: a checkpoint is written (its opIds too)
        await write(Write(v, {"notes": f"note {v}", "n": v}, ANN, op_id=f"op{v}"))
        await e.drain()
    # Stale: merged (the text edits are apart: concurrent insertions at one place are ordered
    # by the forks' random client ids, evicted or not).
    await write(Write(8, {"notes": "a note 7", "n": 8, "x": 1}, BOB))
    await write(Write(3, {"n": 3}, ANN, op_id="op3"))  # applied long ago: duplicate
    await write(Write(9, {"n": 0}, ANN, op_id="op9"))  # recent: duplicate
    await write(Write(0, {"s": "a"}, ANN), "m")
    await write(Write(1, {"s": "b"}, ANN), "m")
    held = await write(Write(1, {"s": "c"}, BOB, op_id="held"), "m")  # manual conflict
    await write(Write(1, {"s": "c"}, BOB, op_id="held"), "m")  # duplicate of the held one
    assert held.conflict_id is not None
    out = await e.resolve("document", "m", held.conflict_id, {"s": "d"}, ANN, company_id=C)
    seen.append(summary(out))
    for doc in ("d", "m"):
        view = await e.get("document", doc, company_id=C)
        seen.append((view.version, view.data, [c.conflict_id for c in view.conflicts]))
        seen.append(tuple(r["opId"] for r in (await e.history("document", doc))[1]))
    return seen


async def test_eviction_changes_no_outcome(make_store: Callable[[], Store]) -> None:
    """The same writes give the same answers whether the documents stay in memory or are
    evicted after every step (on every store)."""
    async with Engine(MemoryStore(), config(idle_seconds=0)) as kept:
        expected = await script(kept, lambda: None)
        assert kept.live_documents == 2

    clock = Clock()
    evicted: list[int] = []
    async with Engine(make_store(), config(), clock=clock) as e:

        def evict() -> None:
            clock.now += IDLE + 1
            evicted.append(e.evict_idle())

        assert await script(e, evict) == expected
        assert sum(evicted) >= 10, evicted


async def test_op_id_duplicate_after_eviction(make_store: Callable[[], Store]) -> None:
    clock = Clock()
    async with Engine(make_store(), config(), clock=clock) as e:
        await e.open("document", "d", company_id=C)
        first = await e.write("document", "d", Write(0, {"n": 1}, ANN, op_id="k"), company_id=C)
        await e.drain()
        clock.now += IDLE + 1
        assert (e.evict_idle(), e.live_documents) == (1, 0)
        again = await e.write("document", "d", Write(0, {"n": 1}, ANN, op_id="k"), company_id=C)
        assert (first.status, again.status, again.version) == ("applied", "duplicate", 1)
        view = await e.get("document", "d", company_id=C)
        assert (view.version, view.data) == (1, {"n": 1})


async def test_only_idle_documents_are_evicted() -> None:
    clock = Clock()
    async with Engine(MemoryStore(), config(), clock=clock) as e:
        for doc in ("a", "b", "c"):
            await e.open("document", doc, company_id=C)
        clock.now += IDLE - 1
        await e.get("document", "b", company_id=C)  # used: its idle time restarts
        assert e.evict_idle() == 0
        clock.now += 2
        async with e.locked("document", "c"):  # busy: kept however idle
            assert e.evict_idle() == 1  # a
        assert e.live_documents == 2
        clock.now += IDLE
        assert e.evict_idle() == 2
        assert (await e.get("document", "c", company_id=C)).version == 0


async def test_pending_append_is_not_evicted() -> None:
    """A document whose last write is not durable yet stays (the store may still refuse it,
    and a duplicate must wait for it)."""
    clock = Clock()
    store = MemoryStore()
    async with Engine(store, config(), clock=clock) as e:
        await e.open("document", "d", company_id=C)
        gate, appended = asyncio.Event(), asyncio.Event()
        append = store.append
        held: list[asyncio.Task[None]] = []

        def slow_append(key, entry):  # type: ignore[no-untyped-def]
            fut = append(key, entry)
            slow: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            async def later() -> None:
                await gate.wait()
                await fut
                slow.set_result(None)

            held.append(asyncio.create_task(later()))
            appended.set()
            return slow

        store.append = slow_append  # type: ignore[method-assign]
        write = e.write("document", "d", Write(0, {"n": 1}, ANN), company_id=C)
        task = asyncio.create_task(write)
        await appended.wait()  # the write is computed, its append pending
        clock.now += IDLE + 1
        assert e.evict_idle() == 0
        gate.set()
        assert (await task).version == 1
        await e.drain()
        assert e.evict_idle() == 1


async def test_off_and_bad_settings() -> None:
    clock = Clock()
    async with Engine(MemoryStore(), config(idle_seconds=0), clock=clock) as e:
        await e.open("document", "d", company_id=C)
        clock.now += 10**9
        assert e.evict_idle() == 0
    with pytest.raises(ValueError, match="idle_seconds"):
        Engine(MemoryStore(), config(idle_seconds=-1))


async def test_the_sweep_runs_in_the_background() -> None:
    clock = Clock()
    async with Engine(MemoryStore(), config(idle_seconds=0.5), clock=clock) as e:
        await e.open("document", "d", company_id=C)
        clock.now += 1
        for _ in range(40):  # the sweep runs every second at most
            await asyncio.sleep(0.05)
            if e.live_documents == 0:
                break
        assert e.live_documents == 0
        assert (await e.get("document", "d", company_id=C)).version == 0


async def test_an_evicted_document_is_freed() -> None:
    """Nothing keeps a dropped live document alive, nor its CRDT (their observers once did,
    from the Rust side where the cycle collector cannot see it: every eviction leaked a
    document; then pycrdt's ``Doc.observe``, whose wrapper holds the ``Doc``, leaked the CRDT)."""
    clock = Clock()
    async with Engine(MemoryStore(), config(), clock=clock) as e:
        await e.open("document", "d", company_id=C, text_fields=["t"])
        await e.write("document", "d", Write(0, {"t": "abc"}, ANN), company_id=C)
        await e.write("document", "d", Write(1, {"t": "xabc", "n": 1}, BOB), company_id=C)
        await e.drain()
        live = weakref.ref(e._docs["document:d"])
        crdt = weakref.ref(e._docs["document:d"].doc)
        clock.now += IDLE + 1
        assert e.evict_idle() == 1
        gc.collect()
        assert live() is None
        assert crdt() is None
        assert (await e.get("document", "d", company_id=C)).data == {"t": "xabc", "n": 1}
