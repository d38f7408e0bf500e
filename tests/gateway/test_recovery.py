"""Connection state recovery (docs/recovery.md, ``gateway.recovery``).

- The recovery log contract: one suite, run against the in-memory log and the Redis log (a
  throwaway ``redis-server``), each a :class:`Backend` that can also open a second node's
  handle onto the same log.
- The official client (``tests/js/recovery.mjs``, socket.io-client 4.8) against a real
  gateway: a dropped transport recovers (rooms back, every missed event once, in order, no
  presence noise); past the window, after a clean ``socket.disconnect()``, or with another
  user's token it does not (and the client rejoins); across two gateway processes sharing a
  ``redis-server`` it recovers on the other node.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from engineio import packet as eio_packet
from socketio import packet as sio_packet
from socketio.msgpack_packet import MsgPackPacket

from gateway.auth import mint_token
from gateway.eventlog import (
    ZERO,
    Membership,
    Packet,
    RecoveryLog,
    SavedSession,
    format_offset,
    gap_marker,
    parse_offset,
)
from gateway.eventlog.memory import MemoryRecoveryLog
from gateway.eventlog.redis import RedisRecoveryLog
from gateway.offsets import Sequencer, tag_of
from tests.gateway.cluster import ClusterFactory, make_cluster
from tests.gateway.conftest import SECRET, Server, ServerFactory
from tests.nodejs import run_node
from tests.store.redis_server import RedisServer

__all__ = ["make_cluster"]  # the fixture, used by name

# -- the recovery log contract ----------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for this module (skips without one)."""
    server = RedisServer(tmp_path_factory.mktemp("recovery-redis"))
    server.start()
    yield server
    server.kill()


@dataclass
class Backend:
    """Opens logs of one backend; :meth:`another_node` is a second handle onto a log."""

    name: str
    redis_url: str | None
    prefix: str
    opened: list[RecoveryLog] = field(default_factory=list)

    async def log(self, *, window: float = 60.0, max_entries: int = 1000) -> RecoveryLog:
        log: RecoveryLog
        if self.redis_url is None:
            log = MemoryRecoveryLog(window=window, max_entries=max_entries)
        else:
            self.prefix += "x"  # every log of a test its own
            log = RedisRecoveryLog(
                self.redis_url, window=window, max_entries=max_entries, prefix=self.prefix
            )
        await log.start()
        self.opened.append(log)
        return log

    async def another_node(self, log: RecoveryLog) -> RecoveryLog:
        if not isinstance(log, RedisRecoveryLog):
            return log  # one process: the nodes of a single-node log are the node
        other = RedisRecoveryLog(log.url, window=log.window, prefix=self.prefix)
        await other.start()
        self.opened.append(other)
        return other


@pytest_asyncio.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    b = Backend(request.param, url, f"t{time.monotonic_ns()}:")
    yield b
    for log in b.opened:
        await log.stop()


def pkt(event: str, room: str, *args: Any, skip: tuple[str, ...] = ()) -> Packet:
    return Packet(event, args, room, skip)


def events(missed: Any) -> list[str]:
    assert missed is not None
    return [e.packet.event for e in missed.entries]


async def test_offsets_increase_in_append_order(backend: Backend) -> None:
    log = await backend.log()
    offsets = await log.append([pkt("a", "r"), pkt("b", "r")])
    offsets += await log.append([pkt("c", "r")])
    keys = [parse_offset(o) for o in offsets]
    assert None not in keys
    assert keys == sorted(keys)
    assert len(set(keys)) == 3
    assert await log.append([]) == []


