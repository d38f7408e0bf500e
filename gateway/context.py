"""The :class:`Gateway`: everything a handler or a route needs, in one object.

Built by ``gateway.app.create_app``; started and stopped with the aiohttp application.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from collab.engine import Engine
from collab.errors import CollabError, ErrorCode
from collab.model import Kind
from collab.rooms import company_room, document_room
from gateway.auth import TokenVerifier
from gateway.broadcast import Broadcaster
from gateway.config import Settings
from gateway.limits import Guard
from gateway.metrics import Metrics
from gateway.presence import Presence, announce_changes, keep_alive, presence_event
from gateway.presence.coalesce import Coalescer
from gateway.publisher import LocalPublisher
from gateway.recovery import Recovery
from gateway.sessions import Sessions
from gateway.sio import GatewayServer
from gateway.throttle import Throttle
from gateway.wire import Call

#: Set while a new connection enters its rooms (:meth:`Gateway.enter_new`): no flush first.
_ENTERING_NEW: ContextVar[bool] = ContextVar("collab_entering_new", default=False)


class Gateway:
    """One gateway node: the engine, the Socket.IO server and the per-node state around
    them."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        sio: GatewayServer,
        verifier: TokenVerifier,
        presence: Presence,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sio = sio
        self.verifier = verifier
        self.presence = presence
        self.metrics = metrics
        self.sessions = Sessions()
        self.broadcaster = Broadcaster(self)
        self.typing = Throttle(settings.typing_throttle_ms / 1000)
        #: ERP events published in this process (``POST /api/events`` goes through it).
        self.publisher = LocalPublisher(self)
        self.started_at = time.monotonic()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._redis: Redis | None = None
        self._stopped = False
        #: Rate limits, connection and room caps, outgoing bound, deny list (gateway.limits).
        self.guard = Guard(self)
        #: Connection state recovery: the emit path's log and offsets (gateway.recovery).
        self.recovery = Recovery(self)
        #: Events waiting to go out together (``emit(coalesce=True)``: presence), with the
        #: adaptive window (``gateway.presence.coalesce``).
        self.coalescer = Coalescer(self.recovery.emit_many, self.spawn)
        sio.before_enter = self._before_enter

    async def start(self) -> None:
        await self.engine.start()
        await self.recovery.start()
        await self.presence.start()
        start_fanout = getattr(self.sio.manager, "start", None)  # gateway.fanout.RedisFanout
        if start_fanout is not None:
            start_fanout()
        self.spawn(keep_alive(self.presence, self.announce_presence))
        self.guard.start()
        self.started_at = time.monotonic()

    async def close_connections(self) -> None:
        """Disconnect every socket (on shutdown, so that no request is left hanging)."""
        for sid in self.sessions.sids():
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid)

    async def stop(self) -> None:
        """Stop everything started with the app. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            await self.settle()
        self.broadcaster.close()
        for sid in self.sessions.sids():
            self.sessions.pop(sid)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        # Presence: forget what is left of this node's connections; say who went offline.
        with contextlib.suppress(Exception):
            await announce_changes(await self.presence.leave(), self.announce_presence)
        with contextlib.suppress(Exception):
            await self.presence.stop()
        await self.recovery.stop()  # after the last emits; later ones go out unlogged
        await self.sio.shutdown()
        listener = getattr(self.sio.manager, "thread", None)  # the Redis manager's listener
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        aclose = getattr(self.sio.manager, "aclose", None)  # gateway.fanout.RedisFanout
        if aclose is not None:
            await aclose()
        await self.engine.stop()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def redis_health(self) -> dict[str, Any]:
        """Ping the configured Redis (the URL is not repeated: it may hold a password)."""
        if self._redis is None:
            assert self.settings.redis, "no Redis configured"
            self._redis = Redis.from_url(self.settings.redis)
        await self._redis.ping()
        return {"ok": True}

    async def announce_presence(self, company_id: str, user_id: str, online: bool) -> None:
        """``user:online`` / ``user:offline`` to the company room, for presence changes found
        by a heartbeat (a dead node's users, a node registering again)."""
        event, payload = presence_event(user_id, online)
        await self.emit(event, payload, to=company_room(company_id))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, kept referenced and cancelled on stop."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(
        self,
        event: str,
        data: Any,
        *,
        to: str,
        skip_sid: str | None = None,
        coalesce: bool = False,
    ) -> None:
        """Emit a server event to a room or a socket (counted in the metrics): the one emit
        path. With connection state recovery on, the event is logged and carries its offset
        to the clients that opted in (``gateway.recovery``); returns once this node has
        delivered it, so an ack sent afterwards follows it.

        ``coalesce``: the event may be held, a window of 10 ms to 200 ms that grows while
        such events keep coming (``gateway.presence.coalesce``: presence in a connect storm),
        to go out with others in one pass over the recipients, each recipient getting the
        batch in one write. Its recipients are those of the moment it is emitted (a new
        connection entering the room meanwhile is skipped: :meth:`enter_new`), and it goes out
        before any event emitted after it, any ack (:meth:`settle`) and any other room entry,
        so no client sees a different order. Only where emitting a batch cannot interleave
        with other emits (one node's in-memory recovery log, or recovery off); otherwise
        emitted at once.
        """
        self.metrics.sent.labels(event=event).inc()
        if coalesce and self.recovery.batches:
            self.coalescer.hold(event, data, to, skip_sid)
            return
        if self.coalescer:
            await self.coalescer.flush()
        await self.recovery.emit(event, data, to=to, skip_sid=skip_sid)

    async def settle(self) -> None:
        """Send the held events now (``emit(coalesce=True)``), in order."""
        await self.coalescer.flush()

    async def enter_new(self, sid: str, room: str) -> None:
        """A new connection enters ``room`` (its company or user room, from the connect
        handler) without flushing the held events first: they were emitted before it entered
        and skip it (``Coalescer.entered``), as they would have had they gone out at once. A
        flush per connection would leave nothing to coalesce in a connect storm."""
        token = _ENTERING_NEW.set(True)
        try:
            await self.sio.enter_room(sid, room)
        finally:
            _ENTERING_NEW.reset(token)
        self.coalescer.entered(sid, room)

    async def _before_enter(self) -> None:
        """Before a socket enters a room (``GatewayServer.before_enter``): send the held events
        first, which must not reach it; except for a new connection (:meth:`enter_new`)."""
        if not _ENTERING_NEW.get():
            await self.coalescer.flush()

    def may_reach(self, room: str) -> bool:
        """Whether an event to ``room`` could reach anyone: a socket of this node in it, a
        socket of another node (with Redis, unknown here: yes), or a dropped socket whose
        session is held (its replay reads the log). When not, an event whose payload is
        costly to build (a Yjs write's JSON view) need not be built, nor sent."""
        return bool(self.settings.redis) or self.recovery.holding or self.sio.occupied(room)

    def require_joined(self, call: Call, kind: Kind, doc_id: str) -> None:
        """Refuse (``forbidden``) an event about a document the socket has not joined."""
        if not self.sio.in_room(call.sid, document_room(kind, doc_id)):
            raise CollabError(ErrorCode.FORBIDDEN, f"join {kind} {doc_id!r} first ({kind}:join)")


#: Where the aiohttp application keeps its gateway (``request.app[GATEWAY]``).
GATEWAY = web.AppKey("gateway", Gateway)
