"""Connection state recovery, as socket.io 4.6+ does it with the official client
(docs/recovery.md): a client whose transport dropped reconnects within the window, on any
node, and gets its session back (rooms, presence untouched) with every event it missed, in
order, each once.

The protocol (socket.io-client ``lib/socket.ts``): the CONNECT reply carries a private session
id ``pid``; every event carries an offset as its last argument; the client keeps the last
offset it received and, when it reconnects, sends ``{pid, offset}`` in the CONNECT auth; it
sets ``socket.recovered`` when the reply names the same ``pid``. Here:

- On by default, as in socket.io: every client gets a ``pid`` and offsets, which the
  official ``socket.io-client`` reads and its listeners ignore. A client opts out with
  ``auth: {token, recovery: false}`` — python-socketio clients should, since their handlers
  take exactly the arguments sent and an extra offset breaks them (:mod:`gateway.offsets`
  strips offsets for such sockets).
- Every event the gateway emits goes through :meth:`Recovery.emit`, the one emit path:
  logged (:mod:`gateway.eventlog`) and given its offset, except an event to one socket of this
  node that did not opt in (nobody could recover it).
- A socket of an opted-in client that drops without a deliberate disconnect (transport closed
  or failed, ping timeout; not ``socket.disconnect()``, a server kick or an expired token) is
  *held*: its session is saved for the window and it stays counted in presence, so neither
  ``user:offline`` nor, if it comes back, ``user:online`` goes out. The hold ends when the
  session is recovered or the window passes (then presence forgets the socket, announcing
  ``user:offline`` if it was the user's last connection).
- A CONNECT with a known ``pid``, a token of the same user and company, within the window:
  the session's rooms are entered again and its missed packets sent, before the CONNECT
  reply (socket.io-client emits them right after ``connect``). Live events for the socket are
  held back meanwhile, and any the replay already covered are dropped, so none is lost, doubled
  or reordered. The new socket has a new id; the session keeps its old ones for packets
  addressed to them. Otherwise the client gets a fresh session and a new ``pid``
  (``socket.recovered`` false): it must join its documents again.

Which packets a session missed: those after the client's last offset that went to one of its
sockets or to one of its rooms after it entered the room, and did not skip it. A client that
received nothing of what was sent to it can recover too (the client then sends no offset):
the server knows the last offset it sent and how far its node had got when it dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from collab.rooms import company_room
from gateway import logs
from gateway.auth import Identity
from gateway.eventlog import (
    ZERO,
    Entry,
    Key,
    Packet,
    RecoveryLog,
    SavedSession,
    format_offset,
    open_log,
    parse_offset,
)
from gateway.offsets import Sequencer, Tag, tag_of
from gateway.outgoing import event_args
from gateway.presence import presence_event

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger("gateway.recovery")

#: Seconds a saved session outlives its window in the log (the holding node's timer, not the
#: key's expiry, ends the hold).
GRACE = 30.0
#: Socket ids a session remembers (one per recovery).
MAX_SIDS = 8
#: Missed events replayed at most (half the outgoing-queue bound when there is one): a client
#: that missed more gets a new session and resynchronises, which costs less.
MAX_REPLAY = 10_000
#: Replayed packets between two pauses that let the socket's writer drain its queue.
REPLAY_BATCH = 64
_PID = re.compile(r"[A-Za-z0-9_-]{16,64}")


#: An event to emit: name, data (a tuple: several arguments), room or sid, the sid or sids
#: to skip.
Emission = tuple[str, Any, str, str | tuple[str, ...] | None]


def new_pid() -> str:
    return secrets.token_urlsafe(18)


@dataclass(slots=True)
class _Handshake:
    """An opted-in client's CONNECT, between the packet and the connect handler."""

    pid: str | None
    offset: Any


@dataclass(eq=False, slots=True)
class Tracked:
    """A connected socket of an opted-in client."""

    pid: str
    sid: str
    eio_sid: str
    #: This session's socket ids, the current one last.
    sids: tuple[str, ...]
    #: Rooms (its own sid's included) -> the node's offset when it entered them.
    rooms: dict[str, Key]
    company_id: str
    user_id: str
    last_sent: str | None = None
    #: Set when its transport dropped (not a deliberate disconnect).
    recoverable: bool = False
    #: Outgoing packets held back while missed ones are replayed.
    paused: list[eio_packet.Packet] | None = None
    #: Packets at or before this offset were covered by the replay: live copies are dropped.
    replayed_to: Key | None = None
    #: Binary attachments still to drop (their event was dropped).
    drop_attachments: int = 0
    #: The previous socket's hold, released once this one counts in presence.
    previous: _Hold | None = None


