"""How packets reach clients: a broadcast encoded once, each websocket frame built once and
written straight to the connections, a bounded backlog per socket.

python-socketio, as shipped, delivers a room emit with one task per recipient; each task puts
the packet on the recipient's engine.io queue, where the socket's writer task wakes, encodes
it again and hands it to aiohttp, which builds the frame and writes it: three scheduling hops
and two encodings per recipient. Profiled at 1,000 recipients that was over half the server's
time (benchmarks/RESULTS.md). Here, extending python-socketio and python-engineio where they
are built to be extended (the client manager, the engine.io server class, its websocket
driver):

- :class:`FanoutManager` encodes an emit once (the Socket.IO packet and its engine.io
  packets) and hands it to every recipient in one synchronous loop: no task per recipient.
- :meth:`OutgoingEngineIO.send_now` delivers one packet to one socket. On a websocket whose
  engine.io writer is idle (nothing queued, nothing being written) and whose TCP buffer is
  below :data:`HIGH_WATER`, the packet's frame (built once per packet and identical for every
  recipient, since per-message compression is off by default) is written by the gateway
  itself, one of two ways:

  - *under load* (something was written less than :data:`IDLE_GAP` ago, or less than
    :data:`IDLE_RATIO` times as long ago as those writes took) it goes to the
    socket's outbox; the outboxes are written once per event-loop iteration, one
    ``transport.write`` per socket, however many events it got in that iteration (a connect
    storm's ``user:online`` burst costs one write per socket, not one per event), one
    iteration later than the next and, for 64 sockets or more, after :data:`BATCH_WAIT`, so
    that the next events share the write: at saturation the kernel write per recipient is
    the cost;
  - *idle* (an event now and then: 10 a second to 1,000 sockets, say) it is
    written at once, each recipient as the broadcast reaches it. No other event is coming to
    share the write, and an outbox would hold the first recipient's frame until the last
    one's was ready: at 1,000 recipients the first byte left ~5 ms after the event arrived,
    against ~1 ms written at once (``benchmarks/compare.py``'s latency phase). The mode is
    decided at the first packet of a loop iteration for the rest of it, and only when no
    flush is pending, so a frame written at once never overtakes one in an outbox.

  Otherwise (polling, an upgrade in progress, a writer still busy, a full TCP buffer,
  compression negotiated) the packet goes to python-engineio's queue as before. A frame is
  written directly only when nothing sent to that socket before it is still waiting, and the
  outboxes are written before any writer woken after them runs, so each socket receives its
  packets in the order they were sent.
- The bound: a socket whose queue holds ``max_queue`` packets is cut (closed without
  waiting, its queue dropped, its TCP connection aborted; python-socketio's disconnect
  handlers run). python-engineio queues without bound, so a client that stops reading would
  otherwise grow the server's memory until its ping timeout, or forever when the writer is
  blocked on a full TCP window. With the outbox, what a slow client can cost is its TCP
  buffer up to :data:`HIGH_WATER`, then ``max_queue`` packets.

Per-message compression (permessage-deflate): ``socket.io-client`` offers it, aiohttp accepts
by default, Node's socket.io server declines by default. Accepted, it costs ~90 KiB of zlib
state per connection and one compression per recipient per event (the frame can no longer be
shared); so it is declined unless ``--ws-compression`` is set (then those sockets use the
queue path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from struct import Struct
from time import perf_counter
from typing import Any

import engineio
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as engineio_aiohttp
from socketio import packet as sio_packet
from socketio.async_pubsub_manager import AsyncPubSubManager

#: Bytes buffered for one socket (in the kernel's stead: what the TCP send buffer did not
#: take, plus its outbox) above which its packets go through python-engineio's queue, whose
#: writer waits for the buffer to drain (and whose length is bounded).
HIGH_WATER = 256 * 1024
#: A flush that would write to at least this many sockets (a broadcast to a large room) waits
#: :data:`BATCH_WAIT` seconds first, so that the events of the next few loop iterations (one
#: writer's next writes, each a turn of its socket) share each socket's write: the kernel
#: write per recipient, not the event, is the cost there. Smaller flushes go out at once.
#: Only under load (the idle rule below writes at once): one writer's acknowledged writes to a
#: room of 100 sockets (``benchmarks/fanout.py``, document room) gave 143-151k deliveries/s
#: waiting 1 ms, 191-199k waiting 4 ms and 207-212k waiting 8 ms (then bound by the load
#: generator), and p99 at saturation fell from ~160 to ~105 ms.
BATCH_SOCKETS = 64
BATCH_WAIT = 0.008
#: The wait while this node's events have not shared a write lately (:data:`BURST_HOLD`):
#: long enough for a writer's next events to catch up and start sharing, short enough that
#: a chain of events each waiting for the one before (editors taking turns, each writing once
#: it has seen the last write: ``benchmarks/edit.py``, ``current``) is not slowed by the
#: longer wait, which no other event would share.
BATCH_WAIT_FIRST = 0.001
#: The server counts as idle when nothing was written for this many seconds, and for at
#: least :data:`IDLE_RATIO` times as long as its last writes took: then the packets of the
#: next loop iteration are written at once, each as it is sent (no outbox, no flush), since no
#: other event is coming to share the write and the first recipients should not wait for the
#: last one's frame. Otherwise (events arriving faster, or piling up while the last ones were
#: written) they go through the outboxes. Longer than :data:`BATCH_WAIT`.
IDLE_GAP = 0.009
#: Writing kept the server busy for less than 1 / (1 + this) of the time: idle. A broadcast
#: to 1,000 sockets takes ~10 ms of writes; at 10 events a second the gap is ~90 ms (idle),
#: at saturation a few ms (under load).
IDLE_RATIO = 2.0
#: Seconds the server does not count as idle after events shared a write: a flush wrote two
#: packets or more to one socket, or the iteration that wrote at once had a second event for
#: one (requests read together after an idle time). Load comes in bursts with idle gaps
#: between them (a publisher waiting for its deliveries, then sending the next few); measured
#: at 1,000 sockets with 8 publishers at saturation, writing each burst's first event at once
#: cost ~5 % of the deliveries/s.
BURST_HOLD = 1.0

_LEN1 = Struct("!BB")
_LEN2 = Struct("!BBH")
_LEN3 = Struct("!BBQ")
_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode
_FRAME = "collab_frame"  # attribute caching an engine.io packet's websocket frame


def websocket_frame(pkt: eio_packet.Packet) -> bytes:
    """The server-to-client websocket frame (unmasked, uncompressed) of an engine.io packet:
    the same bytes for every websocket recipient, so built once per packet and cached on it.

    Text packets are their engine.io encoding in UTF-8 (type digit + payload); binary ones are
    their raw bytes, as python-engineio sends them on a websocket.
    """
    frame: bytes | None = pkt.__dict__.get(_FRAME)
    if frame is not None:
        return frame
    if pkt.binary:
        payload, first = bytes(pkt.data), _BINARY
    else:
        payload, first = pkt.encode().encode("utf-8"), _TEXT
    n = len(payload)
    if n < 126:
        header = _LEN1.pack(first, n)
    elif n < 65536:
        header = _LEN2.pack(first, 126, n)
    else:
        header = _LEN3.pack(first, 127, n)
    frame = header + payload
    setattr(pkt, _FRAME, frame)
    return frame


def own_copy(pkt: eio_packet.Packet) -> eio_packet.Packet:
    """A binary engine.io packet of its own for a recipient served by python-engineio's queue.

    python-engineio caches a packet's first encoding without noting which transport it was
    for: raw bytes for a websocket, which a polling member (who needs base64 text) would then
    receive, breaking its payload. Text packets encode the same for both.
    """
    if pkt.binary:
        return eio_packet.Packet(pkt.packet_type, pkt.data)
    return pkt


class Outbox:
    """Frames waiting to be written to one websocket connection in this loop iteration."""

    __slots__ = ("frames", "live", "round", "size", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self.ws = ws
        self.transport = transport
        self.frames: list[bytes] = []
        self.size = 0
        #: Whether the engine.io socket runs on this websocket (an upgrade from polling is
        #: over; it never goes back).
        self.live = False
        #: The last idle iteration in which a packet was written to it at once.
        self.round = 0

    def check_live(self, socket: Any) -> bool:
        self.live = bool(socket.upgraded and not socket.upgrading)
        return self.live


class _Connection(engineio_aiohttp.WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp websocket driver, with compression as configured, the
    connection known to :class:`OutgoingEngineIO` (its outbox; its TCP connection, to abort),
    and an end that leaves no reference cycle (:meth:`wait`)."""

    async def __call__(self, environ: dict[str, Any]) -> Any:
        server: OutgoingEngineIO = self.server
        request = environ["aiohttp.request"]
        ws = web.WebSocketResponse(
            max_msg_size=server.max_http_buffer_size, compress=server.ws_compression
        )
        self._sock = ws
        await ws.prepare(request)
        self.environ = environ
        socket = getattr(self.handler, "__self__", None)
        sid = getattr(socket, "sid", None)
        if sid is not None:
            server.connections[sid] = request
            if not ws.compress and request.transport is not None:
                server.outboxes[sid] = Outbox(ws, request.transport)
        try:
            await self.handler(self)
        finally:
            if sid is not None:
                server.connections.pop(sid, None)
                server.outboxes.pop(sid, None)
        return ws

    async def wait(self) -> Any:
        """The next message, or None once the websocket closes (python-engineio's handler
        treats None as "connection closed by client" and ends the connection).

        python-engineio's driver raises ``OSError`` there instead; its reading task keeps the
        exception, whose traceback refers back to the task and to every object of the
        connection (the aiohttp request and its handler, transport, websocket, the engine.io
        socket and its queue; ~70 objects): a reference cycle per closed websocket that only
        a full garbage collection frees. After a connection storm those cycles were promoted
        to the oldest generation and lingered for minutes, keeping CPython's 1-MiB arenas
        resident (``benchmarks/soak.py``: at 1,000 clients all 983 connections of the warm-up
        were still there at its baseline). Returning None frees the connection by reference
        counting as soon as it ends."""
        data = (await self._sock.receive()).data
        return data if isinstance(data, str | bytes) else None


