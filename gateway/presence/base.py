"""The presence Protocol and the transport-agnostic logic of one node.

:class:`NodePresence` mirrors the node's own connections, keeps the node alive with
:meth:`~NodePresence.heartbeat`, reaps dead nodes and registers itself again after it was cut
off. It talks to a :class:`Backend`, which only stores, each method one atomic step.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from collab.model import iso, now_ms

log = logging.getLogger("gateway.presence")

#: A user of a company.
User = tuple[str, str]
#: A connection: (company, user, socket id).
Conn = tuple[str, str, str]
#: How a node found its own entry when it registered again: ``known`` (still there: it had
#: only missed some updates), ``reaped`` (removed by a peer, its users announced offline) or
#: ``lost`` (gone without a trace: Redis lost its data).
SyncState = Literal["known", "reaped", "lost"]

#: Default seconds before a silent node's connections are dropped.
DEFAULT_TTL = 30.0


@dataclass(slots=True)
class Changes:
    """Users to announce, found by a heartbeat rather than by a connect or disconnect."""

    online: list[User] = field(default_factory=list)
    offline: list[User] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.online or self.offline)


def presence_event(user_id: str, online: bool) -> tuple[str, dict[str, Any]]:
    """The seed's ``user:online`` / ``user:offline`` event and payload."""
    status = "online" if online else "offline"
    return f"user:{status}", {"userId": user_id, "status": status, "timestamp": iso(now_ms())}


class Presence(Protocol):
    """Connections per (company, user) across nodes. ``connect``/``disconnect`` are idempotent
    per socket id; each returns whether *this* call must announce the user."""

    #: Seconds between two calls of :meth:`heartbeat` (see :func:`keep_alive`).
    interval: float

    async def start(self) -> None:
        """Register this node; ``RuntimeError`` if already started. Never fails on the
        backend being down (the node registers at a later heartbeat)."""

    async def connect(self, company_id: str, user_id: str, sid: str) -> bool:
        """Record a connection; True when it is the user's first anywhere (announce online)."""
        ...

    async def disconnect(self, company_id: str, user_id: str, sid: str) -> bool:
        """Forget a connection; True when it was the user's last anywhere (announce offline)."""
        ...

    async def online(self, company_id: str) -> list[str]:
        """The users of a company with at least one connection on a live node."""
        ...

    async def heartbeat(self) -> Changes:
        """Keep this node alive, catch up after backend trouble, and reap dead nodes; returns
        the users to announce (each returned by exactly one node)."""
        ...

    async def leave(self) -> Changes:
        """Forget every connection of this node (clean shutdown); returns who went offline."""
        ...

    async def stop(self) -> None:
        """Release the backend. Idempotent."""

    async def health(self) -> dict[str, Any]:
        """``{"ok": bool, "backend": name, ...}`` without raising."""
        ...


# -- storage -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncReply:
    """What :meth:`Backend.sync` found and did."""

    state: SyncState
    #: Users whose count rose from zero (announce online, unless ``lost``: see NodePresence).
    firsts: list[User]
    #: Users whose count fell to zero (announce offline).
    lasts: list[User]


class Backend(Protocol):
    """Shared presence storage. Every method is one atomic step; ``None`` from ``add`` and
    ``remove`` means the node is not registered (it was reaped, or the data was lost)."""

    name: str

    async def add(self, node: str, conn: Conn) -> int | None:
        """Add ``conn`` to ``node``: the user's count after, or 0 if it was already there."""
        ...

    async def remove(self, node: str, conn: Conn) -> int | None:
        """Remove ``conn``: the user's count after, or -1 if it was not there."""
        ...

    async def beat(self, node: str, ttl: float) -> bool:
        """Push the node's deadline to now + ``ttl``; False if the node is not registered."""
        ...

    async def sync(self, node: str, ttl: float, conns: Iterable[Conn]) -> SyncReply:
        """Register the node (deadline now + ``ttl``) with exactly ``conns``."""
        ...

    async def reap(self) -> list[User]:
        """Remove nodes past their deadline; the users whose count fell to zero."""
        ...

    async def leave(self, node: str) -> list[User]:
        """Unregister the node and its connections; the users whose count fell to zero."""
        ...

    async def online(self, company_id: str) -> list[str]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def unique(users: list[User]) -> list[User]:
    """``users`` without repeats, in order."""
    return list(dict.fromkeys(users))


# -- the node ------------------------------------------------------------------------------