async def test_since_returns_what_a_session_received_in_order(backend: Backend) -> None:
    log = await backend.log()
    [start] = await log.append([pkt("before", "doc")])
    offsets = await log.append(
        [
            pkt("doc:1", "doc", {"v": 1}),
            pkt("elsewhere", "other-room"),
            pkt("to-me", "s2", {"bin": b"\x00\xff"}),
            pkt("to-my-old-socket", "s1"),
            pkt("skips-me", "doc", skip=("s1",)),
            pkt("skips-another", "doc", {"v": 2}, skip=("s9",)),
            pkt("company", "company", "x", 2),
        ]
    )
    session = Membership(frozenset({"s1", "s2"}), {"doc": ZERO, "company": ZERO})
    missed = await log.since(start, session)
    assert missed is not None
    assert [(e.packet.event, e.packet.args) for e in missed.entries] == [
        ("doc:1", ({"v": 1},)),
        ("to-me", ({"bin": b"\x00\xff"},)),
        ("to-my-old-socket", ()),
        ("skips-another", ({"v": 2},)),
        ("company", ("x", 2)),
    ]
    assert [e.offset for e in missed.entries] == [offsets[i] for i in (0, 2, 3, 5, 6)]
    assert missed.end == offsets[-1]
    # Entered the document's room only at offsets[3]: what went there before is not its.
    late = Membership(session.sids, {"doc": parse_offset(offsets[3]) or ZERO})
    assert events(await log.since(start, late)) == ["to-me", "to-my-old-socket", "skips-another"]
    assert events(await log.since(offsets[2], session)) == [
        "to-my-old-socket",
        "skips-another",
        "company",
    ]
    nothing = await log.since(offsets[-1], session)
    assert nothing is not None and nothing.entries == [] and nothing.end == offsets[-1]


async def test_since_knows_when_the_log_was_trimmed(backend: Backend) -> None:
    log = await backend.log(max_entries=3)
    offsets = await log.append([pkt(f"e{i}", "r") for i in range(5)])
    member = Membership(frozenset({"s"}), {"r": ZERO})
    assert await log.since(offsets[0], member) is None  # e1, after it, is gone
    assert events(await log.since(offsets[1], member)) == ["e2", "e3", "e4"]
    assert await log.since("0-1", member) is None
    assert await log.since("not-an-offset", member) is None


async def test_entries_older_than_the_window_are_trimmed(backend: Backend) -> None:
    log = await backend.log(window=0.3)
    [old] = await log.append([pkt("old", "r")])
    await asyncio.sleep(0.5)
    await log.append([pkt("new", "r")])
    member = Membership(frozenset({"s"}), {"r": ZERO})
    assert await log.since(format_offset(ZERO), member) is None  # "old" is gone
    assert events(await log.since(old, member)) == ["new"]  # nothing after "old" is


async def test_nobody_recovers_across_a_gap(backend: Backend) -> None:
    log = await backend.log()
    [first] = await log.append([pkt("a", "r")])
    [_, after] = await log.append([gap_marker(), pkt("b", "r")])
    member = Membership(frozenset({"s"}), {"r": ZERO})
    assert await log.since(first, member) is None
    assert events(await log.since(after, member)) == []


async def test_sessions_are_taken_once_and_expire(backend: Backend) -> None:
    log = await backend.log()
    session = SavedSession(
        pid="p" * 24,
        company_id="c1",
        user_id="u1",
        sids=("s1", "s2"),
        rooms={"company:c1": "1-0", "document:d": "3-2"},
        last_sent="5-1",
        held_at="6-0",
        expires_at=time.time() + 60,
    )
    await log.save_session(session, ttl=60)
    assert await log.take_session(session.pid) == session
    assert await log.take_session(session.pid) is None
    await log.save_session(session, ttl=0.2)
    await asyncio.sleep(0.4)
    assert await log.take_session(session.pid) is None


async def test_two_nodes_share_one_log(backend: Backend) -> None:
    one = await backend.log()
    two = await backend.another_node(one)
    [first] = await one.append([pkt("from-one", "r")])
    [second] = await two.append([pkt("from-two", "r")])
    assert (parse_offset(second) or ZERO) > (parse_offset(first) or ZERO)
    member = Membership(frozenset({"s"}), {"r": ZERO})
    assert events(await two.since(format_offset(ZERO), member)) == ["from-one", "from-two"]
    session = SavedSession("q" * 24, "c1", "u1", ("s1",), expires_at=time.time() + 60)
    await one.save_session(session, ttl=60)
    assert await two.take_session(session.pid) == session
    assert await one.take_session(session.pid) is None