class OutgoingEngineIO(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with :meth:`send_now` (the outbox fast path) and the bound on
    each socket's queue. Every packet to a client passes :meth:`send_now`: python-socketio's
    acks and emits through :meth:`send_packet`, broadcasts from :class:`FanoutManager`."""

    _async: dict[str, Any]  # python-engineio's driver table (set by its __init__)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Packets queued per socket before it is cut; 0 = no bound (python-engineio's own).
        self.max_queue = 0
        #: Whether permessage-deflate is accepted when a client offers it.
        self.ws_compression = False
        #: Called with the engine.io sid of each socket cut (metrics, log).
        self.on_overflow: Callable[[str], None] | None = None
        #: engine.io sid -> the aiohttp request of its websocket, while it runs.
        self.connections: dict[str, web.Request] = {}
        #: engine.io sid -> the outbox of its websocket (unless it negotiated compression).
        self.outboxes: dict[str, Outbox] = {}
        #: Frames written from outboxes, packets handed to python-engineio's queue (/metrics).
        self.stats = {"direct": 0, "queued": 0}
        self._dirty: list[Outbox] = []
        self._flush_scheduled = False
        #: Whether this loop iteration writes at once (it began idle: :data:`IDLE_GAP`), and
        #: since when (``time.perf_counter``).
        self._direct = False
        self._direct_since = 0.0
        #: Counts the idle iterations (:attr:`Outbox.round`).
        self._round = 0
        #: Until when the server does not count as idle (:data:`BURST_HOLD`).
        self._burst_until = 0.0
        #: Seconds the last writes took: the last flush, or the last iteration writing at once.
        self._last_busy = 0.0
        #: When the last writes ended (``time.perf_counter``: the loop's clock is read once
        #: per iteration by uvloop, so it cannot time a flush).
        self._last_write = 0.0
        self._flush_waited = False
        self._cutting: set[str] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        if self._async.get("websocket") is engineio_aiohttp.WebSocket:
            # A copy: the driver table is python-engineio's module-level dict.
            self._async = {**self._async, "websocket": _Connection}

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        self.send_now(sid, pkt)

    def send_now(self, sid: str, pkt: eio_packet.Packet) -> None:
        """Deliver ``pkt`` to socket ``sid`` without waiting (:meth:`send_many`)."""
        self.send_many(sid, (pkt,))

    def send_many(self, sid: str, pkts: Sequence[eio_packet.Packet]) -> None:
        """Deliver ``pkts`` to socket ``sid``, in order, without waiting, while its websocket
        is idle: written at once when the server is idle (:meth:`_writing_at_once`), else into
        its outbox, up to :data:`HIGH_WATER` bytes; the rest onto python-engineio's queue
        (bounded). A gone socket is skipped, as python-engineio's ``send_packet`` does. (Ping
        timeouts are python-engineio's service task's to find, as for a socket nothing is sent
        to.)"""
        socket = self.sockets.get(sid)
        if socket is None or socket.closed:
            return
        box = self.outboxes.get(sid)
        if box is not None and _idle(socket, box):
            frames = box.frames
            first = not frames
            if first and (self._direct or not self._flush_scheduled) and self._at_once(box):
                n = self._write_now(box, pkts)
            else:
                n, box.size = _take_frames(pkts, box.size, frames)
                if first and n:
                    self._dirty.append(box)
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        # Written one iteration later than the next: the events of a few more
                        # tasks (one writer's pipelined writes, other rooms' broadcasts) share
                        # the write. Whatever goes to the queue meanwhile first writes this.
                        loop = asyncio.get_running_loop()
                        loop.call_soon(loop.call_soon, self._flush)
            if n == len(pkts):
                return
            pkts = pkts[n:]
        for pkt in pkts:
            self._enqueue(socket, pkt)

    def _at_once(self, box: Outbox) -> bool:
        """Whether a packet for ``box``'s idle connection, which has nothing in its outbox, is
        written at once (:meth:`_writing_at_once`). Once per socket per idle iteration: a
        second event for the same socket in it means the events came faster than one at a
        time (requests that waited while the server was busy, read together); they and the
        rest of the iteration go through the outboxes, to share each socket's write, and so
        do the next :data:`BURST_HOLD` seconds' events."""
        if not self._direct and not self._writing_at_once():
            return False
        if box.round == self._round:
            self._direct = False
            self._burst_until = perf_counter() + BURST_HOLD
            return False
        box.round = self._round
        return True

    def _writing_at_once(self) -> bool:
        """Whether the rest of this loop iteration writes packets at once rather than through
        the outboxes: decided at its first packet for an idle websocket, yes when no flush is
        pending (every outbox is empty, so nothing can be overtaken), nothing was written for
        :data:`IDLE_GAP` and :data:`IDLE_RATIO` times as long as the last writes took, and the
        server's events did not share a write in the last :data:`BURST_HOLD` seconds.

        Under load (events arriving faster than that) the outboxes let the events of the next
        iterations share each socket's write, which is what a large room's throughput depends
        on (and its clients', which read one segment instead of several). Idle, an outbox only
        adds latency: no other event is coming to share the write, and its flush writes to the
        first recipient only once the last one's packets are ready (at 1,000 recipients, ~3 ms
        of the deliver loop plus the deferral and :data:`BATCH_WAIT` before the first byte
        left). Written at once, each recipient's frame leaves as soon as it is its turn, as
        Node's socket.io writes."""
        if self._flush_scheduled:
            return False
        now = perf_counter()
        if now < self._burst_until or now - self._last_write < max(
            IDLE_GAP, IDLE_RATIO * self._last_busy
        ):
            return False
        self._direct = True
        self._direct_since = now
        self._round += 1
        asyncio.get_running_loop().call_soon(self._end_direct)
        return True

    def _end_direct(self) -> None:
        self._direct = False
        self._last_write = perf_counter()
        self._last_busy = self._last_write - self._direct_since

    def _write_now(self, box: Outbox, pkts: Sequence[eio_packet.Packet]) -> int:
        """Write the frames of ``pkts`` to ``box``'s idle connection in one write, up to
        :data:`HIGH_WATER` bytes with what its TCP buffer holds; returns how many went (the
        rest is the caller's to queue). Nothing is written to a closing connection (as in
        :meth:`_write`)."""
        if box.ws.closed:
            return len(pkts)
        transport = box.transport
        if len(pkts) == 1:  # the common case: one event
            transport.write(websocket_frame(pkts[0]))
            self.stats["direct"] += 1
            return 1
        frames: list[bytes] = []
        n, _ = _take_frames(pkts, transport.get_write_buffer_size(), frames)
        transport.write(b"".join(frames))
        self.stats["direct"] += n
        return n

    def _enqueue(self, socket: Any, pkt: eio_packet.Packet) -> None:
        """python-engineio's path: onto the socket's queue, or cut it when the queue is full.
        Frames still in the socket's outbox were sent before: they are written first."""
        box = self.outboxes.get(socket.sid)
        if box is not None and box.frames:
            self._write(box)
        queue: asyncio.Queue[Any] = socket.queue
        if self.max_queue and queue.qsize() >= self.max_queue and not socket.closing:
            if socket.sid not in self._cutting:
                self._cutting.add(socket.sid)
                self._spawn(self._cut(socket))
            return
        queue.put_nowait(own_copy(pkt))
        self.stats["queued"] += 1

    def _flush(self) -> None:
        """Write every outbox: one write per socket (a large broadcast after
        :data:`BATCH_WAIT`)."""
        if len(self._dirty) >= BATCH_SOCKETS and not self._flush_waited:
            self._flush_waited = True
            asyncio.get_running_loop().call_later(self.batch_wait(), self._flush)
            return
        self._flush_waited = False
        self._flush_scheduled = False
        started = perf_counter()
        dirty, self._dirty = self._dirty, []
        shared = False
        for box in dirty:
            if box.frames:
                shared = shared or len(box.frames) > 1
                self._write(box)
        self._last_write = perf_counter()
        self._last_busy = self._last_write - started
        if shared:
            self._burst_until = self._last_write + BURST_HOLD

    def batch_wait(self) -> float:
        """How long a flush to :data:`BATCH_SOCKETS` sockets or more waits:
        :data:`BATCH_WAIT` while events share writes (:data:`BURST_HOLD`), else
        :data:`BATCH_WAIT_FIRST`."""
        return BATCH_WAIT if perf_counter() < self._burst_until else BATCH_WAIT_FIRST

    def _write(self, box: Outbox) -> None:
        frames, box.frames, box.size = box.frames, [], 0
        transport = box.transport
        if transport.is_closing() or box.ws.closed:
            return  # the connection is going: its client reconnects (and may recover)
        transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        self.stats["direct"] += len(frames)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "message":
            # python-engineio would start a task per incoming message, and python-socketio
            # then starts one per event (its ``async_handlers``): one is enough. Decoding a
            # message and starting its event's task run here, in the socket's read loop.
            kwargs.pop("run_async", None)
        result = await super()._trigger_event(event, *args, **kwargs)
        if event == "disconnect" and args:
            socket = self.sockets.get(args[0])
            if socket is not None and not socket.upgraded:
                # A polling client's pending GET would otherwise wait out its poll timeout
                # (ping interval + timeout) on the closed socket's queue, holding the request,
                # and a graceful shutdown, that long: end it now.
                socket.queue.put_nowait(None)
        return result

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cut(self, socket: Any) -> None:
        try:
            if socket.closed or socket.closing:
                return
            if self.on_overflow is not None:
                self.on_overflow(socket.sid)
            _drain(socket.queue)
            request = self.connections.pop(socket.sid, None)
            self.outboxes.pop(socket.sid, None)
            await socket.close(wait=False, abort=True, reason=self.reason.SERVER_DISCONNECT)
            _drain(socket.queue)  # what the disconnect handlers queued
            socket.queue.put_nowait(None)  # wakes the websocket writer or a waiting polling GET
            transport = request.transport if request is not None else None
            if transport is not None:
                transport.abort()
        finally:
            self._cutting.discard(socket.sid)


