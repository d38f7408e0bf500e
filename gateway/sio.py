"""The Socket.IO server: python-socketio's ``AsyncServer``, told whether each event asked for
an ack, and configured from the settings.

The contract's exactly-once rule depends on whether the client passed an ack callback (then
the outcome goes in the ack and the writer is left out of the room's ``document:updated``).
python-socketio knows that (the packet's ack id) but does not tell handlers, so
:class:`GatewayServer` overrides the one method that runs a handler with the id at hand and
puts it into :data:`gateway.wire.ACK_REQUESTED`. Each event runs in its own task, so the value
never leaks from one event to another.

Connection state recovery (``gateway.recovery``) plugs in through :class:`ServerHooks`: the
server reports the CONNECT auth, the reply, rooms entered and left, why a socket went away,
and lets the hooks see (and rewrite or hold back) every outgoing event packet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import engineio.packet
import engineio.payload
import msgpack
import socketio
import socketio.msgpack_packet
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from gateway.config import Settings
from gateway.jsoncodec import JsonCodec
from gateway.outgoing import FanoutManager, OutgoingEngineIO
from gateway.wire import ACK_REQUESTED, MALFORMED_EVENT

if not hasattr(socketio.AsyncServer, "_handle_event_internal"):  # pragma: no cover
    raise ImportError(
        "this python-socketio has no AsyncServer._handle_event_internal; "
        "gateway.sio.GatewayServer needs updating for it"
    )


#: Why a socket went away (python-engineio's reasons), when its session may be recovered: the
#: transport dropped. ``client disconnect`` counts when the engine.io connection was closed
#: (a polling client's ``engine.close()``), not for a Socket.IO DISCONNECT packet
#: (``socket.disconnect()``), which python-socketio reports with the same words.
RECOVERABLE_REASONS = frozenset(
    {
        socketio.AsyncServer.reason.TRANSPORT_CLOSE,
        socketio.AsyncServer.reason.TRANSPORT_ERROR,
        socketio.AsyncServer.reason.PING_TIMEOUT,
        socketio.AsyncServer.reason.CLIENT_DISCONNECT,
    }
)

#: Set while the engine.io connection itself is closing (as opposed to one namespace).
_ENGINE_CLOSING: ContextVar[bool] = ContextVar("engine_closing", default=False)


class ServerHooks(Protocol):
    """What :class:`GatewayServer` tells connection state recovery (``gateway.recovery``),
    default namespace only."""

    def connecting(self, eio_sid: str, auth: Any) -> None:
        """A CONNECT arrived with ``auth`` (before the connect handler runs)."""

    async def connected(self, eio_sid: str, sid: str | None) -> None:
        """The CONNECT was answered (accepted or refused)."""

    def connect_reply(self, sid: str) -> dict[str, Any]:
        """Members added to the CONNECT reply ``{sid}`` (``pid``)."""
        ...

    def disconnecting(self, sid: str, recoverable: bool) -> None:
        """``sid`` goes away (its disconnect handler runs next); ``recoverable``: the
        transport dropped, nobody disconnected on purpose."""

    def room_changed(self, sid: str, room: str, entered: bool) -> None:
        """``sid`` entered or left ``room``."""

    def plain(self, pkts: Sequence[eio_packet.Packet]) -> Sequence[eio_packet.Packet]:
        """``pkts`` as they go to every socket that did not opt in (called first, once per
        delivery, before :meth:`admit` for each recipient)."""
        ...

    def admit(
        self, eio_sid: str, pkts: Sequence[eio_packet.Packet]
    ) -> Sequence[eio_packet.Packet] | None:
        """The packets to send a socket that opted in, of ``pkts`` (those it must not get yet
        held back); None for a socket that did not (it gets :meth:`plain`'s)."""
        ...


class GatewayServer(socketio.AsyncServer):  # type: ignore[misc]
    """An ``AsyncServer`` that records, per event, whether the client asked for an ack, and
    reports to :attr:`hooks` (connection state recovery) when set."""

    hooks: ServerHooks | None = None
    #: Awaited before a socket enters a room (``gateway.context.Gateway.settle``).
    before_enter: Callable[[], Awaitable[None]] | None = None

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        hooks = self.hooks
        if hooks is None or (namespace or "/") != "/":
            await super()._handle_connect(eio_sid, namespace, data)
            return
        hooks.connecting(eio_sid, data)
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            await hooks.connected(eio_sid, self.manager.sid_from_eio_sid(eio_sid, "/"))

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        hooks = self.hooks
        if (
            hooks is not None
            and pkt.packet_type == sio_packet.CONNECT
            and isinstance(pkt.data, dict)
            and "sid" in pkt.data
            and (pkt.namespace or "/") == "/"
        ):
            pkt.data = {**pkt.data, **hooks.connect_reply(pkt.data["sid"])}
        await super()._send_packet(eio_sid, pkt)

    def deliver(self, eio_sids: Iterable[str], eio_pkts: Sequence[Any]) -> None:
        """Send an event's engine.io packets (or a batch of events') to sockets now
        (``gateway.outgoing``), as the hooks have them: every event to a room or a socket
        passes here."""
        send_many = self.eio.send_many
        hooks = self.hooks
        if hooks is None:
            for eio_sid in eio_sids:
                send_many(eio_sid, eio_pkts)
            return
        # What a socket that did not opt into recovery receives is the same for all: computed
        # once per broadcast, not per recipient (a Yjs update is two packets to each replica).
        # This loop runs once per recipient of every event: kept to two calls.
        plain = hooks.plain(eio_pkts)
        admit = hooks.admit
        for eio_sid in eio_sids:
            pkts = admit(eio_sid, eio_pkts)
            if pkts is None:
                pkts = plain
            if pkts:
                send_many(eio_sid, pkts)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        # python-socketio's own managers' path (FanoutManager calls deliver directly).
        self.deliver((eio_sid,), (eio_pkt,))

    async def send_unhooked(self, eio_sid: str, eio_pkt: Any) -> None:
        """Send an engine.io packet to a socket, past the hooks (a recovery replay)."""
        self.eio.send_now(eio_sid, eio_pkt)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        token = _ENGINE_CLOSING.set(True)
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            _ENGINE_CLOSING.reset(token)

    async def _handle_disconnect(
        self, eio_sid: str, namespace: str | None, reason: Any = None
    ) -> None:
        hooks = self.hooks
        if hooks is not None and (namespace or "/") == "/":
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            if sid is not None:
                recoverable = _ENGINE_CLOSING.get() and reason in RECOVERABLE_REASONS
                hooks.disconnecting(sid, recoverable)
        await super()._handle_disconnect(eio_sid, namespace, reason)

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        if self.before_enter is not None:
            # Events emitted before the socket entered but still waiting to go out together
            # (``Gateway.emit(coalesce=True)``) must not reach it.
            await self.before_enter()
        await super().enter_room(sid, room, namespace)
        if self.hooks is not None and (namespace or "/") == "/":
            self.hooks.room_changed(sid, room, True)

    def in_room(self, sid: str, room: str, namespace: str = "/") -> bool:
        """Whether socket ``sid`` is in ``room``: one lookup, where ``rooms(sid)`` lists every
        room of the namespace (a per-socket room each: thousands) to find the socket's."""
        members = self.manager.rooms.get(namespace, {}).get(room)
        return members is not None and sid in members

    def occupied(self, room: str, namespace: str = "/") -> bool:
        """Whether any socket of this node is in ``room``."""
        return bool(self.manager.rooms.get(namespace, {}).get(room))

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await super().leave_room(sid, room, namespace)
        if self.hooks is not None and (namespace or "/") == "/":
            self.hooks.room_changed(sid, room, False)

    async def _handle_event_internal(
        self, server: Any, sid: str, eio_sid: str, data: Any, namespace: str, id: int | None
    ) -> Any:
        ACK_REQUESTED.set(id is not None)
        return await super()._handle_event_internal(server, sid, eio_sid, data, namespace, id)

    async def _handle_event(
        self, eio_sid: str, namespace: str | None, id: int | None, data: Any
    ) -> Any:
        # A packet that names no event (not an array starting with a string: python-socketio
        # would fail on it and drop it, ack unanswered), names a lifecycle event (which
        # python-socketio would run: a client emitting "disconnect" would drop its own session
        # while staying connected) or is "*" (the catch-all's own name) goes to the catch-all
        # as MALFORMED_EVENT, answered invalid_payload.
        if (
            not isinstance(data, list)
            or not data
            or not isinstance(data[0], str)
            or data[0] in self.reserved_events
            or data[0] == "*"  # python-socketio would call the catch-all without the name
        ):
            data = [MALFORMED_EVENT, data]
        return await super()._handle_event(eio_sid, namespace, id, data)

    def _engineio_server_class(self) -> Any:
        # python-engineio with the outbox fast path and a bound per socket (gateway.outgoing).
        return OutgoingEngineIO


def _bytes_ext(code: int, data: bytes) -> Any:
    """msgpack ext type 0 is how ``socket.io-msgpack-parser`` (notepack) encodes an
    ``ArrayBuffer``/``Uint8Array`` — what a browser and y-protocols have: read it as bytes."""
    return data if code == 0 else msgpack.ExtType(code, data)


#: The msgpack serializer, reading the JS parser's binary as bytes.
MsgPackPacket = socketio.msgpack_packet.MsgPackPacket.configure(ext_hook=_bytes_ext)


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
    client_manager: socketio.AsyncManager = FanoutManager()
    if settings.redis:
        # Multi-node fan-out: every emit to a room reaches that room's sockets on every node
        # (replaced by gateway.fanout.RedisFanout when the app is built).
        client_manager = socketio.AsyncRedisManager(settings.redis)
    server = GatewayServer(
        async_mode="aiohttp",
        client_manager=client_manager,
        serializer=MsgPackPacket if settings.serializer == "msgpack" else "default",
        # Depth-limited decoding (gateway.jsoncodec); process-wide in python-socketio.
        json=JsonCodec(settings.max_json_depth),
        cors_allowed_origins=cors_origins(settings),
        max_http_buffer_size=settings.max_http_buffer_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        logger=False,
        engineio_logger=False,
    )
    server.eio.ws_compression = settings.ws_compression
    return server