# -- the official client against a gateway ----------------------------------------------------

#: What `a` misses while away, in the order recovery.mjs makes it happen.
MISSED = ["project:created", "document:updated", "notification:new", "user:typing", "invoice:paid"]


def token(sub: str, company: str = "c1", **claims: Any) -> str:
    return mint_token(SECRET, sub=sub, company_id=company, **claims)


def config(url: str, **more: Any) -> dict[str, Any]:
    return {
        "urlA": url,
        "urlB": url,
        "postUrl": url,
        "tokenA": token("ua", name="Ann"),
        "tokenB": token("ub", name="Bob"),
        "service": token("erp", role="service"),
        "userA": "ua",
        "company": "c1",
        "doc": f"d{time.monotonic_ns()}",
        **more,
    }


async def recovery_script(cfg: dict[str, Any]) -> dict[str, Any]:
    lines = await run_node("recovery.mjs", json.dumps(cfg), timeout=90)
    seen = {line["label"]: line for line in lines}
    assert "error" not in seen, seen.get("error")
    return seen


def phase(a: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in a["events"] if e["phase"] == name]


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def presence_of(events: list[dict[str, Any]], user: str) -> list[str]:
    """The presence events about ``user`` received since `a` went away."""
    return [
        e["event"]
        for e in events
        if e["phase"] != "before"
        and e["event"] in ("user:online", "user:offline")
        and e["args"][0]["userId"] == user
    ]


def assert_recovered(a: dict[str, Any]) -> None:
    """`a` got its session back: same pid, every missed event once, in order, with its
    offset, then the later events of its rooms without rejoining."""
    assert a["recovered"] is True and a["samePid"] is True
    assert a["rejoinVersion"] is None
    assert phase(a, "away") == []
    replay = phase(a, "reconnecting")
    assert names(replay) == MISSED
    [updated] = [e for e in replay if e["event"] == "document:updated"]
    assert updated["args"][0]["version"] == a["awayVersion"]
    [notification] = [e for e in replay if e["event"] == "notification:new"]
    assert notification["args"][0]["userId"] == "ua"
    assert names(phase(a, "live")) == ["document:updated", "project:updated"]
    assert phase(a, "live")[0]["args"][0]["version"] == a["lastVersion"]
    # Every event carries its offset last; none came twice.
    offsets = [e["args"][-1] for e in a["events"]]
    assert all(parse_offset(o) is not None for o in offsets), offsets
    assert len(set(offsets)) == len(offsets)


@pytest.mark.parametrize(
    ("transport", "serializer"),
    [("websocket", "json"), ("polling", "json"), ("websocket", "msgpack")],
)
async def test_a_dropped_transport_recovers(
    make_server: ServerFactory, transport: str, serializer: str
) -> None:
    server = await make_server(recovery_window=30, serializer=serializer)
    cfg = config(server.url, transports=[transport], msgpack=serializer == "msgpack")
    # A client in the same rooms that opted out (recovery: false) never sees an offset.
    bystander = await server.client(
        "uc", serializer="default" if serializer == "json" else serializer
    )
    await bystander.call("document:join", {"documentId": cfg["doc"]})
    seen = await recovery_script(cfg)
    a, b = seen["a"], seen["b"]
    assert_recovered(a)
    offsets = [parse_offset(e["args"][-1]) for e in a["events"]]
    assert offsets == sorted(offsets)  # one node: in offset order
    assert a["sameId"] is False  # a new socket; its session's old id is remembered
    # Nobody saw `ua` go offline or come back.
    assert presence_of(b["events"], "ua") == []
    assert [e for e in b["events"] if len(e["args"]) != 1] == []  # `b` opted out
    # The bystander saw `ua` come online once, and go offline once: when the script ended.
    await until(lambda: len(server.gw.sessions) == 1)  # the script's clients are gone
    await bystander.barrier()
    assert [p["userId"] for p in bystander.received("user:online")].count("ua") == 1
    assert [p["userId"] for p in bystander.received("user:offline")].count("ua") == 1
    updates = bystander.received("document:updated")
    assert [u["version"] for u in updates] == [1, 2, 3]  # one argument each: no offset
    stats = server.gw.recovery.stats()
    assert stats["recovered"] == 1 and stats["replayed"] == len(MISSED)


