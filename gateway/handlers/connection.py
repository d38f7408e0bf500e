"""A connection's lifecycle: authenticate the handshake, enter the company and user rooms,
announce presence, and disconnect the socket when its token expires; undo it all on
disconnect."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import socketio.exceptions

from collab.model import iso, now_ms
from collab.rooms import company_room, user_room
from gateway import logs
from gateway.auth import PREFIX, AuthenticationFailed, Identity, handshake_token

if TYPE_CHECKING:
    from gateway.context import Gateway


async def connect(gw: Gateway, sid: str, environ: dict[str, Any], auth: Any) -> None:
    """Accept the handshake or refuse it (``connect_error`` ``authentication failed: ...``)."""
    try:
        identity = gw.verifier.verify(handshake_token(auth, environ))
    except AuthenticationFailed as exc:
        gw.metrics.connection_failures.labels(reason=exc.slug).inc()
        logs.event(
            "refused",
            level=logging.WARNING,
            sid=sid,
            reason=exc.reason,
            remote=environ.get("REMOTE_ADDR"),
        )
        raise
    # Connections per user: connect_error "too many connections: ..." (gateway.limits).
    gw.guard.admit(identity, sid)
    try:
        await _accept(gw, sid, identity)
    except Exception:
        # python-socketio would leave the client waiting: refuse it, keep the trace.
        logs.log.exception("connect failed for %s", sid)
        gw.sessions.pop(sid)
        gw.guard.release(sid)
        with contextlib.suppress(Exception):
            await gw.presence.disconnect(identity.company_id, identity.user_id, sid)
        raise socketio.exceptions.ConnectionRefusedError("internal error") from None
    gw.metrics.connected(identity.company_id, identity.user_id)
    logs.event(
        "connect",
        sid=sid,
        userId=identity.user_id,
        companyId=identity.company_id,
        transport=gw.sio.transport(sid),
    )


async def _accept(gw: Gateway, sid: str, identity: Identity) -> None:
    session = gw.sessions.add(sid, identity)
    company, user = identity.company_id, identity.user_id
    # A recovered session (gateway.recovery) gets its rooms back, these two among them, and
    # the events it missed; its user is still counted online (held), so nothing is announced.
    # A new socket enters its rooms without flushing the held presence events: they skip it
    # (it was not there when they were emitted), so a storm's announcements keep coalescing.
    if not await gw.recovery.restore(sid, identity):
        await gw.enter_new(sid, company_room(company))
        await gw.enter_new(sid, user_room(company, user))
    if await gw.presence.connect(company, user, sid):
        online = {"userId": user, "status": "online", "timestamp": iso(now_ms())}
        # Not to the connecting socket itself: it is not connected yet, and knows.
        # Coalesced (gateway.presence.coalesce): in a connect storm, each member gets these
        # in a few batches, each in one write.
        await gw.emit("user:online", online, to=company_room(company), skip_sid=sid, coalesce=True)
    delay = max(0.0, identity.exp - time.time())
    session.expiry = asyncio.get_running_loop().call_later(
        delay, lambda: gw.spawn(_expire(gw, sid))
    )


async def disconnect(gw: Gateway, sid: str, reason: Any) -> None:
    """Forget the socket; announce the user offline if it was their last connection."""
    gw.guard.release(sid)
    session = gw.sessions.pop(sid)
    if session is None:
        return
    company, user = session.identity.company_id, session.identity.user_id
    gw.metrics.disconnected(company, user)
    # A dropped socket of a client that may recover stays counted in presence until it
    # recovers or its window ends (gateway.recovery): no user:offline/online flapping.
    held = await gw.recovery.hold(sid)
    if not held and await gw.presence.disconnect(company, user, sid):
        offline = {"userId": user, "status": "offline", "timestamp": iso(now_ms())}
        await gw.emit("user:offline", offline, to=company_room(company), coalesce=True)
    logs.event("disconnect", sid=sid, userId=user, companyId=company, reason=str(reason), held=held)


async def _expire(gw: Gateway, sid: str) -> None:
    """The token expired while connected: say why, then disconnect the socket."""
    if gw.sessions.get(sid) is None:
        return
    error = {"code": "unauthenticated", "message": PREFIX + "token expired", "event": "connect"}
    await gw.emit("error", error, to=sid)
    await gw.sio.disconnect(sid)
