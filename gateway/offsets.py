"""Offsets on the wire: how an event gets one, and who sees it.

- :class:`Sequencer` is the emit path of every logged event: it appends packets to the
  recovery log, then hands each to the node's Socket.IO server in offset order with its
  offset as the last argument, and returns to each emitter once its event is delivered
  locally (so an ack sent after an emit still follows the event). The server's client
  manager fans it out to the other nodes unchanged, offset included.

  With the in-memory log, whose append never pauses, each emitter appends and delivers in its
  own task: nothing pauses between the two, so packets go out in offset order. With Redis,
  one task appends what is queued in batches (one round trip each) and starts one delivery
  task per packet, in offset order (asyncio starts tasks in creation order, and
  python-socketio queues a packet for every recipient before its first pause); it never
  awaits them, since a delivery may emit in turn (a socket cut for its backlog announces
  ``user:offline``) and must not wait on itself.

  When the log fails, events are delivered without offsets and the next append starts with a
  gap marker: nobody recovers across events that were not logged.
- :func:`tag_of` recognises, on any node, an outgoing engine.io packet that carries an offset
  (an event whose last argument is an offset string, as the sequencer writes it) and gives
  the same packet without it: clients that did not opt in to recovery (python-socketio
  clients among them, whose handlers take exactly the arguments sent) never see offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgpack
from engineio import packet as eio_packet

from gateway.eventlog import Key, Packet, RecoveryLog, gap_marker, parse_offset

log = logging.getLogger("gateway.offsets")

#: Packets appended in one round trip at most.
MAX_BATCH = 256
#: Seconds :meth:`Sequencer.stop` waits for what is queued to go out.
STOP_TIMEOUT = 5.0

Deliver = Callable[[Packet, str | None], Coroutine[Any, Any, None]]
DeliverMany = Callable[[Sequence[Packet], Sequence[str | None]], Coroutine[Any, Any, None]]


class Sequencer:
    """Appends emitted packets to ``log`` in batches and delivers them in offset order."""

    def __init__(self, log: RecoveryLog, deliver: Deliver) -> None:
        self.log = log
        self.deliver = deliver
        self._queue: deque[tuple[Packet, asyncio.Future[None]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False
        #: Whether the last append failed: the next batch starts with a gap marker.
        self._gap = False
        #: Events delivered without an offset (the log failed), for the logs and tests.
        self.unlogged = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("Sequencer already started")
        self._task = asyncio.create_task(self._run(), name="collab-recovery-sequencer")

    async def stop(self) -> None:
        """Deliver what is queued (within :data:`STOP_TIMEOUT`), then stop. Idempotent."""
        task, self._stopping = self._task, True
        self._wake.set()
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        while self._queue:
            _, fut = self._queue.popleft()
            if not fut.done():
                fut.set_exception(RuntimeError("the gateway is stopping"))
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=STOP_TIMEOUT)

    async def submit(self, packet: Packet) -> None:
        """Log and deliver ``packet``; returns once this node delivered it."""
        if self.log.synchronous:
            # Nothing pauses between the append and python-socketio queueing the packet for
            # every recipient: emitters' packets go out in offset order without batches.
            [offset] = await self._append([packet])
            await self.deliver(packet, offset)
            return
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((packet, fut))
        self._wake.set()
        await fut

    async def submit_many(self, packets: Sequence[Packet], deliver: DeliverMany) -> None:
        """Log ``packets`` in one append and hand them to ``deliver`` together, in offset
        order (an in-memory log: nothing pauses between the two); with a log that pauses, one
        by one through :meth:`submit`."""
        if not self.log.synchronous:
            for packet in packets:
                await self.submit(packet)
            return
        offsets = await self._append(list(packets))
        await deliver(packets, offsets)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            offsets = await self._append([packet for packet, _ in batch])
            for (packet, fut), offset in zip(batch, offsets, strict=True):
                task = asyncio.create_task(self.deliver(packet, offset))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
                task.add_done_callback(partial(_settle, fut))

    async def _append(self, packets: list[Packet]) -> list[str | None]:
        gap = self._gap
        try:
            offsets: list[str | None] = list(
                await self.log.append([gap_marker(), *packets] if gap else packets)
            )
        except Exception as exc:
            if not self._gap:
                log.error("recovery log: cannot append (%s); events go out without offsets", exc)
            self._gap = True
            self.unlogged += len(packets)
            return [None] * len(packets)
        if gap:
            log.warning("recovery log: appending again (a gap marks what was not logged)")
            self._gap = False
            return offsets[1:]
        return offsets


def _settle(fut: asyncio.Future[None], task: asyncio.Task[None]) -> None:
    """Tell the emitter how its delivery went."""
    if fut.done():
        return
    if task.cancelled():
        fut.cancel()
    elif task.exception() is not None:
        fut.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        fut.set_result(None)


# -- on the wire ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tag:
    """An outgoing event packet that carries an offset."""

    offset: str
    key: Key
    #: Binary attachments following it (the JSON serializer sends them as packets of their own).
    attachments: int
    #: The same packet without the offset.
    plain: eio_packet.Packet


_EVENT_TYPES = ("2", "5")  # EVENT, BINARY_EVENT
_TAG = "collab_tag"  # attribute caching a packet's Tag (or None)


def tag_of(pkt: eio_packet.Packet, *, msgpack_serializer: bool) -> Tag | None:
    """The :class:`Tag` of ``pkt`` if it is an event carrying an offset (cached on the packet:
    a broadcast sends one packet object to every recipient)."""
    cached = pkt.__dict__.get(_TAG, pkt)
    if cached is not pkt:
        return cached  # type: ignore[no-any-return]
    tag = _tag(pkt, msgpack_serializer)
    setattr(pkt, _TAG, tag)
    return tag


def _tag(pkt: eio_packet.Packet, msgpack_serializer: bool) -> Tag | None:
    if pkt.packet_type != eio_packet.MESSAGE:
        return None
    data = pkt.data
    if isinstance(data, str):
        # JSON: a quote inside a string is escaped, so the last `,"` of an argument array
        # ending in `"]` opens its last argument when that argument is a string.
        if not data.endswith('"]') or data[:1] not in _EVENT_TYPES:
            return None
        cut = data.rfind(',"')
        key = parse_offset(data[cut + 2 : -2]) if cut > 0 else None
        if key is None:
            return None
        attachments = 0
        if data[0] == "5":
            attachments = int(data[1 : data.index("-")])
        plain = eio_packet.Packet(eio_packet.MESSAGE, data[:cut] + "]")
        return Tag(data[cut + 2 : -2], key, attachments, plain)
    if not msgpack_serializer or not isinstance(data, bytes | bytearray):
        return None  # a binary attachment of the JSON serializer
    return _msgpack_tag(bytes(data))


def _msgpack_tag(data: bytes) -> Tag | None:
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(decoded, dict) or decoded.get("type") != 2:
        return None
    args = decoded.get("data")
    if not isinstance(args, list) or len(args) < 2:
        return None
    key = parse_offset(args[-1])
    if key is None:
        return None
    plain = msgpack.packb({**decoded, "data": args[:-1]})
    return Tag(args[-1], key, 0, eio_packet.Packet(eio_packet.MESSAGE, plain))
