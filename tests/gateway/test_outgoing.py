"""The broadcast fast path (``gateway.outgoing``): each websocket frame built once and written
straight to the connections, python-engineio's queue otherwise. What must hold whichever way a
packet goes: every socket gets every event, once, in the order sent — websocket, polling and
upgraded clients alike, text and binary, on asyncio's loop and on uvloop."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
from types import SimpleNamespace
from typing import Any

import aiohttp
import engineio.payload
import pytest
import socketio
from aiohttp._websocket.writer import WebSocketWriter
from engineio import packet as eio_packet

from collab.rooms import company_room
from gateway import outgoing
from gateway.auth import mint_token
from tests.gateway.conftest import SECRET, Server, ServerFactory

TIMEOUT = 20.0


# -- frames ------------------------------------------------------------------------------------


class _Capture(asyncio.Transport):
    """A transport that keeps what is written (the boundary this test is not about)."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def write(self, data: Any) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
@pytest.mark.parametrize("binary", [False, True])
async def test_frame_is_the_one_aiohttp_writes(size: int, binary: bool) -> None:
    data: Any = bytes(range(256)) * (size // 256) + bytes(size % 256) if binary else "é" * size
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data)
    transport = _Capture()
    protocol: Any = SimpleNamespace(_paused=False)  # consulted past 64 KiB written
    writer = WebSocketWriter(protocol, transport)
    payload = data if binary else pkt.encode().encode()
    await writer.send_frame(payload, 0x2 if binary else 0x1)
    assert outgoing.websocket_frame(pkt) == bytes(transport.data)
    assert outgoing.websocket_frame(pkt) is outgoing.websocket_frame(pkt)  # built once


# -- order and completeness --------------------------------------------------------------------


class Recorder:
    """Every event a python-socketio client receives, in arrival order, in one list."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if len(args) == 1 else args))

    def sequence(self, event: str) -> list[int]:
        return [data["i"] for name, data in self.events if name == event]

    async def wait_for(self, event: str, count: int) -> None:
        for _ in range(int(TIMEOUT / 0.02)):
            if len(self.sequence(event)) >= count:
                return
            await asyncio.sleep(0.02)


async def _recorders(url: str, token: str) -> dict[str, Recorder]:
    recorders = {}
    for name, transports in {
        "websocket": ["websocket"],
        "polling": ["polling"],
        "upgraded": ["polling", "websocket"],
    }.items():
        r = Recorder()
        await r.sio.connect(
            url, auth={"token": token, "recovery": False}, transports=transports, wait_timeout=10
        )
        recorders[name] = r
    for _ in range(250):  # the third one upgrades to websocket in the background
        if recorders["upgraded"].sio.transport() == "websocket":
            break
        await asyncio.sleep(0.02)
    assert recorders["upgraded"].sio.transport() == "websocket"
    return recorders


#: (IDLE_GAP, IDLE_RATIO, BURST_HOLD): never idle (every packet through the outboxes), idle at
#: every iteration that begins with no flush pending (its first event per socket written at
#: once), and the default (a burst's first iteration at once, the next ones through the
#: outboxes: the switch between the two).
MODES = {
    "outboxes": (math.inf, outgoing.IDLE_RATIO, outgoing.BURST_HOLD),
    "at-once": (0.0, 0.0, 0.0),
    "adaptive": (outgoing.IDLE_GAP, outgoing.IDLE_RATIO, outgoing.BURST_HOLD),
}


def _idle_rule(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    gap, ratio, hold = MODES[mode]
    monkeypatch.setattr(outgoing, "IDLE_GAP", gap)
    monkeypatch.setattr(outgoing, "IDLE_RATIO", ratio)
    monkeypatch.setattr(outgoing, "BURST_HOLD", hold)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("batch_sockets", [outgoing.BATCH_SOCKETS, 1])
async def test_bursts_keep_order_on_every_transport(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, batch_sockets: int, mode: str
) -> None:
    # A small high-water mark: within a burst, packets go to the outbox, then (the TCP buffer
    # or the outbox over the mark) to python-engineio's queue, then to the outbox again.
    # batch_sockets 1: every flush waits BATCH_WAIT first, as a large room's does.
    monkeypatch.setattr(outgoing, "HIGH_WATER", 3_000)
    monkeypatch.setattr(outgoing, "BATCH_SOCKETS", batch_sockets)
    _idle_rule(monkeypatch, mode)
    # python-engineio's client refuses a polling payload of more packets than this (a
    # process-wide class attribute): a burst queued for a polling client exceeds the default.
    monkeypatch.setattr(engineio.payload.Payload, "max_decode_packets", 100_000)
    server = await make_server(event_rate=0, user_event_rate=0, max_outgoing_packets=0)
    eio = server.gw.sio.eio
    recorders = await _recorders(server.url, server.token("u1", "c1"))
    count = 600
    for i in range(count):
        data: dict[str, Any] = {"i": i, "pad": "x" * 150}
        if i % 7 == 0:
            data["blob"] = bytes([i % 256]) * 300  # a binary packet (an attachment with JSON)
        await server.gw.emit("project:updated", data, to=company_room("c1"))
        if i % 40 == 39:
            await asyncio.sleep(0)  # let the outboxes be written and the writers run
    for name, r in recorders.items():
        await r.wait_for("project:updated", count)
        assert r.sequence("project:updated") == list(range(count)), name
        blobs = [d["blob"] for n, d in r.events if n == "project:updated" and "blob" in d]
        assert blobs == [bytes([i % 256]) * 300 for i in range(0, count, 7)], name
    assert eio.stats["direct"] > 0 and eio.stats["queued"] > 0
    for r in recorders.values():
        await r.sio.disconnect()


async def test_nothing_is_queued_ahead_of_the_outbox(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outbox is written one loop iteration late (so that more events share the write):
    a packet that must take python-engineio's queue meanwhile first writes the outbox."""
    monkeypatch.setattr(outgoing, "HIGH_WATER", 3_000)
    _idle_rule(monkeypatch, "outboxes")
    r, eio_sid = await _websocket_recorder(server)
    eio = server.gw.sio.eio
    socket = eio.sockets[eio_sid]
    for i in range(3):  # 2,000 bytes each: two fit under the mark, the third is queued
        await server.gw.emit("project:updated", {"i": i, "pad": "x" * 2_000}, to=company_room("c1"))
    assert eio.outboxes[eio_sid].frames == []
    assert socket.queue.qsize() == 1
    await r.wait_for("project:updated", 3)
    assert r.sequence("project:updated") == [0, 1, 2]
    await r.sio.disconnect()


