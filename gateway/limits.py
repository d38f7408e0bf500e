"""What one client may cost a node, and what a node holds over a long run.

Every limit is a setting (``gateway.config``), documented in SECURITY.md and the gateway
README, and answered with a contract code without changing any state:

- event rate per connection and per user (token buckets, :meth:`Guard.check_rate`, called by
  ``gateway.wire.dispatch`` for every event): ``rate_limited`` with ``retryAfterMs``;
- connections per user (:meth:`Guard.admit`, at the handshake): ``connect_error``
  ``too many connections: ...`` (never ``authentication failed:``: the token was fine);
- documents and resources joined per connection (:meth:`Guard.check_rooms`): ``forbidden``
  with ``limit``: nothing is wrong with the request but the connection's state, and waiting
  does not help (``rate_limited`` would say it does); leaving a document makes room;
- packets queued for one socket (``gateway.outgoing.OutgoingEngineIO``): a socket whose
  outgoing queue reaches ``max_outgoing_packets`` is disconnected, its queue dropped and its
  TCP connection aborted, so a client that stops reading costs a bounded amount of memory
  and never blocks the others;
- the operator's deny list (``--deny-file``, :class:`gateway.auth.DenyList`): checked by the
  token verifier on every handshake and HTTP request; when the file changes, matching
  sockets get ``error`` ``authentication failed: revoked`` and are disconnected.

The engine's document limits (size, depth, fields, string length) are the engine's own
(``collab.limits``); :func:`document_limits` only fills them from the settings.

The :class:`Guard` also exports what a long run watches (``/metrics``): event-loop lag, asyncio
tasks, rooms, engine.io sockets, queued packets, limiter entries.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import socketio.exceptions
from prometheus_client import Counter, Gauge

from collab.errors import CollabError, ErrorCode
from collab.limits import Limits
from gateway import logs
from gateway.auth import PREFIX, DenyList, Identity
from gateway.config import Settings, SettingsError
from gateway.outgoing import OutgoingEngineIO

if TYPE_CHECKING:
    from gateway.context import Gateway

#: How often the deny file is checked for changes, seconds.
DENY_POLL = 1.0
#: How often the event loop's lag is sampled, seconds; the max is over the last LAG_WINDOW.
LAG_INTERVAL = 0.25
LAG_WINDOW = 10.0
#: Prefix of the ``connect_error`` message of a refused extra connection.
TOO_MANY = "too many connections: "
#: Room name prefixes counted by ``max_rooms_per_connection`` (``collab.rooms.document_room``).
JOINED_PREFIXES = ("document:", "resource:")


def document_limits(settings: Settings) -> Limits:
    """The engine's document limits (``collab.limits.Limits``) the settings ask for."""
    return Limits(
        max_bytes=settings.max_document_bytes,
        max_depth=settings.max_document_depth,
        max_fields=settings.max_document_fields,
        max_string=settings.max_string_length,
    )


class TooManyConnections(socketio.exceptions.ConnectionRefusedError):  # type: ignore[misc]
    """A handshake refused because the user holds ``max_connections_per_user`` sockets."""

    def __init__(self, reason: str) -> None:
        super().__init__(TOO_MANY + reason)
        self.message = TOO_MANY + reason


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one event takes one token."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0.0: one is, now)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


# -- the guard -------------------------------------------------------------------------------