@dataclass(eq=False, slots=True)
class _Hold:
    """A dropped socket kept in presence for the window."""

    sid: str
    company_id: str
    user_id: str
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Counters:
    held: int = 0
    recovered: int = 0
    refused: int = 0
    replayed: int = 0


class Recovery:
    """Connection state recovery for one node: the emit path, the server's hooks
    (``gateway.sio.ServerHooks``), holds and restores. Disabled with a window of 0: emits go
    straight to the server and nobody gets a pid."""

    def __init__(self, gw: Gateway, log: RecoveryLog | None = None) -> None:
        self.gw = gw
        self.sio = gw.sio
        self.window = gw.settings.recovery_window
        self.enabled = self.window > 0
        self.log: RecoveryLog | None = None
        self.sequencer: Sequencer | None = None
        if self.enabled:
            self.log = log or open_log(gw.settings.redis, window=self.window)
            self.sequencer = Sequencer(self.log, self._deliver)
            self.sio.hooks = self
        #: The highest offset this node delivered or saw go out.
        self.head: Key = ZERO
        self.counters = _Counters()
        self._msgpack = self.sio.packet_class.uses_binary_events is False
        bound = int(getattr(gw.settings, "max_outgoing_packets", 0) or 0)
        self.max_replay = min(MAX_REPLAY, bound // 2) if bound > 0 else MAX_REPLAY
        self._handshakes: dict[str, _Handshake] = {}  # eio sid ->
        self._sockets: dict[str, Tracked] = {}  # sid ->
        self._by_eio: dict[str, Tracked] = {}
        self._holds: dict[str, _Hold] = {}  # sid of a dropped socket ->

    async def start(self) -> None:
        if self.log is not None and self.sequencer is not None:
            await self.log.start()
            self.sequencer.start()

    async def stop(self) -> None:
        """Deliver what is queued, forget the holds (presence forgets this node's sockets on
        its own), release the log."""
        for hold in self._holds.values():
            if hold.timer is not None:
                hold.timer.cancel()
        self._holds.clear()
        if self.sequencer is not None:
            await self.sequencer.stop()
        if self.log is not None:
            await self.log.stop()

    # -- the emit path --------------------------------------------------------------------

    async def emit(self, event: str, data: Any, *, to: str, skip_sid: str | None) -> None:
        """Emit ``event`` to a room or a socket: logged with an offset, or straight to the
        server when recovery is off or the target is a socket of this node that did not opt in."""
        seq = self.sequencer
        if (
            seq is None
            or not seq.running
            or (to not in self._sockets and self.sio.manager.eio_sid_from_sid(to, "/"))
        ):
            await self.sio.emit(event, data, to=to, skip_sid=skip_sid)
            return
        await seq.submit(
            Packet(event, event_args(data), to, () if skip_sid is None else (skip_sid,))
        )

    @property
    def batches(self) -> bool:
        """Whether :meth:`emit_many` sends a batch without pausing (so nothing emitted
        meanwhile can come between its events): recovery off, or an in-memory log."""
        seq = self.sequencer
        return seq is None or not seq.running or self.log is None or self.log.synchronous

    async def emit_many(self, emissions: Sequence[Emission]) -> None:
        """Emit ``(event, data, room, skip_sid)`` in order: logged in one append, each run of
        consecutive events to one room delivered in one pass over its members
        (``gateway.outgoing.FanoutManager.emit_many``); one by one with a log that pauses
        (``Sequencer.submit_many``)."""
        packets = [
            Packet(
                event,
                event_args(data),
                to,
                () if skip is None else (skip,) if isinstance(skip, str) else skip,
            )
            for event, data, to, skip in emissions
        ]
        seq = self.sequencer
        if seq is None or not seq.running:
            await self._deliver_many(packets, [None] * len(packets))
        else:
            await seq.submit_many(packets, self._deliver_many)

    async def _deliver(self, packet: Packet, offset: str | None) -> None:
        await self._deliver_many((packet,), (offset,))

    async def _deliver_many(self, packets: Sequence[Packet], offsets: Sequence[str | None]) -> None:
        """Hand ``packets`` to the server's client manager with their offsets, each run of
        consecutive packets to one room in one call."""
        manager = self.sio.manager
        i = 0
        while i < len(packets):
            room = packets[i].room
            j = i
            while j < len(packets) and packets[j].room == room:
                j += 1
            await manager.emit_many(
                "/",
                room,
                [
                    (p.event, self._stamped(p.args, offset), list(p.skip) or None)
                    for p, offset in zip(packets[i:j], offsets[i:j], strict=True)
                ],
            )
            i = j

    def _stamped(self, args: tuple[Any, ...], offset: str | None) -> tuple[Any, ...]:
        """``args`` with ``offset`` as the last argument; the node's head follows."""
        if offset is None:
            return args
        key = parse_offset(offset)
        if key is not None and key > self.head:
            self.head = key
        return (*args, offset)

    # -- server hooks (gateway.sio.ServerHooks) -------------------------------------------

    def connecting(self, eio_sid: str, auth: Any) -> None:
        if auth is None:  # a client authenticating by header: recovery on, nothing to resume
            auth = {}
        if isinstance(auth, dict) and auth.get("recovery") is not False:
            pid = auth.get("pid")
            valid = isinstance(pid, str) and _PID.fullmatch(pid) is not None
            self._handshakes[eio_sid] = _Handshake(pid if valid else None, auth.get("offset"))

    async def connected(self, eio_sid: str, sid: str | None) -> None:
        self._handshakes.pop(eio_sid, None)
        tracked = self._sockets.get(sid) if sid is not None else None
        if tracked is None:
            return
        previous, tracked.previous = tracked.previous, None
        if not self.sio.manager.is_connected(tracked.sid, "/"):  # refused after all
            self._untrack(tracked.sid)
        if previous is not None:
            await self._release(previous)

    def connect_reply(self, sid: str) -> dict[str, Any]:
        tracked = self._sockets.get(sid)
        return {} if tracked is None else {"pid": tracked.pid}

    def disconnecting(self, sid: str, recoverable: bool) -> None:
        tracked = self._sockets.get(sid)
        if tracked is not None:
            tracked.recoverable = recoverable

    def room_changed(self, sid: str, room: str, entered: bool) -> None:
        tracked = self._sockets.get(sid)
        if tracked is None:
            return
        if entered:
            tracked.rooms.setdefault(room, self.head)
        elif room != sid:
            tracked.rooms.pop(room, None)

    def admit(
        self, eio_sid: str, pkts: Sequence[eio_packet.Packet]
    ) -> Sequence[eio_packet.Packet] | None:
        tracked = self._by_eio.get(eio_sid)
        if tracked is None:
            return None
        if tracked.paused is not None:
            tracked.paused.extend(pkts)
            return ()
        msgpack = self._msgpack
        if len(pkts) == 1 and tracked.replayed_to is None and not tracked.drop_attachments:
            # The common case, one event with nothing replayed: what _admit would do.
            tag = tag_of(pkts[0], msgpack_serializer=msgpack)  # cached by plain()
            if tag is not None:
                tracked.last_sent = tag.offset
            return pkts
        admitted = (self._admit(tracked, p, tag_of(p, msgpack_serializer=msgpack)) for p in pkts)
        return [p for p in admitted if p is not None]

    def plain(self, pkts: Sequence[eio_packet.Packet]) -> Sequence[eio_packet.Packet]:
        """Without their offsets (a socket that did not opt in has no use for them)."""
        out: list[eio_packet.Packet] | None = None
        for i, pkt in enumerate(pkts):
            tag = self._tag(pkt)
            if tag is not None:
                if out is None:
                    out = list(pkts[:i])
                out.append(tag.plain)
            elif out is not None:
                out.append(pkt)
        return pkts if out is None else out

    def _tag(self, pkt: eio_packet.Packet) -> Tag | None:
        """``pkt``'s offset tag (cached on it); the node's head follows."""
        tag = tag_of(pkt, msgpack_serializer=self._msgpack)
        if tag is not None and tag.key > self.head:
            self.head = tag.key
        return tag

    def _admit(self, tracked: Tracked, pkt: eio_packet.Packet, tag: Tag | None) -> Any:
        """``pkt`` as it goes to an opted-in socket, or None for a packet the replay covered."""
        if tag is None:
            if tracked.drop_attachments and isinstance(pkt.data, bytes | bytearray):
                tracked.drop_attachments -= 1
                return None
            return pkt
        if tracked.replayed_to is not None and tag.key <= tracked.replayed_to:
            tracked.drop_attachments = tag.attachments
            return None
        tracked.last_sent = tag.offset
        return pkt

    # -- sockets --------------------------------------------------------------------------

    def _track(self, tracked: Tracked) -> None:
        self._sockets[tracked.sid] = tracked
        self._by_eio[tracked.eio_sid] = tracked

    def _untrack(self, sid: str) -> Tracked | None:
        tracked = self._sockets.pop(sid, None)
        if tracked is not None and self._by_eio.get(tracked.eio_sid) is tracked:
            del self._by_eio[tracked.eio_sid]
        return tracked

    async def restore(self, sid: str, identity: Identity) -> bool:
        """Called by the connect handler first: start tracking the socket if its client opted
        in, and give it back its session if it asked for one that can be recovered (rooms
        entered, missed events sent). True when it did; otherwise the socket is new."""
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/") if self.enabled else None
        handshake = self._handshakes.pop(eio_sid, None) if eio_sid else None
        if eio_sid is None or handshake is None:
            return False
        company, user = identity.company_id, identity.user_id
        tracked = Tracked(new_pid(), sid, eio_sid, (sid,), {sid: self.head}, company, user)
        self._track(tracked)
        claim = await self._claim(handshake, identity)
        if claim is None:
            return False
        session, start = claim
        # The old socket's hold, if this node has it, ends once this one counts in presence
        # (``connected``): the user never drops to zero connections in between.
        tracked.previous = self._holds.pop(session.sids[-1], None)
        if tracked.previous is not None and tracked.previous.timer is not None:
            tracked.previous.timer.cancel()
        try:
            replayed = await self._replay(tracked, session, start)
        except Exception:
            log.exception("recovery of %s failed", session.sids[-1])
            replayed = None
        if replayed is None:
            self.counters.refused += 1
            return False
        self.counters.recovered += 1
        self.counters.replayed += replayed
        logs.event(
            "recovered",
            sid=sid,
            previous=session.sids[-1],
            userId=user,
            companyId=company,
            missed=replayed,
        )
        return True

    async def _claim(
        self, handshake: _Handshake, identity: Identity
    ) -> tuple[SavedSession, Key] | None:
        """The saved session the handshake names, if this identity may recover it now, and the
        offset its missed packets start after."""
        assert self.log is not None
        if handshake.pid is None:
            return None
        try:
            session = await self.log.take_session(handshake.pid)
        except Exception:
            log.exception("recovery: cannot read the saved session")
            return None
        if session is None:
            return None
        if (session.company_id, session.user_id) != (identity.company_id, identity.user_id):
            # Another user's pid: refused, and left for its owner.
            self.counters.refused += 1
            logs.event(
                "recovery refused",
                level=logging.WARNING,
                reason="another user's session",
                userId=identity.user_id,
                companyId=identity.company_id,
            )
            remaining = session.expires_at - time.time() + GRACE
            try:
                if remaining > 0:
                    await self.log.save_session(session, remaining)
            except Exception:
                log.exception("recovery: cannot put a session back")
            return None
        if time.time() > session.expires_at:
            return None
        start = self._start(session, handshake.offset)
        return None if start is None else (session, start)

    @staticmethod
    def _start(session: SavedSession, offset: Any) -> Key | None:
        held = parse_offset(session.held_at) or ZERO
        if session.last_sent is None:
            return held  # nothing was sent to it: whatever offset it has is older
        last = parse_offset(session.last_sent)
        got = parse_offset(offset)
        if last is None or got is None or got > last:
            return None
        # It received everything sent to it up to `got`; when that is the last sent, nothing
        # else of its packets went out before its node had reached `held`.
        return max(held, last) if got == last else got

    async def _replay(self, tracked: Tracked, session: SavedSession, start: Key) -> int | None:
        """Enter the session's rooms and send its missed packets; None (and the socket left
        as new) when the log no longer has them all."""
        assert self.log is not None
        sid = tracked.sid
        membership = session.membership(sid)
        missed = await self.log.since(format_offset(start), membership)
        if missed is None or len(missed.entries) > self.max_replay:
            return None
        rooms = {room: parse_offset(at) or ZERO for room, at in session.rooms.items()}
        tracked.pid = session.pid
        tracked.sids = (*session.sids, sid)[-MAX_SIDS:]
        tracked.rooms = {**rooms, sid: self.head}
        tracked.last_sent = session.last_sent
        tracked.paused = []  # live packets to the socket are held back from here
        try:
            for room in rooms:
                await self.sio.enter_room(sid, room)
            # What was logged while the rooms were being entered.
            rest = await self.log.since(missed.end, membership)
            if rest is None:
                raise LookupError("the log was trimmed past the replay")
            entries = missed.entries + rest.entries
            if len(entries) > self.max_replay:
                raise LookupError(f"{len(entries)} missed events: more than the replay limit")
            tracked.replayed_to = parse_offset(rest.end)
            for i, entry in enumerate(entries):
                await self._send(tracked, entry)
                if i % REPLAY_BATCH == REPLAY_BATCH - 1:
                    await asyncio.sleep(0)  # the socket's writer takes what is queued
        except LookupError as exc:
            log.warning("recovery: %s; %s starts a new session", exc, sid)
            await self._renew(tracked, rooms)
            return None
        except Exception:
            log.exception("recovery: replay to %s failed; it starts a new session", sid)
            await self._renew(tracked, rooms)
            return None
        await self._flush(tracked)
        return len(entries)

    async def _renew(self, tracked: Tracked, rooms: dict[str, Key]) -> None:
        """A replay that could not finish: the socket leaves the session's rooms and starts a
        new session (new pid: ``socket.recovered`` is false)."""
        for room in rooms:
            await self.sio.leave_room(tracked.sid, room)
        sid = tracked.sid
        tracked.pid, tracked.sids, tracked.rooms = new_pid(), (sid,), {sid: self.head}
        tracked.last_sent = tracked.replayed_to = None
        await self._flush(tracked)

    async def _send(self, tracked: Tracked, entry: Entry) -> None:
        p = entry.packet
        pkt = self.sio.packet_class(
            sio_packet.EVENT, namespace="/", data=[p.event, *p.args, entry.offset]
        )
        encoded = pkt.encode()
        for part in encoded if isinstance(encoded, list) else [encoded]:
            await self.sio.send_unhooked(
                tracked.eio_sid, eio_packet.Packet(eio_packet.MESSAGE, part)
            )
        tracked.last_sent = entry.offset

    async def _flush(self, tracked: Tracked) -> None:
        """Send what was held back (dropping what the replay covered), then let packets flow."""
        paused = tracked.paused or []
        while paused:
            held = paused.pop(0)
            pkt = self._admit(tracked, held, tag_of(held, msgpack_serializer=self._msgpack))
            if pkt is not None:
                await self.sio.send_unhooked(tracked.eio_sid, pkt)
        tracked.paused = None

    # -- holds ----------------------------------------------------------------------------

    async def hold(self, sid: str) -> bool:
        """Called by the disconnect handler: keep the session of a dropped socket of an
        opted-in client for the window. True when held: its presence is then released by the
        hold (at the end of the window, unless recovered), not by the caller."""
        tracked = self._untrack(sid)
        if tracked is None or not tracked.recoverable or self.log is None:
            return False
        seq = self.sequencer
        if seq is None or not seq.running or tracked.paused is not None:
            return False
        now = time.time()
        session = SavedSession(
            pid=tracked.pid,
            company_id=tracked.company_id,
            user_id=tracked.user_id,
            sids=tracked.sids,
            rooms={r: format_offset(k) for r, k in tracked.rooms.items() if r not in tracked.sids},
            last_sent=tracked.last_sent,
            held_at=format_offset(max(self.head, parse_offset(tracked.last_sent) or ZERO)),
            expires_at=now + self.window,
        )
        try:
            await self.log.save_session(session, self.window + GRACE)
        except Exception:
            log.exception("recovery: cannot save the session of %s", sid)
            return False
        hold = _Hold(sid, tracked.company_id, tracked.user_id)
        hold.timer = asyncio.get_running_loop().call_later(
            self.window, lambda: self.gw.spawn(self._expire(hold))
        )
        self._holds[sid] = hold
        self.counters.held += 1
        logs.event("held", sid=sid, userId=tracked.user_id, companyId=tracked.company_id)
        return True

    async def _expire(self, hold: _Hold) -> None:
        if self._holds.get(hold.sid) is hold:
            del self._holds[hold.sid]
            await self._release(hold)

    async def _release(self, hold: _Hold) -> None:
        """Forget a held socket in presence; ``user:offline`` if it was the user's last."""
        try:
            if await self.gw.presence.disconnect(hold.company_id, hold.user_id, hold.sid):
                event, payload = presence_event(hold.user_id, online=False)
                await self.gw.emit(event, payload, to=company_room(hold.company_id))
        except Exception:
            log.exception("recovery: cannot release the presence of %s", hold.sid)

    @property
    def holding(self) -> bool:
        """Whether a dropped socket's session is held (it may come back for what it missed)."""
        return bool(self._holds)

    def stats(self) -> dict[str, Any]:
        """Counters for health reports and tests."""
        return {
            "enabled": self.enabled,
            "window": self.window,
            "tracked": len(self._sockets),
            "held": len(self._holds),
            "unlogged": self.sequencer.unlogged if self.sequencer is not None else 0,
            **{name: getattr(self.counters, name) for name in _Counters.__slots__},
        }


__all__ = ["GRACE", "Recovery", "Tracked", "new_pid"]