async def test_a_large_flush_waits_longer_only_once_events_share_writes(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush to many sockets waits BATCH_WAIT_FIRST while each event goes out alone (a
    chain of events each waiting for the last: a longer wait would slow every link), and
    BATCH_WAIT once a flush wrote two events to one socket (events come faster than they
    are written: waiting longer lets more of them share each write)."""
    _idle_rule(monkeypatch, "outboxes")
    r, _ = await _websocket_recorder(server)
    eio = server.gw.sio.eio
    eio._burst_until = 0.0
    await server.gw.emit("project:updated", {"i": 0}, to=company_room("c1"))
    await r.wait_for("project:updated", 1)
    assert eio.batch_wait() == outgoing.BATCH_WAIT_FIRST
    for i in (1, 2):  # two events in one iteration: one write
        await server.gw.emit("project:updated", {"i": i}, to=company_room("c1"))
    await r.wait_for("project:updated", 3)
    assert eio.batch_wait() == outgoing.BATCH_WAIT
    assert r.sequence("project:updated") == [0, 1, 2]
    await r.sio.disconnect()


async def _websocket_recorder(server: Server) -> tuple[Recorder, str]:
    r = Recorder()
    await r.sio.connect(
        server.url,
        auth={"token": server.token("u1", "c1"), "recovery": False},
        transports=["websocket"],
        wait_timeout=10,
    )
    return r, server.gw.sio.manager.eio_sid_from_sid(r.sio.get_sid(), "/")


async def test_an_idle_server_writes_at_once_a_busy_one_batches(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle (nothing written for IDLE_GAP), a packet is written as it is sent, no outbox in
    between; under load it waits in the outbox for the iteration's flush. Either way it
    arrives, in order."""
    eio = server.gw.sio.eio
    r, eio_sid = await _websocket_recorder(server)
    _idle_rule(monkeypatch, "at-once")
    await asyncio.sleep(0)  # a new iteration: the mode is decided at its first packet
    direct = eio.stats["direct"]
    await server.gw.emit("project:updated", {"i": 0}, to=company_room("c1"))
    assert eio.outboxes[eio_sid].frames == []  # already written
    assert eio.stats["direct"] == direct + 1
    await r.wait_for("project:updated", 1)
    _idle_rule(monkeypatch, "outboxes")
    await asyncio.sleep(0)
    await server.gw.emit("project:updated", {"i": 1}, to=company_room("c1"))
    assert len(eio.outboxes[eio_sid].frames) == 1  # held for the flush
    await r.wait_for("project:updated", 2)
    assert r.sequence("project:updated") == [0, 1]
    await r.sio.disconnect()


async def test_events_read_together_after_idle_share_the_outbox(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first event of an idle iteration is written at once; a second one for the same
    socket in that iteration (requests that arrived together) goes to the outbox, and so does
    everything after it until the flush, in order."""
    eio = server.gw.sio.eio
    r, eio_sid = await _websocket_recorder(server)
    _idle_rule(monkeypatch, "at-once")
    await asyncio.sleep(0)
    for i in range(4):
        await server.gw.emit("project:updated", {"i": i}, to=company_room("c1"))
    assert len(eio.outboxes[eio_sid].frames) == 3  # the first one is written
    await r.wait_for("project:updated", 4)
    assert r.sequence("project:updated") == [0, 1, 2, 3]
    # For BURST_HOLD seconds after such a burst, even a lone event goes to the outbox.
    monkeypatch.setattr(outgoing, "BURST_HOLD", math.inf)
    await asyncio.sleep(0)
    for i in range(4, 6):
        await server.gw.emit("project:updated", {"i": i}, to=company_room("c1"))
    await r.wait_for("project:updated", 6)  # flushed: no flush pending
    await server.gw.emit("project:updated", {"i": 6}, to=company_room("c1"))
    assert eio.outboxes[eio_sid].frames  # not written at once
    await r.wait_for("project:updated", 7)
    assert r.sequence("project:updated") == list(range(7))
    await r.sio.disconnect()


async def test_written_at_once_up_to_the_high_water_mark(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several packets written at once to one socket (a coalesced batch) go in one write up
    to HIGH_WATER bytes; the rest takes python-engineio's queue, and arrives after them."""
    monkeypatch.setattr(outgoing, "HIGH_WATER", 3_000)
    _idle_rule(monkeypatch, "at-once")
    eio = server.gw.sio.eio
    r, eio_sid = await _websocket_recorder(server)
    socket = eio.sockets[eio_sid]
    pkts = [
        eio_packet.Packet(
            eio_packet.MESSAGE, "2" + json.dumps(["project:updated", {"i": i, "pad": "x" * 2_000}])
        )
        for i in range(3)
    ]
    await asyncio.sleep(0)
    direct = eio.stats["direct"]
    eio.send_many(eio_sid, pkts)  # 2,000 bytes each: two fit under the mark
    assert eio.stats["direct"] == direct + 2
    assert eio.outboxes[eio_sid].frames == []
    assert socket.queue.qsize() == 1
    await r.wait_for("project:updated", 3)
    assert r.sequence("project:updated") == [0, 1, 2]
    await r.sio.disconnect()


async def test_acks_follow_the_events_emitted_before_them(server: Server) -> None:
    """An ack sent after an emit arrives after it, whichever path each took (the contract's
    ``document:updated`` before the writer's next answer)."""
    writer = await server.client("w")
    reader = Recorder()
    await reader.sio.connect(
        server.url,
        auth={"token": server.token("r"), "recovery": False},
        transports=["websocket"],
        wait_timeout=10,
    )
    assert (await writer.call("document:join", {"documentId": "d"}))["ok"]
    ack = await reader.sio.call("document:join", {"documentId": "d"}, timeout=10)
    assert ack["ok"]
    version = 0
    for i in range(30):
        ack = await writer.call(
            "document:update", {"documentId": "d", "version": version, "data": {"i": i}}
        )
        version = ack["version"]
        # The reader's own call is answered after every update it was sent before it.
        seen = await reader.sio.call("document:join", {"documentId": "d"}, timeout=10)
        updates = [d["data"]["i"] for n, d in reader.events if n == "document:updated"]
        assert updates == list(range(i + 1)), seen
    await reader.sio.disconnect()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_served_by_the_cli_on_each_event_loop(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway as deployed (``python -m gateway``, recovery on): concurrent publishes reach
    every socket once, and every socket sees them in the same order."""
    monkeypatch.setattr(engineio.payload.Payload, "max_decode_packets", 100_000)  # the client's
    if loop == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install uvloop)")
    port = _free_port()
    env = {**os.environ, "COLLAB_JWT_SECRET": SECRET}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gateway", "--host", "127.0.0.1", "--port", str(port)),
        *("--store", "memory://", "--event-loop", loop, "--event-rate", "0"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(url + "/health/websocket") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            recorders = await _recorders(url, mint_token(SECRET, sub="u1", company_id="c1"))
            service = mint_token(SECRET, sub="svc", company_id="c1", role="service")
            headers = {"Authorization": f"Bearer {service}"}
            count = 300

            async def publish(i: int) -> None:
                body = {
                    "event": "project:updated",
                    "companyId": "c1",
                    "data": {
                        "i": i,
                        "id": f"p{i}",
                        "companyId": "c1",
                        "status": "in_progress",
                        "updatedAt": "2026-11-25T00:00:00Z",
                        "name": "x" * 100,
                    },
                }
                async with http.post(url + "/api/events", json=body, headers=headers) as resp:
                    assert resp.status == 200, await resp.text()

            await asyncio.gather(*(publish(i) for i in range(count)))
            sequences = []
            for name, r in recorders.items():
                await r.wait_for("project:updated", count)
                seq = r.sequence("project:updated")
                assert sorted(seq) == list(range(count)), name  # each once
                sequences.append(seq)
            assert sequences[0] == sequences[1] == sequences[2]  # one order for everyone
            for r in recorders.values():
                await r.sio.disconnect()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert b"Traceback" not in err, err.decode(errors="replace")
