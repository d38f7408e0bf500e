"""A per-key minimum interval (``user:typing`` is relayed at most once per
``typing_throttle_ms`` for each user and document)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class Throttle:
    """Allows a key at most once per ``interval`` seconds.

    Keys whose interval has passed are forgotten when the table grows past ``prune_at``, and
    by :meth:`prune` (``gateway.memory`` calls it every minute), so memory stays bounded by the
    keys active within one interval.
    """

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        prune_at: int = 10_000,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._prune_at = prune_at
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable) -> bool:
        """True (and the key's interval restarts) unless ``key`` was allowed too recently."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        if len(self._last) > self._prune_at:
            self.prune()
        return True

    def prune(self) -> None:
        """Forget the keys whose interval has passed (they would be allowed anyway)."""
        now = self._clock()
        self._last = {k: t for k, t in self._last.items() if now - t < self.interval}

    def __len__(self) -> int:
        return len(self._last)
