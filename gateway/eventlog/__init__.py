"""The recovery log: every event the gateway emitted in the last window, under an offset, and
the sessions of sockets that dropped, so that a client reconnecting within the window gets
what it missed (``gateway.recovery``, docs/recovery.md).

- :class:`RecoveryLog` is the Protocol; :class:`~gateway.eventlog.memory.MemoryRecoveryLog`
  the single-node reference and default, :class:`~gateway.eventlog.redis.RedisRecoveryLog`
  the multi-node one (a Redis stream and session keys, selected with ``--redis``). One
  contract suite (``tests/gateway/test_recovery.py``) runs against both.
- Offsets are Redis stream ids, ``"<ms>-<seq>"``, for both backends: totally ordered,
  assigned at append, the order in which the log holds the packets.
- What a session should have received is decided here, once, by
  :meth:`Membership.receives`; a backend only stores and scans (its payloads encoded by
  :func:`encode_payload`: a copy, msgpack so that binary attachments stay bytes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

#: An offset parsed: (milliseconds, sequence), compared as a tuple.
Key = tuple[int, int]

#: The offset before every offset.
ZERO: Key = (0, 0)

_OFFSET = re.compile(r"([0-9]{1,15})-([0-9]{1,15})")

#: Packets kept at most, whatever the window (memory for a burst is bounded); an offset the
#: log no longer reaches cannot be recovered from.
DEFAULT_MAX_ENTRIES = 100_000
#: Bytes of encoded payloads the in-memory log keeps at most (documents travel whole in
#: ``document:updated``).
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def parse_offset(value: object) -> Key | None:
    """The key of an offset string, or None if ``value`` is not one."""
    if not isinstance(value, str):
        return None
    m = _OFFSET.fullmatch(value)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2))


def format_offset(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(frozen=True, slots=True)
class Packet:
    """An event as emitted: name, arguments, the room (or socket id) it went to and the
    sockets it skipped. ``gap`` marks where a node could not log what it emitted: nobody can
    recover across it."""

    event: str
    args: tuple[Any, ...]
    room: str
    skip: tuple[str, ...] = ()
    gap: bool = False


def gap_marker() -> Packet:
    return Packet("", (), "", gap=True)


def encode_payload(packet: Packet) -> bytes:
    """The event and its arguments as the logs store them (msgpack: attachments stay bytes;
    a copy, so nothing emitted can change in the log afterwards)."""
    data: bytes = msgpack.packb([packet.event, list(packet.args)], use_bin_type=True)
    return data


def decode_payload(data: bytes, room: str, skip: tuple[str, ...]) -> Packet:
    event, args = msgpack.unpackb(data, raw=False)
    return Packet(event, tuple(args), room, skip)


@dataclass(frozen=True, slots=True)
class Entry:
    """A packet in the log, at its offset."""

    offset: str
    packet: Packet

    @property
    def key(self) -> Key:
        key = parse_offset(self.offset)
        assert key is not None, self.offset
        return key


@dataclass(frozen=True, slots=True)
class Membership:
    """What a session was subscribed to: its socket ids (every packet to one of them is its
    own) and its rooms, each with the offset it entered the room at (packets to the room
    after that offset reached it)."""

    sids: frozenset[str]
    rooms: Mapping[str, Key]

    def receives(self, packet: Packet, key: Key) -> bool:
        if packet.gap or any(s in self.sids for s in packet.skip):
            return False
        if packet.room in self.sids:
            return True
        joined = self.rooms.get(packet.room)
        return joined is not None and key > joined


@dataclass(frozen=True, slots=True)
class Missed:
    """What :meth:`RecoveryLog.since` found: the session's packets after the offset, in log
    order, and ``end``, the last offset the scan covered (every packet up to it was
    considered, delivered or not)."""

    entries: list[Entry]
    end: str


@dataclass(frozen=True, slots=True)
class SavedSession:
    """A socket that dropped, kept for recovery until ``expires_at`` (epoch seconds).

    ``last_sent`` is the offset of the last packet sent to it (None: nothing was), ``held_at``
    the offset its node had reached when it dropped: the session received every one of its
    packets up to there, up to ``last_sent`` included.
    """

    pid: str
    company_id: str
    user_id: str
    sids: tuple[str, ...]
    rooms: dict[str, str] = field(default_factory=dict)
    last_sent: str | None = None
    held_at: str = "0-0"
    expires_at: float = 0.0

    def membership(self, *more_sids: str) -> Membership:
        rooms = {room: parse_offset(at) or ZERO for room, at in self.rooms.items()}
        return Membership(frozenset((*self.sids, *more_sids)), rooms)

    def to_wire(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "company": self.company_id,
            "user": self.user_id,
            "sids": list(self.sids),
            "rooms": self.rooms,
            "lastSent": self.last_sent,
            "heldAt": self.held_at,
            "expiresAt": self.expires_at,
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> SavedSession:
        return cls(
            pid=str(raw["pid"]),
            company_id=str(raw["company"]),
            user_id=str(raw["user"]),
            sids=tuple(str(s) for s in raw["sids"]),
            rooms={str(k): str(v) for k, v in dict(raw["rooms"]).items()},
            last_sent=None if raw.get("lastSent") is None else str(raw["lastSent"]),
            held_at=str(raw["heldAt"]),
            expires_at=float(raw["expiresAt"]),
        )


class RecoveryLog(Protocol):
    """Emitted packets under offsets, and saved sessions. Entries older than the window (and
    beyond a maximum count) are trimmed; :meth:`since` knows when it can no longer answer."""

    #: :meth:`append` never pauses (in memory): an emitter may append and deliver in its own
    #: task, in order, without going through the sequencer's batches.
    synchronous: bool

    async def start(self) -> None:
        """Connect (a no-op in memory). ``RuntimeError`` if already started."""

    async def stop(self) -> None:
        """Release the backend. Idempotent."""

    async def append(self, packets: Sequence[Packet]) -> list[str]:
        """Log ``packets`` in order; their offsets, increasing, in the same order."""
        ...

    async def since(self, offset: str, membership: Membership) -> Missed | None:
        """The packets after ``offset`` that ``membership`` received, in order; None when the
        log no longer holds every packet after ``offset`` (trimmed, or a gap)."""
        ...

    async def save_session(self, session: SavedSession, ttl: float) -> None:
        """Keep ``session`` under its pid for ``ttl`` seconds (replacing any)."""

    async def take_session(self, pid: str) -> SavedSession | None:
        """Remove and return the session saved under ``pid`` (one taker wins)."""
        ...


def open_log(
    redis_url: str | None, *, window: float, max_entries: int = DEFAULT_MAX_ENTRIES
) -> RecoveryLog:
    """The log for a node: in memory, or in Redis (shared by the nodes) with ``redis_url``."""
    if redis_url:
        from gateway.eventlog.redis import RedisRecoveryLog

        return RedisRecoveryLog(redis_url, window=window, max_entries=max_entries)
    from gateway.eventlog.memory import MemoryRecoveryLog

    return MemoryRecoveryLog(window=window, max_entries=max_entries)


__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ENTRIES",
    "ZERO",
    "Entry",
    "Key",
    "Membership",
    "Missed",
    "Packet",
    "RecoveryLog",
    "SavedSession",
    "decode_payload",
    "encode_payload",
    "format_offset",
    "gap_marker",
    "open_log",
    "parse_offset",
]
