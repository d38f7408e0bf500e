"""Presence in a connect storm: held announcements (``gateway.presence.coalesce``) lose,
double and reorder nothing.

Each socket must receive exactly the ``user:online`` of the users that connected after it
entered its company room, in connection order, and every event in one order shared by all
sockets (presence, ``user:offline`` and ERP events alike), as if each had gone out at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from gateway.presence.coalesce import Coalescer, Held, _with_entries
from tests.gateway.conftest import TIMEOUT, Client, Server, ServerFactory

#: A window no test outlives: held events go out only when something flushes them.
FOREVER = 3600.0


class Recorder(Client):
    """A client that also keeps every event it receives in one ordered log."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []

    async def _record(self, event: str, *args: Any) -> None:
        self.log.append((event, args[0] if len(args) == 1 else args))
        await super()._record(event, *args)

    def items(self) -> list[str]:
        """The log as comparable items: ``online:<user>``, ``offline:<user>``, ``erp:<seq>``."""
        out = []
        for event, payload in self.log:
            if event in ("user:online", "user:offline"):
                out.append(f"{event[5:]}:{payload['userId']}")
            elif event == "project:updated":
                out.append(f"erp:{payload['id'][1:]}")
        return out

    def onlines(self) -> list[str]:
        return [p["userId"] for e, p in self.log if e == "user:online"]


async def connect(server: Server, user: str, company: str = "c1") -> Recorder:
    c = Recorder()
    server.clients.append(c)
    await c.sio.connect(
        server.url,
        auth={"token": server.token(user, company), "recovery": False},
        transports=["websocket"],
        wait_timeout=TIMEOUT,
    )
    return c


async def publish(server: Server, seq: int, company: str = "c1") -> None:
    """``POST /api/events`` ``project:updated`` of project ``p<seq>`` to the company room."""
    project = {
        "id": f"p{seq}",
        "name": "Tower",
        "companyId": company,
        "status": "in_progress",
        "updatedAt": "2024-01-15T10:30:00.000Z",
    }
    await server.post_event("project:updated", company, project)


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 (a counter, no event to wait on)
        await asyncio.sleep(0.01)


def hold_forever(server: Server) -> Coalescer:
    coalescer = server.gw.coalescer
    coalescer.base = coalescer.longest = coalescer.window = FOREVER
    return coalescer


def assert_one_order(clients: list[Recorder]) -> None:
    """Every two sockets received the events they share in the same order."""
    logs = [c.items() for c in clients]
    for log in logs:
        assert len(log) == len(set(log)), f"an event arrived twice: {log}"
    for a, b in itertools.combinations(logs, 2):
        common = set(a) & set(b)
        assert [x for x in a if x in common] == [x for x in b if x in common]


def assert_online_exactly_once(clients: dict[str, Recorder]) -> None:
    """Each socket got the ``user:online`` of exactly the users that connected after it, in
    their order: one connection order explains every socket's announcements."""
    rank = {user: len(clients) - 1 - len(c.onlines()) for user, c in clients.items()}
    order = sorted(clients, key=rank.__getitem__)
    assert sorted(rank.values()) == list(range(len(clients))), "an announcement was lost"
    for user, c in clients.items():
        assert c.onlines() == order[rank[user] + 1 :], user


async def test_held_announcements_reach_exactly_the_earlier_sockets(server: Server) -> None:
    coalescer = hold_forever(server)
    users = [f"u{i}" for i in range(12)]
    clients = {u: await connect(server, u) for u in users}  # one by one: a known order
    assert len(coalescer) == len(users)  # held, the first one's too (to an empty room)
    await publish(server, 1)  # an emit: the held events go out first, in order
    for i, u in enumerate(users):
        assert (await clients[u].next("project:updated"))["id"] == "p1"
        assert clients[u].items() == [f"online:{v}" for v in users[i + 1 :]] + ["erp:1"]
    assert coalescer.batches == 1 and len(coalescer) == 0


async def test_an_ack_follows_the_held_announcements(server: Server) -> None:
    hold_forever(server)
    first = await connect(server, "first")
    await connect(server, "second")
    await connect(server, "third")
    await first.barrier()  # its ack is sent after the held events
    assert first.items() == ["online:second", "online:third"]


