"""One socket's writes pipeline (``gateway.sessions.Turn``): the next write is applied while the
one before it waits for durability, so a single writer's writes can share store commits; yet
they apply, broadcast and are answered in the order they were sent, refusals included.

Durability is held back (:func:`hold_appends`: the store's appends complete only when the test
says so, a commit slower than anything else): every write of a burst must then be applied,
none answered, none broadcast; once released, all are answered and broadcast in order. Strict
one-at-a-time handling applies one write and waits.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text, create_update_message

from tests.gateway.conftest import Client, Server, ServerFactory

WRITES = 40


class HeldAppends:
    """The store's appends, accepted in order but made durable only on :meth:`release`."""

    def __init__(self, server: Server, expected: int) -> None:
        store = server.gw.engine.store
        self.real = store.append
        self.released = asyncio.Event()
        self.all_applied = asyncio.Event()
        self.expected = expected
        self.count = 0
        store.append = self.append

    def append(self, key: str, entry: Any) -> asyncio.Future[None]:
        inner = self.real(key, entry)
        self.count += 1
        if self.count >= self.expected:
            self.all_applied.set()

        async def durable() -> None:
            await self.released.wait()
            await inner

        return asyncio.ensure_future(durable())

    def release(self) -> None:
        self.released.set()


async def burst_is_applied_before_any_answer(
    held: HeldAppends, futures: list[asyncio.Future[Any]], *watchers: Client
) -> None:
    try:
        await asyncio.wait_for(held.all_applied.wait(), 10)
        assert not any(f.done() for f in futures), "a write was answered before it was durable"
        for w in watchers:
            await asyncio.sleep(0)
            assert not w.received("document:updated") and not w.received("document:sync")
    finally:
        held.release()


async def joined(server: Server, *users: str) -> list[Client]:
    clients = []
    for user in users:
        c = await server.client(user)
        assert (await c.call("document:join", {"documentId": "d"}))["ok"] is True
        clients.append(c)
    return clients


_sending: set[asyncio.Task[Any]] = set()


def emit_in_order(client: Client, calls: list[tuple[str, Any]]) -> list[asyncio.Future[Any]]:
    """Send every call at once, in this order, each with an ack callback; the futures resolve
    with the acks."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any]] = []
    for event, payload in calls:
        fut: asyncio.Future[Any] = loop.create_future()

        def answered(*args: Any, fut: asyncio.Future[Any] = fut) -> None:
            fut.set_result(args[0] if len(args) == 1 else args)

        futures.append(fut)
        task = loop.create_task(client.sio.emit(event, payload, callback=answered))
        _sending.add(task)
        task.add_done_callback(_sending.discard)
    return futures


async def acks_in_arrival_order(futures: list[asyncio.Future[Any]]) -> list[int]:
    """The positions of ``futures`` in the order they resolved."""
    order: list[int] = []
    for i, fut in enumerate(futures):
        fut.add_done_callback(lambda _, i=i: order.append(i))
    await asyncio.wait_for(asyncio.gather(*futures), 20)
    return order


async def test_one_writers_json_writes_pipeline_in_order(server: Server) -> None:
    writer, reader = await joined(server, "w", "r")
    held = HeldAppends(server, WRITES)
    calls = [
        ("document:update", {"documentId": "d", "version": v, "data": {"n": v + 1}})
        for v in range(WRITES)
    ]
    futures = emit_in_order(writer, calls)
    await burst_is_applied_before_any_answer(held, futures, reader)
    order = await acks_in_arrival_order(futures)
    acks = [f.result() for f in futures]
    # Each write was based on the version the one before it made: all took the fast path,
    # so each was applied after the one sent before it.
    assert [(a["ok"], a["status"], a["version"]) for a in acks] == [
        (True, "applied", v + 1) for v in range(WRITES)
    ]
    assert order == list(range(WRITES))
    seen = [(await reader.next("document:updated"))["version"] for _ in range(WRITES)]
    assert seen == list(range(1, WRITES + 1))
    got = await reader.call("document:join", {"documentId": "d"})
    assert (got["version"], got["data"]) == (WRITES, {"n": WRITES})


async def test_one_replicas_yjs_updates_pipeline_in_order(server: Server) -> None:
    writer, reader = await joined(server, "w", "r")
    for c in (writer, reader):
        step1 = b"\x00\x00\x01\x00"  # sync step 1 with an empty state vector
        assert (await c.call("document:sync", {"documentId": "d", "message": step1}))["ok"]
    doc: Doc[Any] = Doc()
    text = doc.get("notes", type=Text)
    messages = []
    for i in range(WRITES):
        state = doc.get_state()
        text += f"{i},"
        messages.append(create_update_message(doc.get_update(state)))
    held = HeldAppends(server, WRITES)
    calls = [("document:sync", {"documentId": "d", "message": m}) for m in messages]
    futures = emit_in_order(writer, calls)
    await burst_is_applied_before_any_answer(held, futures, reader)
    order = await acks_in_arrival_order(futures)
    versions = [f.result()["version"] for f in futures]
    assert order == list(range(WRITES))
    assert versions == sorted(versions) and len(set(versions)) == WRITES
    relayed = [(await reader.next("document:sync"))["message"] for _ in range(WRITES)]
    assert relayed == messages  # in the order sent, none skipped


async def test_answers_keep_arrival_order_refusals_included(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    """A refusal needs no commit, yet its answer waits for the write sent before it (on a
    real SQLite file)."""
    server = await make_server(store=f"sqlite:///{tmp_path / 'collab.db'}")
    (writer,) = await joined(server, "w")
    calls: list[tuple[str, Any]] = []
    for v in range(10):
        calls.append(("document:update", {"documentId": "d", "version": v, "data": {"n": v}}))
        calls.append(("no:such-event", {}))
        calls.append(("document:update", {"documentId": "d", "version": 999, "data": {}}))
    futures = emit_in_order(writer, calls)
    order = await acks_in_arrival_order(futures)
    assert order == list(range(len(calls)))
    codes = [f.result().get("error", {}).get("code") for f in futures]
    assert codes == [None, "invalid_payload", "version_ahead"] * 10
