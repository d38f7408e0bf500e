"""The reference presence backend, in this process's memory, and the single-node default."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from gateway.presence.base import (
    DEFAULT_TTL,
    Conn,
    NodePresence,
    SyncReply,
    SyncState,
    User,
    unique,
)


class MemoryBackend:
    """The reference backend, in this process's memory. Share one between several
    :class:`NodePresence` to model several nodes (the contract tests do)."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._deadlines: dict[str, float] = {}
        self._conns: dict[str, set[Conn]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._tombstones: set[str] = set()

    def _incr(self, company: str, user: str, by: int) -> int:
        counts = self._counts.setdefault(company, {})
        n = counts.get(user, 0) + by
        if n > 0:
            counts[user] = n
        else:
            counts.pop(user, None)
        return max(n, 0)

    async def add(self, node: str, conn: Conn) -> int | None:
        if node not in self._deadlines:
            return None
        conns = self._conns.setdefault(node, set())
        if conn in conns:
            return 0
        conns.add(conn)
        return self._incr(conn[0], conn[1], 1)

    async def remove(self, node: str, conn: Conn) -> int | None:
        if node not in self._deadlines:
            return None
        conns = self._conns.get(node, set())
        if conn not in conns:
            return -1
        conns.discard(conn)
        return self._incr(conn[0], conn[1], -1)

    async def beat(self, node: str, ttl: float) -> bool:
        if node not in self._deadlines:
            return False
        self._deadlines[node] = self._clock() + ttl
        return True

    async def sync(self, node: str, ttl: float, conns: Iterable[Conn]) -> SyncReply:
        if node in self._deadlines:
            state: SyncState = "known"
        else:
            state = "reaped" if node in self._tombstones else "lost"
        want = set(conns)
        have = self._conns.setdefault(node, set())
        lasts = [(c, u) for c, u, s in have - want if self._incr(c, u, -1) == 0]
        firsts = [(c, u) for c, u, s in want - have if self._incr(c, u, 1) == 1]
        self._conns[node] = want
        self._deadlines[node] = self._clock() + ttl
        self._tombstones.discard(node)
        return SyncReply(state, unique(firsts), unique(lasts))

    async def reap(self) -> list[User]:
        now = self._clock()
        gone: list[User] = []
        for node in [n for n, deadline in self._deadlines.items() if deadline < now]:
            gone += await self.leave(node)
            self._tombstones.add(node)
        return gone

    async def leave(self, node: str) -> list[User]:
        self._deadlines.pop(node, None)
        conns = self._conns.pop(node, set())
        return unique([(c, u) for c, u, s in conns if self._incr(c, u, -1) == 0])

    async def online(self, company_id: str) -> list[str]:
        return sorted(self._counts.get(company_id, {}))

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryPresence(NodePresence):
    """Presence in this process's memory: exact for a single node (the default)."""

    def __init__(
        self, backend: MemoryBackend | None = None, *, node: str = "local", ttl: float = DEFAULT_TTL
    ) -> None:
        super().__init__(backend or MemoryBackend(), node=node, ttl=ttl)