def _take_frames(
    pkts: Sequence[eio_packet.Packet], size: int, frames: list[bytes]
) -> tuple[int, int]:
    """Append to ``frames`` the frames of ``pkts``, in order, while ``size`` (the bytes already
    waiting for the connection) is below :data:`HIGH_WATER`: how many went, and the new size."""
    n = 0
    for pkt in pkts:
        if size >= HIGH_WATER:
            break
        frame = websocket_frame(pkt)
        frames.append(frame)
        size += len(frame)
        n += 1
    return n, size


def _idle(socket: Any, box: Outbox) -> bool:
    """Whether a frame for ``socket`` may go to its outbox now: its engine.io writer waits on
    an empty queue (an asyncio.Queue's items and waiting getters), so it holds nothing not yet
    written; the socket runs on this websocket; and its TCP connection is open and not backed
    up (checked at the outbox's first frame of the iteration)."""
    queue = socket.queue
    if queue._queue or not queue._getters or not (box.live or box.check_live(socket)):
        return False
    if box.frames:
        return True
    transport = box.transport
    return transport.get_write_buffer_size() < HIGH_WATER and not transport.is_closing()


def _drain(queue: asyncio.Queue[Any]) -> None:
    while True:
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        queue.task_done()


class FanoutManager(socketio.AsyncManager):  # type: ignore[misc]
    """python-socketio's client manager whose emit (without a callback) encodes once and
    delivers to every recipient synchronously through the server's ``deliver``
    (``gateway.sio.GatewayServer.deliver``: the hooks, then :meth:`OutgoingEngineIO.send_now`).

    Emits asking for a callback (a distinct ack id per recipient) keep python-socketio's
    path. ``gateway.fanout.RedisFanout`` puts this class under python-socketio's pub/sub
    manager, so a room emit that arrives from another node is delivered the same way."""

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or not hasattr(self.server, "deliver"):
            await super().emit(
                event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs
            )
            return
        self._deliver(namespace, room, [(event, event_args(data), skip_sid)])

    async def emit_many(
        self, namespace: str, room: str, events: Sequence[tuple[str, tuple[Any, ...], Any]]
    ) -> None:
        """Emit ``(event, args, skip_sid)`` to ``room``, in order, in one pass over its
        members: each gets its packets in one call (one outbox write). Through :meth:`emit`,
        one by one, under python-socketio's pub/sub managers (each event is published)."""
        if not hasattr(self.server, "deliver") or isinstance(self, AsyncPubSubManager):
            for event, args, skip_sid in events:
                await self.emit(event, args, namespace, room=room, skip_sid=skip_sid)
            return
        self._deliver(namespace, room, events)

    def _deliver(
        self, namespace: str, room: Any, events: Sequence[tuple[str, tuple[Any, ...], Any]]
    ) -> None:
        """Encode ``events`` once and hand each member of ``room`` its packets: all of them,
        or, to a socket some event skips, the others. Nothing is encoded for a room with no
        recipient (a writer alone in its document's room)."""
        if namespace not in self.rooms:
            return
        skips = [_skipped(skip) for _, _, skip in events]
        skipped = frozenset().union(*skips)
        everyone: list[Any] = []
        partial: list[tuple[Any, list[int]]] = []
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid not in skipped:
                everyone.append(eio_sid)
                continue
            wanted = [i for i, skip in enumerate(skips) if sid not in skip]
            if wanted:
                partial.append((eio_sid, wanted))
        if not everyone and not partial:
            return
        packets = [self._packets(namespace, event, args) for event, args, _ in events]
        deliver = self.server.deliver
        for eio_sid, wanted in partial:
            deliver((eio_sid,), [pkt for i in wanted for pkt in packets[i]])
        if everyone:
            deliver(everyone, [pkt for pkts in packets for pkt in pkts])

    def _packets(self, namespace: str, event: str, args: Sequence[Any]) -> list[eio_packet.Packet]:
        """The engine.io packets of an event (one, or more for binary attachments with the
        JSON serializer), encoded once for every recipient."""
        pkt = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args])
        encoded = pkt.encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        return [eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]


def event_args(data: Any) -> tuple[Any, ...]:
    """Socket.IO event arguments of an emit's ``data``, as python-socketio reads it: a tuple
    is several arguments, None none, anything else one."""
    return () if data is None else data if isinstance(data, tuple) else (data,)


def _skipped(skip_sid: Any) -> frozenset[Any]:
    if skip_sid is None:
        return frozenset()
    if isinstance(skip_sid, list | tuple | set | frozenset):
        return frozenset(skip_sid)
    return frozenset((skip_sid,))
