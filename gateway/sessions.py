"""The sockets this node holds: who each one is, and its per-socket state.

A :class:`Session` exists from a successful handshake to the disconnect. Its lock makes the
events of one socket run one at a time, in arrival order (``gateway.wire.dispatch``); its
expiry timer disconnects the socket when the token's ``exp`` passes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.auth import Identity


@dataclass(eq=False, slots=True)
class Session:
    """One authenticated socket."""

    sid: str
    identity: Identity
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    expiry: asyncio.TimerHandle | None = None


class Sessions:
    """Sessions by socket id (this node's only; presence is what spans nodes)."""

    def __init__(self) -> None:
        self._by_sid: dict[str, Session] = {}

    def add(self, sid: str, identity: Identity) -> Session:
        session = Session(sid, identity)
        self._by_sid[sid] = session
        return session

    def get(self, sid: str) -> Session | None:
        return self._by_sid.get(sid)

    def pop(self, sid: str) -> Session | None:
        """Forget a socket and cancel its expiry timer."""
        session = self._by_sid.pop(sid, None)
        if session is not None and session.expiry is not None:
            session.expiry.cancel()
        return session

    def sids(self) -> list[str]:
        return list(self._by_sid)

    def __len__(self) -> int:
        return len(self._by_sid)