async def test_online_then_offline_within_one_window(server: Server) -> None:
    hold_forever(server)
    watcher = await connect(server, "watcher")
    ghost = await connect(server, "ghost")
    await ghost.disconnect()
    await connect(server, "late")
    await publish(server, 7)
    await watcher.next("project:updated")
    assert watcher.items() == ["online:ghost", "offline:ghost", "online:late", "erp:7"]


async def test_a_document_join_comes_after_the_held_announcements(server: Server) -> None:
    hold_forever(server)
    a = await connect(server, "a")
    b = await connect(server, "b")
    ack = await b.call("document:join", {"documentId": "d1"})
    assert ack["ok"] is True
    await a.barrier()
    assert a.items() == ["online:b"]
    assert server.gw.coalescer.batches == 1


async def test_a_full_batch_goes_out_at_once(server: Server) -> None:
    coalescer = hold_forever(server)
    coalescer.max_batch = 3
    clients = {u: await connect(server, u) for u in ("a", "b", "c", "d", "e")}
    # The first three announcements went out as soon as they were held: no flush needed.
    await asyncio.wait_for(until(lambda: coalescer.batches > 0), TIMEOUT)
    await publish(server, 1)
    for c in clients.values():
        await c.next("project:updated")
    assert_online_exactly_once(clients)
    assert_one_order(list(clients.values()))


async def test_storm_loses_doubles_and_reorders_nothing(make_server: ServerFactory) -> None:
    server = await make_server()
    n = 60
    users = [f"u{i}" for i in range(n)]

    async def erp() -> None:
        for seq in range(1, 6):
            await publish(server, seq)
            await asyncio.sleep(0)

    publisher = asyncio.create_task(erp())
    joined = await asyncio.gather(*(connect(server, u) for u in users))
    await publisher
    await publish(server, 99)  # after every connection: everyone must get it
    clients = dict(zip(users, joined, strict=True))
    for c in joined:
        while "erp:99" not in c.items():
            await c.next("project:updated")
        await c.barrier()
    assert_online_exactly_once(clients)
    assert_one_order(joined)
    # Then half of them leave at once: each remaining socket hears every one of them leave.
    leaving, staying = joined[: n // 2], joined[n // 2 :]
    await asyncio.gather(*(c.disconnect() for c in leaving))
    await publish(server, 100)
    for c in staying:
        while "erp:100" not in c.items():
            await c.next("project:updated")
        offline = [x for x in c.items() if x.startswith("offline:")]
        assert sorted(offline) == sorted(f"offline:{u}" for u in users[: n // 2])
    assert_one_order(staying)


def test_entries_are_skipped_by_the_events_held_before_them() -> None:
    held: list[Held] = [
        ("user:online", {}, "company:c1", "s1"),
        ("user:online", {}, "company:c2", "t1"),
        ("user:online", {}, "company:c1", "s2"),
        ("user:offline", {}, "company:c1", None),
    ]
    # s2 entered company:c1 when 2 events were held; s3 when 4 were; t2 entered company:c2
    # after the second event.
    entered = {"company:c1": [(2, "s2"), (4, "s3")], "company:c2": [(2, "t2")]}
    assert _with_entries(held, entered) == [
        ("user:online", {}, "company:c1", ("s1", "s2", "s3")),
        ("user:online", {}, "company:c2", ("t1", "t2")),
        ("user:online", {}, "company:c1", ("s2", "s3")),
        ("user:offline", {}, "company:c1", ("s3",)),
    ]


async def test_the_window_grows_in_a_storm_and_resets_when_quiet() -> None:
    sent: list[list[Held]] = []
    now = [0.0]

    async def send(batch: Any) -> None:
        sent.append(list(batch))

    tasks: list[asyncio.Task[Any]] = []
    coalescer = Coalescer(
        send,
        lambda coro: tasks.append(asyncio.ensure_future(coro)),
        base=0.01,
        longest=0.04,
        clock=lambda: now[0],
    )
    windows = []
    for _ in range(4):  # a storm: two events per window, back to back
        windows.append(coalescer.window)
        coalescer.hold("user:online", {}, "company:c1", None)
        coalescer.hold("user:online", {}, "company:c1", None)
        await coalescer.flush()
    assert windows == [0.01, 0.02, 0.04, 0.04]
    now[0] += 1.0  # a quiet second: the next lone event waits the base window again
    coalescer.hold("user:online", {}, "company:c1", None)
    assert coalescer.window == 0.01
    await coalescer.flush()
    coalescer.close()
    assert [len(b) for b in sent] == [2, 2, 2, 2, 1]
