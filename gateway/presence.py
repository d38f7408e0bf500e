"""Who is online: connections counted per user, so that ``user:online`` goes out at a user's
first connection and ``user:offline`` after the last one closes (tabs and devices counted).

:class:`Presence` is the Protocol; :class:`MemoryPresence` the single-node reference
implementation. A Redis implementation (counting across nodes, so a user online on two nodes
is announced once) plugs in behind the same Protocol.
"""

from __future__ import annotations

from typing import Protocol


class Presence(Protocol):
    """Connections per (company, user). Methods are idempotent per socket id."""

    async def connect(self, company_id: str, user_id: str, sid: str) -> bool:
        """Record a connection; True when it is the user's first (announce it online)."""
        ...

    async def disconnect(self, company_id: str, user_id: str, sid: str) -> bool:
        """Forget a connection; True when it was the user's last (announce it offline)."""
        ...

    async def online(self, company_id: str) -> list[str]:
        """The users of a company with at least one connection."""
        ...


class MemoryPresence:
    """Presence in this process's memory: exact for a single node."""

    def __init__(self) -> None:
        self._sids: dict[tuple[str, str], set[str]] = {}

    async def connect(self, company_id: str, user_id: str, sid: str) -> bool:
        sids = self._sids.setdefault((company_id, user_id), set())
        first = not sids
        sids.add(sid)
        return first

    async def disconnect(self, company_id: str, user_id: str, sid: str) -> bool:
        key = (company_id, user_id)
        sids = self._sids.get(key)
        if not sids or sid not in sids:
            return False
        sids.discard(sid)
        if sids:
            return False
        del self._sids[key]
        return True

    async def online(self, company_id: str) -> list[str]:
        return sorted(user for company, user in self._sids if company == company_id)