async def test_a_client_that_received_nothing_yet_recovers(make_server: ServerFactory) -> None:
    """socket.io-client sends no offset before its first event; the server knows it sent
    nothing, so the session still recovers."""
    server = await make_server(recovery_window=30)
    seen = await recovery_script(config(server.url, quiet=True))
    a = seen["a"]
    assert a["recovered"] is True
    assert names(phase(a, "before")) in ([], ["user:online"])
    assert names(phase(a, "reconnecting")) == MISSED


async def test_past_the_window_it_is_a_new_session(make_server: ServerFactory) -> None:
    server = await make_server(recovery_window=1)
    bystander = await server.client("uc")
    seen = await recovery_script(config(server.url, pauseMs=1800))
    a = seen["a"]
    assert a["recovered"] is False and a["recoveredFlag"] is False
    assert a["hadPid"] is True and a["samePid"] is False  # a new pid: recovered is false
    assert phase(a, "reconnecting") == []  # nothing replayed
    assert a["rejoinVersion"] == a["awayVersion"]  # the join ack has the current state
    assert names(phase(a, "live")) == ["document:updated", "project:updated"]
    # The hold ended with the window: offline then, online when it came back.
    assert presence_of(seen["b"]["events"], "ua") == ["user:offline", "user:online"]
    await until(lambda: len(server.gw.sessions) == 1)  # the script's clients are gone
    await bystander.barrier()  # offline at the window's end, and when the script ended
    assert [p["userId"] for p in bystander.received("user:offline")].count("ua") == 2


async def test_a_clean_disconnect_is_not_recovered(make_server: ServerFactory) -> None:
    server = await make_server(recovery_window=30)
    seen = await recovery_script(config(server.url, away="disconnect"))
    a = seen["a"]
    assert a["recovered"] is False and a["samePid"] is False
    assert phase(a, "reconnecting") == []
    assert a["rejoinVersion"] == a["awayVersion"]
    # A deliberate disconnect is announced at once, as before.
    assert presence_of(seen["b"]["events"], "ua") == ["user:offline", "user:online"]


async def test_another_users_token_does_not_recover_the_session(
    make_server: ServerFactory,
) -> None:
    server = await make_server(recovery_window=30)
    seen = await recovery_script(config(server.url, reconnectToken=token("ux", name="Eve")))
    a = seen["a"]
    assert a["recovered"] is False and a["samePid"] is False
    assert phase(a, "reconnecting") == []
    assert not [e for e in a["events"] if e["event"] == "notification:new"]


async def test_recovery_off(make_server: ServerFactory) -> None:
    server = await make_server(recovery_window=0)
    seen = await recovery_script(config(server.url))
    a = seen["a"]
    assert a["hadPid"] is False and a["recovered"] is False
    assert [e for e in a["events"] if len(e["args"]) != 1] == []  # no offsets


async def test_recovers_on_another_node(make_cluster: ClusterFactory) -> None:
    """Two gateway processes sharing a redis-server: `a` drops from node 1 and reconnects to
    node 2, where `b` writes; the ERP events are posted to node 1."""
    cluster = await make_cluster(2)
    n1, n2 = cluster.nodes
    cfg = config(n1.url, urlB=n2.url, reconnectUrl=n2.url)
    seen = await recovery_script(cfg)
    assert_recovered(seen["a"])
    assert presence_of(seen["b"]["events"], "ua") == []


