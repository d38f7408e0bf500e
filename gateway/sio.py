"""The Socket.IO server: python-socketio's ``AsyncServer``, told whether each event asked for
an ack, and configured from the settings.

The contract's exactly-once rule depends on whether the client passed an ack callback (then
the outcome goes in the ack and the writer is left out of the room's ``document:updated``).
python-socketio knows that (the packet's ack id) but does not tell handlers, so
:class:`GatewayServer` overrides the one method that runs a handler with the id at hand and
puts it into :data:`gateway.wire.ACK_REQUESTED`. Each event runs in its own task, so the value
never leaks from one event to another.
"""

from __future__ import annotations

from typing import Any

import engineio.payload
import socketio

from gateway.config import Settings
from gateway.wire import ACK_REQUESTED

if not hasattr(socketio.AsyncServer, "_handle_event_internal"):  # pragma: no cover
    raise ImportError(
        "this python-socketio has no AsyncServer._handle_event_internal; "
        "gateway.sio.GatewayServer needs updating for it"
    )


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """An ``AsyncServer`` that records, per event, whether the client asked for an ack."""

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: int | None
    ) -> Any:
        ACK_REQUESTED.set(id is not None)
        return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)


def cors_origins(settings: Settings) -> str | list[str] | None:
    """python-socketio's ``cors_allowed_origins``: None is same-origin only, ``*`` any."""
    if not settings.cors_origins:
        return None
    if "*" in settings.cors_origins:
        return "*"
    return list(settings.cors_origins)


def make_server(settings: Settings) -> GatewayServer:
    """The Socket.IO server for ``settings`` (not yet attached to an app).

    Raises python-engineio's packets-per-polling-payload limit, a class attribute and so
    process-wide (it is only ever raised, never lowered, here).
    """
    payload = engineio.payload.Payload
    payload.max_decode_packets = max(payload.max_decode_packets, settings.max_polling_packets)
    client_manager = None
    if settings.redis:
        # Multi-node fan-out: every emit to a room reaches that room's sockets on every node.
        client_manager = socketio.AsyncRedisManager(settings.redis)
    return GatewayServer(
        async_mode="aiohttp",
        client_manager=client_manager,
        serializer="msgpack" if settings.serializer == "msgpack" else "default",
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_http_buffer_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
