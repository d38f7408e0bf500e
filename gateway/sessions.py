"""The sockets this node holds: who each one is, and its per-socket state.

A :class:`Session` exists from a successful handshake to the disconnect. Its :class:`Turn`
locks keep the events of one socket in arrival order (``gateway.wire.dispatch``); its expiry
timer disconnects the socket when the token's ``exp`` passes.
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
    #: Held by the socket's event being handled (:class:`Turn`, first stage).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Resolved when the socket's latest event has ended (:class:`Turn`, second stage).
    tail: asyncio.Future[None] | None = None
    expiry: asyncio.TimerHandle | None = None


class Turn:
    """One event's place in its socket's order, in two stages.

    The first stage (holding ``session.lock``) runs the handler: validation, room checks, the
    engine applying the change. A handler whose change has taken its place in the document's
    order and now only waits for durability calls :meth:`ordered`: the socket's next event
    may then start its first stage while this one finishes in the second (durability,
    broadcasts, the answer). Second stages run one after another in arrival order (each
    waits for the end of the event before it), so a socket's writes apply, broadcast and are
    answered in the order they were sent, while one writer's writes in flight share store
    commits instead of waiting one commit each. Every event passes through the second stage,
    so answers, refusals included, go out in arrival order.
    """

    __slots__ = ("_before", "_done", "_first", "_session")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._first = False
        self._before: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Turn:
        session = self._session
        await session.lock.acquire()
        self._first = True
        self._before = session.tail
        self._done = session.tail = asyncio.get_running_loop().create_future()
        return self

    async def ordered(self) -> None:
        """Let the socket's next event start; return once the events before this one ended."""
        if self._first:
            self._first = False
            self._session.lock.release()
        before = self._before
        if before is not None and not before.done():
            await asyncio.shield(before)

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.ordered()  # lets the next event start before anything can fail
        finally:
            done = self._done
            if done is not None and not done.done():
                done.set_result(None)
            if self._session.tail is done:
                self._session.tail = None


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