# -- identity ----------------------------------------------------------------------------------


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition never met"
        await asyncio.sleep(0.02)


async def test_a_pid_is_only_its_users(make_server: ServerFactory) -> None:
    """A pid presented with another user's token recovers nothing and is left to its owner;
    the owner's own token then recovers it."""
    server = await make_server(recovery_window=30)
    recovery = server.gw.recovery
    owner = await server.client("ua", auth={"token": server.token("ua"), "recovery": True})
    pid = recovery.connect_reply(owner.sid)["pid"]
    await owner.sio.eio.disconnect()  # the engine.io connection closes: recoverable
    await until(lambda: recovery.stats()["held"] == 1)
    auth = {"token": server.token("ux"), "recovery": True, "pid": pid}
    thief = await server.client("ux", auth=auth)
    assert recovery.connect_reply(thief.sid)["pid"] != pid
    assert recovery.stats()["recovered"] == 0
    auth = {"token": server.token("ua"), "recovery": True, "pid": pid}
    back = await server.client("ua", auth=auth)
    assert recovery.connect_reply(back.sid)["pid"] == pid
    assert recovery.stats()["recovered"] == 1
    assert set(server.gw.sio.rooms(back.sid)) >= {"company:c1", back.sid}


async def test_python_clients_never_see_offsets(server: Server) -> None:
    """Offsets go to clients that opted in only: a python-socketio handler takes exactly the
    arguments sent."""
    plain = await server.client("u1")
    opted = await server.client("u2", auth={"token": server.token("u2"), "recovery": True})
    for c in (plain, opted):
        await c.call("document:join", {"documentId": "d"})
    await plain.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    update = await opted.next("document:updated")
    assert isinstance(update, tuple) and parse_offset(update[-1]) is not None
    await plain.send("document:update", {"documentId": "d", "version": 1, "data": {"x": 2}})
    assert (await plain.next("document:updated"))["version"] == 2  # a dict: one argument


# -- offsets on the wire --------------------------------------------------------------------


def _eio(data: Any) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, data)


def test_tag_of_json_packets() -> None:
    encoded = sio_packet.Packet(sio_packet.EVENT, ["document:updated", {"v": 1}, "1712-3"]).encode()
    tag = tag_of(_eio(encoded), msgpack_serializer=False)
    assert tag is not None and (tag.offset, tag.key, tag.attachments) == ("1712-3", (1712, 3), 0)
    assert tag.plain.data == '2["document:updated",{"v":1}]'
    header, attachment = sio_packet.Packet(
        sio_packet.EVENT, ["document:sync", {"message": b"\x00\x01"}, "5-0"]
    ).encode()
    tag = tag_of(_eio(header), msgpack_serializer=False)
    assert tag is not None and tag.attachments == 1 and tag.offset == "5-0"
    assert tag.plain.data == header.replace(',"5-0"]', "]")
    assert tag_of(_eio(attachment), msgpack_serializer=False) is None
    for data in (
        ["e", {"a": "1-2"}],  # an offset-looking value inside the payload
        ["e", ["1-2"]],
        ["1-2"],  # the event name
        ["e", 'x,"1-2'],  # a string argument ending like one
        ["e", "1-2x"],
    ):
        encoded = sio_packet.Packet(sio_packet.EVENT, data).encode()
        assert tag_of(_eio(encoded), msgpack_serializer=False) is None, data
    ack = sio_packet.Packet(sio_packet.ACK, [{"ok": True}, "1-2"], id=3).encode()
    assert tag_of(_eio(ack), msgpack_serializer=False) is None  # acks never carry offsets