class NodePresence:
    """One node's presence over a shared :class:`Backend`.

    The node keeps its own connections in memory and is the authority on them. When a
    backend call fails, or the node finds it was reaped, it stops writing piecemeal (calls
    return False: nothing to announce yet) and re-registers all its connections at the next
    heartbeat; what that changed is announced then. After its own backend trouble it waits
    one ``ttl`` before reaping others, which may have been unable to beat for the same reason.
    """

    def __init__(self, backend: Backend, *, node: str, ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ValueError("presence ttl must be positive")
        self.backend = backend
        self.node = node
        self.ttl = ttl
        self.interval = ttl / 3
        self._conns: dict[str, Conn] = {}
        #: Connections the backend is known to hold (what was announced, if data is lost).
        self._stored: set[str] = set()
        #: Users announced online here whose disconnect the backend missed.
        self._missed: set[User] = set()
        self._dirty = True
        self._synced_once = False
        self._reap_after = 0.0
        self._lock = asyncio.Lock()
        self._started = False
        self._stopped = False

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("presence already started")
        self._started = True
        async with self._lock:
            try:
                await self._sync()
            except Exception as exc:
                self._trouble("register", exc)

    async def connect(self, company_id: str, user_id: str, sid: str) -> bool:
        async with self._lock:
            if sid in self._conns:
                return False
            conn = self._conns[sid] = (company_id, user_id, sid)
            if self._dirty:
                return False
            try:
                n = await self.backend.add(self.node, conn)
            except Exception as exc:
                self._trouble("connect", exc)
                return False
            if n is None:
                self._dirty = True
                return False
            self._stored.add(sid)
            return n == 1

    async def disconnect(self, company_id: str, user_id: str, sid: str) -> bool:
        async with self._lock:
            conn = self._conns.pop(sid, None)
            if conn is None:
                return False
            stored = sid in self._stored
            self._stored.discard(sid)
            if not self._dirty:
                try:
                    n = await self.backend.remove(self.node, conn)
                except Exception as exc:
                    self._trouble("disconnect", exc)
                else:
                    if n is None:  # reaped: the reaper announced whoever went offline
                        self._dirty = True
                        return False
                    return n == 0
            if stored:
                self._missed.add((company_id, user_id))
            return False

    async def online(self, company_id: str) -> list[str]:
        return await self.backend.online(company_id)

    async def heartbeat(self) -> Changes:
        changes = Changes()
        async with self._lock:
            try:
                if not self._dirty and not await self.backend.beat(self.node, self.ttl):
                    self._dirty = True
                if self._dirty:
                    changes = await self._sync()
                if time.monotonic() >= self._reap_after:
                    changes.offline += await self.backend.reap()
            except Exception as exc:
                self._trouble("heartbeat", exc)
        return changes

    async def leave(self) -> Changes:
        async with self._lock:
            self._conns.clear()
            self._stored.clear()
            self._dirty = True
            try:
                return Changes(offline=await self.backend.leave(self.node))
            except Exception as exc:  # peers reap this node after its ttl instead
                self._trouble("leave", exc)
                return Changes()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.backend.close()

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"ok": False, "backend": self.backend.name, "node": self.node}
        try:
            await self.backend.ping()
        except Exception as exc:
            report["error"] = str(exc) or type(exc).__name__
            return report
        report["ok"] = True
        if self._dirty:
            report["pending"] = "re-registering at the next heartbeat"
        return report

    async def _sync(self) -> Changes:
        """Register with exactly this node's connections (the lock is held)."""
        reply = await self.backend.sync(self.node, self.ttl, self._conns.values())
        changes = Changes(online=reply.firsts, offline=reply.lasts)
        if reply.state == "lost":
            # Nothing says what was announced: assume the stored connections' users were
            # (announce them neither online nor offline again), and that users whose
            # disconnects were missed are gone unless connected elsewhere.
            known = {self._conns[s][:2] for s in self._stored if s in self._conns}
            changes.online = [u for u in reply.firsts if u not in known]
            here = {c[:2] for c in self._conns.values()}
            changes.offline = []
            for company, user in self._missed - here:
                if user not in await self.backend.online(company):
                    changes.offline.append((company, user))
        if self._synced_once:
            log.warning("presence: node %s registered again (%s)", self.node, reply.state)
        self._synced_once = True
        self._stored = set(self._conns)
        self._missed.clear()
        self._dirty = False
        return changes

    def _trouble(self, what: str, exc: Exception) -> None:
        if not self._dirty:
            log.error("presence: %s failed (%s); re-registering later", what, exc)
        self._dirty = True
        self._reap_after = time.monotonic() + self.ttl


def node_id(name: str) -> str:
    """A presence node id unique to this process: a restarted node must not find (and keep)
    the connections of its previous, dead incarnation."""
    return f"{name}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


Announce = Callable[[str, str, bool], Awaitable[None]]


async def keep_alive(presence: Presence, announce: Announce) -> None:
    """Task body: heartbeat every ``presence.interval`` and announce what it found
    (``announce(company, user, online)``). Runs until cancelled."""
    while True:
        await asyncio.sleep(presence.interval)
        try:
            changes = await presence.heartbeat()
            await announce_changes(changes, announce)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("presence heartbeat failed")


async def announce_changes(changes: Changes, announce: Announce) -> None:
    """Announce ``changes`` (``announce(company, user, online)``), offline ones first."""
    for company, user in changes.offline:
        await announce(company, user, False)
    for company, user in changes.online:
        await announce(company, user, True)
