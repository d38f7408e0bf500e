"""The recovery log in this process's memory: the reference implementation, exact for one
node (the default without ``--redis``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.eventlog import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    Entry,
    Key,
    Membership,
    Missed,
    Packet,
    SavedSession,
    decode_payload,
    encode_payload,
    format_offset,
    parse_offset,
)


@dataclass(frozen=True, slots=True)
class _Stored:
    """An entry as kept: routing in the clear, the event and arguments encoded."""

    key: Key
    room: str
    skip: tuple[str, ...]
    gap: bool
    payload: bytes


class MemoryRecoveryLog:
    """Packets in a list trimmed from the head (on every append: older than the window, beyond
    ``max_entries`` or ``max_bytes`` of payloads), sessions in a dict with deadlines.
    ``clock`` gives epoch seconds."""

    synchronous = True

    def __init__(
        self,
        *,
        window: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: list[_Stored] = []
        self._head = 0  # index of the first entry still held
        self._bytes = 0
        self._last: Key = (0, 0)
        #: The last offset trimmed: nothing after it is missing.
        self._gone: Key | None = None
        self._sessions: dict[str, tuple[SavedSession, float]] = {}
        self._started = False
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("MemoryRecoveryLog already started")
        self._started = True
        self._sweeper = asyncio.create_task(self._sweep(), name="collab-recovery-sweep")

    async def stop(self) -> None:
        self._started = False
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self) -> None:
        """Trim on a timer too, not only on append: an idle gateway must give back the
        memory of events older than the window (found by the soak test)."""
        period = max(0.5, min(self.window / 4, 15.0))
        while True:
            await asyncio.sleep(period)
            now = self.clock()
            self._trim(int(now * 1000) - int(self.window * 1000))
            for pid, (_, deadline) in list(self._sessions.items()):
                if deadline <= now:
                    del self._sessions[pid]

    async def append(self, packets: Sequence[Packet]) -> list[str]:
        ms = int(self.clock() * 1000)
        stored = [(p, encode_payload(p)) for p in packets]  # all or nothing
        offsets = []
        for packet, payload in stored:
            last_ms, seq = self._last
            key = (ms, 0) if ms > last_ms else (last_ms, seq + 1)
            self._last = key
            self._entries.append(_Stored(key, packet.room, packet.skip, packet.gap, payload))
            self._bytes += len(payload)
            offsets.append(format_offset(key))
        self._trim(ms - int(self.window * 1000))
        return offsets

    def _trim(self, min_ms: int) -> None:
        head, entries = self._head, self._entries
        while head < len(entries) and (
            entries[head].key[0] < min_ms
            or len(entries) - head > self.max_entries
            or self._bytes > self.max_bytes
        ):
            self._gone = entries[head].key
            self._bytes -= len(entries[head].payload)
            head += 1
        if head and (head == len(entries) or (head > 1024 and head * 2 > len(entries))):
            del entries[:head]
            head = 0
        self._head = head

    async def since(self, offset: str, membership: Membership) -> Missed | None:
        start = parse_offset(offset)
        if start is None or (self._gone is not None and start < self._gone):
            return None
        i = bisect_right(self._entries, start, lo=self._head, key=lambda e: e.key)
        found: list[Entry] = []
        end = start
        for stored in self._entries[i:]:
            if stored.gap:
                return None
            end = stored.key
            if membership.receives(Packet("", (), stored.room, stored.skip), stored.key):
                packet = decode_payload(stored.payload, stored.room, stored.skip)
                found.append(Entry(format_offset(stored.key), packet))
        return Missed(found, format_offset(end))

    async def save_session(self, session: SavedSession, ttl: float) -> None:
        now = self.clock()
        for pid, (_, deadline) in list(self._sessions.items()):
            if deadline <= now:
                del self._sessions[pid]
        self._sessions[session.pid] = (session, now + ttl)

    async def take_session(self, pid: str) -> SavedSession | None:
        saved = self._sessions.pop(pid, None)
        if saved is None or saved[1] <= self.clock():
            return None
        return saved[0]