def test_tag_of_msgpack_packets() -> None:
    encoded = MsgPackPacket(sio_packet.EVENT, ["e", {"b": b"\x00"}, "9-1"]).encode()
    tag = tag_of(_eio(encoded), msgpack_serializer=True)
    assert tag is not None and tag.key == (9, 1)
    plain = MsgPackPacket(encoded_packet=tag.plain.data)
    assert plain.data == ["e", {"b": b"\x00"}]
    untagged = MsgPackPacket(sio_packet.EVENT, ["e", {"v": "1-2"}]).encode()
    assert tag_of(_eio(untagged), msgpack_serializer=True) is None


@pytest.mark.parametrize(("missed", "recovered"), [(5, True), (15, False)])
async def test_a_long_absence_is_not_replayed(
    make_server: ServerFactory, missed: int, recovered: bool
) -> None:
    """More missed events than the replay limit (half the outgoing-queue bound): a new
    session, the client resynchronises."""
    server = await make_server(recovery_window=30, max_outgoing_packets=20)
    recovery = server.gw.recovery
    assert recovery.max_replay == 10
    auth: dict[str, Any] = {"token": server.token("ua"), "recovery": True}
    first = await server.client("ua", auth=auth)
    pid = recovery.connect_reply(first.sid)["pid"]
    await first.sio.eio.disconnect()
    await until(lambda: recovery.stats()["held"] == 1)
    for i in range(missed):
        await server.gw.publisher.publish(
            "notification:new",
            "c1",
            {
                "id": f"n{i}",
                "title": "t",
                "message": "m",
                "type": "info",
                "userId": "ua",
                "createdAt": "2025-01-01T00:00:00.000Z",
            },
        )
    back = await server.client("ua", auth={**auth, "pid": pid})  # nothing received: no offset
    assert (recovery.connect_reply(back.sid)["pid"] == pid) is recovered
    await back.barrier()
    got = back.received("notification:new")
    if recovered:
        assert [args[0]["id"] for args in got] == [f"n{i}" for i in range(missed)]
        assert all(parse_offset(args[-1]) for args in got)
    else:
        assert got == []


class _SlowLog(MemoryRecoveryLog):
    """The in-memory log with the Redis log's shape: append pauses, and may fail."""

    synchronous = False
    failing = False

    async def append(self, packets: Any) -> list[str]:
        await asyncio.sleep(0.001)
        if self.failing:
            raise ConnectionError("the log is down")
        return await super().append(packets)


async def test_the_sequencer_delivers_in_offset_order_and_marks_gaps() -> None:
    log = _SlowLog(window=60)
    await log.start()
    delivered: list[tuple[str, str | None]] = []

    async def deliver(packet: Packet, offset: str | None) -> None:
        delivered.append((packet.event, offset))
        if packet.event == "outer":  # a delivery that emits in turn must not wait on itself
            await seq.submit(pkt("inner", "r"))

    seq = Sequencer(log, deliver)
    seq.start()
    await asyncio.gather(*(seq.submit(pkt(f"e{i}", "r")) for i in range(50)))
    assert [event for event, _ in delivered] == [f"e{i}" for i in range(50)]
    keys = [parse_offset(offset) for _, offset in delivered]
    assert None not in keys and keys == sorted(keys)
    await asyncio.wait_for(seq.submit(pkt("outer", "r")), 5)
    assert [event for event, _ in delivered[-2:]] == ["outer", "inner"]
    last = delivered[-1][1]
    assert last is not None
    log.failing = True
    await seq.submit(pkt("unlogged", "r"))  # still delivered, without an offset
    assert delivered[-1] == ("unlogged", None) and seq.unlogged == 1
    log.failing = False
    await seq.submit(pkt("after", "r"))
    member = Membership(frozenset({"s"}), {"r": ZERO})
    assert await log.since(last, member) is None  # nobody recovers across the gap
    after = delivered[-1][1]
    assert after is not None
    assert events(await log.since(after, member)) == []
    await seq.stop()
    with pytest.raises(RuntimeError):
        seq.start()
