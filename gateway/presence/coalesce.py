"""Presence announcements held briefly to go out together: a connect storm's ``user:online``
events reach each member of the company room in a few writes instead of one per event.

In a storm of C distinct users of one company, every first connection announces itself to
everyone already connected: about C²/2 deliveries. Sent one by one, each costs the server a
pass over the room and a write per member, and each client a read per event; held for a
window and sent as one batch (``Recovery.emit_many``: one pass over the members, each member
its events in one write), they cost a pass and a write per member per *batch*.

The window adapts to the rate: it starts at :data:`BASE_WINDOW` (a lone announcement waits
no longer than that), doubles after each flush that found more than one event (announcements
arrive faster than one per window: a storm) up to :data:`LONGEST_WINDOW`, and is back to its
start after a flush of a single event or when the first event of a batch comes after a quiet
spell (longer than the window since the last flush). A batch of :data:`MAX_BATCH` events goes
out at once.

Nothing changes for a client but timing. Who receives an event is decided when it is emitted,
not when the batch goes out: a socket that *enters* a room while events to that room are held
(a new connection entering its company room: :meth:`Coalescer.entered`) is added to those
events' skipped sockets, so it receives exactly the events emitted after it entered, as
without the window. Held events go out before anything else that could reach the same
sockets: the gateway flushes them before any other emit, before any ack and before any other
room entry (``gateway.context.Gateway.settle``).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

#: An event held: name, data, room or sid, the sid or sids it skips (``recovery.Emission``).
Held = tuple[str, Any, str, str | tuple[str, ...] | None]

#: The window of an announcement after a quiet spell (seconds).
BASE_WINDOW = 0.01
#: The longest window, reached after a few flushes of a storm (seconds).
LONGEST_WINDOW = 0.2
#: Events held at most: a batch this large goes out at once.
MAX_BATCH = 512


class Coalescer:
    """Events held to go out together, in order, through ``send``; the adaptive window.

    ``spawn`` runs the timer's flush in the background (``Gateway.spawn``)."""

    def __init__(
        self,
        send: Callable[[Sequence[Held]], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        *,
        base: float = BASE_WINDOW,
        longest: float = LONGEST_WINDOW,
        max_batch: int = MAX_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= base <= longest or max_batch < 1:
            raise ValueError("need 0 <= base <= longest and max_batch >= 1")
        self._send = send
        self._spawn = spawn
        self.base = base
        self.longest = longest
        self.max_batch = max_batch
        self._clock = clock
        #: The current window (seconds).
        self.window = base
        self._held: list[Held] = []
        #: Sockets that entered a room while events were held: room -> (events held at entry,
        #: sid), in entry order (so the counts never decrease).
        self._entered: dict[str, list[tuple[int, str]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushed_at = -float("inf")
        #: Batches sent and events in them (tests, logs).
        self.batches = 0
        self.events = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, event: str, data: Any, to: str, skip: str | None) -> None:
        """Hold an event until the window ends (or the batch is full, or a flush)."""
        held = self._held
        if not held:
            if self._clock() - self._flushed_at > self.window:
                self.window = self.base  # a quiet spell: the storm, if any, is over
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window, self._expire)
        held.append((event, data, to, skip))
        if len(held) >= self.max_batch:
            self._cancel_timer()
            self._spawn(self.flush())

    def entered(self, sid: str, room: str) -> None:
        """``sid`` has just entered ``room``: events to ``room`` held now must skip it (it was
        not in the room when they were emitted). Call it right after the entry, with no pause
        in between."""
        if self._held:
            self._entered.setdefault(room, []).append((len(self._held), sid))

    async def flush(self) -> None:
        """Send the held events now, in order, and adapt the window."""
        self._cancel_timer()
        if not self._held:
            return
        held, entered = self._held, self._entered
        self._held, self._entered = [], {}
        n = len(held)
        self.window = min(self.longest, max(self.window * 2, self.base)) if n > 1 else self.base
        self._flushed_at = self._clock()
        self.batches += 1
        self.events += n
        await self._send(_with_entries(held, entered) if entered else held)

    def close(self) -> None:
        """Drop the timer (the gateway is stopping; it flushes what is held itself)."""
        self._cancel_timer()

    def _expire(self) -> None:
        self._timer = None
        self._spawn(self.flush())

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _with_entries(held: list[Held], entered: dict[str, list[tuple[int, str]]]) -> list[Held]:
    """``held`` with, added to each event's skipped sockets, those that entered its room after
    it was held (entry count > the event's index)."""
    counts = {room: [k for k, _ in entries] for room, entries in entered.items()}
    out: list[Held] = []
    for i, (event, data, to, skip) in enumerate(held):
        entries = entered.get(to)
        if entries is None:
            out.append((event, data, to, skip))
            continue
        later = tuple(sid for _, sid in entries[bisect.bisect_right(counts[to], i) :])
        if not later:
            out.append((event, data, to, skip))
        elif skip is None:
            out.append((event, data, to, later))
        else:
            out.append((event, data, to, ((skip,) if isinstance(skip, str) else skip) + later))
    return out
