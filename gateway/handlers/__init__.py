"""Socket.IO handlers, one module per event family, and :func:`install`, which binds them.

Every client event goes through ``gateway.wire.dispatch`` (validate, call, answer); an event
with no handler is answered ``invalid_payload`` the same way. ``connect`` and ``disconnect``
are the connection's lifecycle (``connection``), not events, and have no ack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.handlers import conflicts, connection, rooms, sync, updates, user_typing
from gateway.wire import Ack, Handler, dispatch

if TYPE_CHECKING:
    from gateway.context import Gateway

HANDLERS: tuple[Handler[Any], ...] = (
    rooms.document_join,
    rooms.document_leave,
    rooms.resource_join,
    rooms.resource_leave,
    updates.document_update,
    updates.resource_update,
    conflicts.conflict_resolve,
    user_typing.user_typing,
    sync.document_sync,
)


def install(gw: Gateway) -> None:
    """Register the connection lifecycle, every event handler and the catch-all."""
    sio = gw.sio

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await connection.connect(gw, sid, environ, auth)

    async def disconnect(sid: str, reason: Any = None) -> None:
        await connection.disconnect(gw, sid, reason)

    async def unknown(event: str, sid: str, *args: Any) -> Ack | None:
        return await dispatch(gw, event, sid, args, None)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    for handler in HANDLERS:
        sio.on(handler.event, _bind(gw, handler))
    sio.on("*", unknown)


def _bind(gw: Gateway, handler: Handler[Any]) -> Any:
    async def handle(sid: str, *args: Any) -> Ack | None:
        return await dispatch(gw, handler.event, sid, args, handler)

    handle.__name__ = handler.fn.__name__
    return handle