class Guard:
    """The limits of one gateway node (settings in ``gw.settings``), and the gauges of what it
    holds. Built with the :class:`~gateway.context.Gateway`; :meth:`start` runs its background
    tasks (deny-file watch, loop-lag sampling) under the gateway's task set."""

    def __init__(self, gw: Gateway, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.gw = gw
        s = gw.settings
        self.settings = s
        self._clock = clock
        self._conn_buckets: dict[str, TokenBucket] = {}
        self._user_buckets: dict[tuple[str, str], TokenBucket] = {}
        self._user_sids: dict[tuple[str, str], set[str]] = {}
        self._sid_user: dict[str, tuple[str, str]] = {}
        self._lags: collections.deque[float] = collections.deque(
            maxlen=max(1, int(LAG_WINDOW / LAG_INTERVAL))
        )
        self._deny_signature: tuple[int, int, int] | None = None
        self._deny_missing_logged = False

        r = gw.metrics.registry
        self.refusals = Counter(
            "collab_limit_refusals",
            "Events, joins and handshakes refused by a limit, and sockets cut for their backlog",
            ["limit"],
            registry=r,
        )
        self.revocations = Counter(
            "collab_revoked_disconnects", "Sockets cut off by the deny list", registry=r
        )
        self.lag = Gauge(
            "collab_event_loop_lag_seconds", "Latest sampled event-loop lag", registry=r
        )
        self.lag_max = Gauge(
            "collab_event_loop_lag_max_seconds",
            f"Largest event-loop lag over the last {LAG_WINDOW:.0f}s",
            registry=r,
        )
        gauges: tuple[tuple[str, str, Callable[[], float]], ...] = (
            ("collab_asyncio_tasks", "asyncio tasks alive in the process", _task_count),
            ("collab_rooms", "Named Socket.IO rooms with members", self._room_count),
            ("collab_engineio_sockets", "engine.io sockets open", self._eio_count),
            ("collab_outgoing_queued_packets", "Packets queued for clients", self._queued),
            ("collab_limiter_entries", "Rate-limiter and connection-cap entries", self.entries),
            (
                "collab_outgoing_direct_frames",
                "Frames written straight to websockets (gateway.outgoing), since start",
                lambda: self._outgoing("direct"),
            ),
            (
                "collab_outgoing_queued_packets_total",
                "Packets handed to python-engineio's per-socket queues, since start",
                lambda: self._outgoing("queued"),
            ),
        )
        for name, doc, fn in gauges:
            Gauge(name, doc, registry=r).set_function(fn)

        eio = getattr(gw.sio, "eio", None)
        if isinstance(eio, OutgoingEngineIO):
            eio.max_queue = s.max_outgoing_packets
            eio.on_overflow = self._overflowed
        if s.deny_file:
            try:
                gw.verifier.deny = DenyList.load(s.deny_file)
            except (OSError, ValueError) as exc:
                raise SettingsError(f"cannot use --deny-file {s.deny_file}: {exc}") from None
            self._deny_signature = _signature(s.deny_file)

    def start(self) -> None:
        """Start the background tasks (cancelled with the gateway's)."""
        self.gw.spawn(self._sample_lag())
        if self.settings.deny_file:
            self.gw.spawn(self._watch_deny())

    # -- connections ---------------------------------------------------------------------

    def admit(self, identity: Identity, sid: str) -> None:
        """Count a new socket of ``identity``, or refuse it (:class:`TooManyConnections`)."""
        key = (identity.company_id, identity.user_id)
        sids = self._user_sids.get(key)
        cap = self.settings.max_connections_per_user
        if cap and sids is not None and len(sids) >= cap:
            self.refusals.labels(limit="connections").inc()
            self.gw.metrics.connection_failures.labels(reason="too_many_connections").inc()
            logs.event(
                "refused",
                level=logging.WARNING,
                sid=sid,
                reason="too many connections",
                userId=identity.user_id,
                companyId=identity.company_id,
            )
            raise TooManyConnections(
                f"user {identity.user_id} already has {len(sids)} connections to this node "
                f"(limit {cap})"
            )
        self._user_sids.setdefault(key, set()).add(sid)
        self._sid_user[sid] = key

    def release(self, sid: str) -> None:
        """Forget a socket (idempotent). Its user's bucket outlives it until refilled, so
        reconnecting does not reset a user's rate."""
        self._conn_buckets.pop(sid, None)
        key = self._sid_user.pop(sid, None)
        if key is None:
            return
        sids = self._user_sids.get(key)
        if sids is not None:
            sids.discard(sid)
            if not sids:
                del self._user_sids[key]

    # -- events --------------------------------------------------------------------------

    def check_rate(self, identity: Identity, sid: str) -> None:
        """Take one token from the connection's and the user's buckets, or refuse the event
        (``rate_limited``, ``retryAfterMs``: when one would be available); a refused event
        takes nothing."""
        s = self.settings
        now = self._clock()
        worst, scope = 0.0, ""
        taken: list[TokenBucket] = []
        if s.event_rate > 0:
            bucket = self._conn_buckets.get(sid)
            if bucket is None:
                bucket = self._conn_buckets[sid] = TokenBucket(s.event_rate, s.event_burst, now)
            wait = bucket.wait(now)
            if wait > worst:
                worst, scope = wait, "connection"
            taken.append(bucket)
        if s.user_event_rate > 0:
            key = (identity.company_id, identity.user_id)
            bucket = self._user_buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(s.user_event_rate, s.user_event_burst, now)
                self._user_buckets[key] = bucket
            wait = bucket.wait(now)
            if wait > worst:
                worst, scope = wait, "user"
            taken.append(bucket)
        if worst > 0:
            limit = "event_rate" if scope == "connection" else "user_event_rate"
            self.refusals.labels(limit=limit).inc()
            rate, burst = (
                (s.event_rate, s.event_burst)
                if scope == "connection"
                else (s.user_event_rate, s.user_event_burst)
            )
            retry = max(1, math.ceil(worst * 1000))
            raise CollabError(
                ErrorCode.RATE_LIMITED,
                f"too many events from this {scope} (limit {rate:g}/s, burst {burst}); "
                f"retry in {retry} ms",
                retryAfterMs=retry,
            )
        for bucket in taken:
            bucket.take()

    def check_rooms(self, sid: str, room: str) -> None:
        """Refuse (``forbidden``, ``limit``) to join a new document or resource room when the
        connection already has ``max_rooms_per_connection``; rejoining is always allowed."""
        cap = self.settings.max_rooms_per_connection
        if not cap:
            return
        if self.gw.sio.in_room(sid, room):
            return
        rooms = self.gw.sio.rooms(sid)
        joined = sum(1 for r in rooms if isinstance(r, str) and r.startswith(JOINED_PREFIXES))
        if joined >= cap:
            self.refusals.labels(limit="rooms").inc()
            raise CollabError(
                ErrorCode.FORBIDDEN,
                f"this connection has joined {joined} documents and resources, the limit is "
                f"{cap}: leave one first",
                limit=cap,
            )

    def entries(self) -> float:
        """Entries in the limiter's tables (bounded by sockets and recently active users)."""
        return float(
            len(self._conn_buckets)
            + len(self._user_buckets)
            + len(self._user_sids)
            + len(self._sid_user)
        )

    def prune(self) -> None:
        """Forget the buckets of users with no socket left whose bucket has refilled."""
        now = self._clock()
        for key, bucket in list(self._user_buckets.items()):
            if key not in self._user_sids and bucket.full(now):
                del self._user_buckets[key]

    # -- the outgoing bound ----------------------------------------------------------------

    def _overflowed(self, eio_sid: str) -> None:
        self.refusals.labels(limit="backlog").inc()
        sid = self.gw.sio.manager.sid_from_eio_sid(eio_sid, "/")
        session = self.gw.sessions.get(sid) if sid else None
        fields: dict[str, Any] = {"sid": sid, "limit": self.settings.max_outgoing_packets}
        if session is not None:
            fields.update(userId=session.identity.user_id, companyId=session.identity.company_id)
        logs.event("outgoing backlog: disconnecting", level=logging.WARNING, **fields)

    # -- the deny list -----------------------------------------------------------------------

    def reload_deny(self) -> bool:
        """Re-read the deny file if it changed; cut the sockets it now revokes. A file that
        cannot be read or parsed is logged and the previous list kept; True when a new list
        was installed."""
        path = self.settings.deny_file
        if not path:
            return False
        try:
            signature = _signature(path)
        except OSError as exc:
            if not self._deny_missing_logged:
                logs.event("deny file unreadable", level=logging.ERROR, error=str(exc))
                self._deny_missing_logged = True
            return False
        self._deny_missing_logged = False
        if signature == self._deny_signature:
            return False
        self._deny_signature = signature
        try:
            deny = DenyList.load(path)
        except (OSError, ValueError) as exc:
            logs.event(
                "deny file refused, keeping the previous list", level=logging.ERROR, error=str(exc)
            )
            return False
        self.gw.verifier.deny = deny
        logs.event(
            "deny list loaded",
            companies=len(deny.companies),
            users=len(deny.users) + len(deny.company_users),
        )
        self.revoke_denied()
        return True

    def revoke_denied(self) -> None:
        """Cut off every socket whose identity the current deny list revokes."""
        deny = self.gw.verifier.deny
        for sid in self.gw.sessions.sids():
            session = self.gw.sessions.get(sid)
            if session is not None and deny.denies(session.identity):
                self.gw.spawn(self._revoke(sid))

    async def _revoke(self, sid: str) -> None:
        if self.gw.sessions.get(sid) is None:
            return
        self.revocations.inc()
        logs.event("revoked: disconnecting", level=logging.WARNING, sid=sid)
        error = {"code": "unauthenticated", "message": PREFIX + "revoked", "event": "connect"}
        await self.gw.emit("error", error, to=sid)
        await self.gw.sio.disconnect(sid)

    async def _watch_deny(self) -> None:
        while True:
            await asyncio.sleep(DENY_POLL)
            self.reload_deny()

    # -- long-run gauges ---------------------------------------------------------------------

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            lag = max(0.0, loop.time() - started - LAG_INTERVAL)
            self._lags.append(lag)
            self.lag.set(lag)
            self.lag_max.set(max(self._lags))
            ticks += 1
            if ticks % 40 == 0:
                self.prune()

    def _room_count(self) -> float:
        rooms = getattr(self.gw.sio.manager, "rooms", {}).get("/", {})
        return float(sum(1 for name, members in rooms.items() if _named(name) and members))

    def _eio_count(self) -> float:
        return float(len(getattr(self.gw.sio.eio, "sockets", {})))

    def _outgoing(self, key: str) -> float:
        eio = self.gw.sio.eio
        return float(eio.stats[key]) if isinstance(eio, OutgoingEngineIO) else 0.0

    def _queued(self) -> float:
        sockets = getattr(self.gw.sio.eio, "sockets", {})
        return float(sum(s.queue.qsize() for s in list(sockets.values())))


def _named(room: object) -> bool:
    # python-socketio also keeps a room per sid (no ":") and the None room of all sockets.
    return isinstance(room, str) and ":" in room


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running loop (a scrape from another thread)
        return 0.0


def _signature(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)
