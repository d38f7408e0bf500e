"""Publishing ERP events (``project:created``, ``task:assigned``, ...) to the clients that may
see them, from the gateway's own process or from any backend process.

Every publisher goes through :func:`collab.catalogue.prepare_publish`, the same function
``POST /api/events`` uses: unknown or gateway-only events are refused, the payload is checked
against the seed guide's types (``invalid_payload`` with ``fields`` naming every bad field),
and the route is the contract's: the company's room, or one user's room for user-scoped events
and for any event published with a target user.

- :class:`LocalPublisher` emits through this process's Socket.IO server;
- :class:`RedisPublisher` emits through Redis (python-socketio's write-only
  ``AsyncRedisManager``) to every gateway node started with ``--redis`` on the same URL and
  channel. Usable from any asyncio backend process; it needs no gateway in-process.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol

import socketio

from collab.catalogue import Route, prepare_publish


class Publisher(Protocol):
    """Publishes one ERP event of one company."""

    async def publish(
        self, event: str, company_id: str, data: Mapping[str, Any], user_id: str | None = None
    ) -> Route:
        """Validate, route and emit ``event``; returns where it went. Raises ``CollabError``
        (``invalid_payload``) for an event the catalogue refuses."""
        ...


class Emitter(Protocol):
    """What can emit to a room (a python-socketio server, or the gateway around it)."""

    async def emit(self, event: str, data: Any, *, to: str) -> None: ...


class _CataloguePublisher:
    """Validation and routing shared by every publisher; subclasses only emit."""

    async def publish(
        self, event: str, company_id: str, data: Mapping[str, Any], user_id: str | None = None
    ) -> Route:
        payload, route = prepare_publish(event, company_id, data, user_id)
        await self._emit(event, payload, route.room)
        return route

    async def _emit(self, event: str, payload: dict[str, Any], room: str) -> None:
        raise NotImplementedError


class LocalPublisher(_CataloguePublisher):
    """Publishes through an in-process Socket.IO server (or the ``Gateway`` wrapping it)."""

    def __init__(self, emitter: Emitter) -> None:
        self._emitter = emitter

    async def _emit(self, event: str, payload: dict[str, Any], room: str) -> None:
        await self._emitter.emit(event, payload, to=room)


class RedisPublisher(_CataloguePublisher):
    """Publishes through Redis to gateway nodes started with ``--redis <url>``.

    Use as ``async with RedisPublisher(url) as publisher:``. python-socketio retries a failed
    Redis publish once and then logs and drops the message (at-most-once delivery, like any
    Socket.IO emit).
    """

    def __init__(self, url: str, *, channel: str = "socketio") -> None:
        self._manager = socketio.AsyncRedisManager(url, channel=channel, write_only=True)

    async def _emit(self, event: str, payload: dict[str, Any], room: str) -> None:
        await self._manager.emit(event, payload, room=room, namespace="/")

    async def aclose(self) -> None:
        """Close the Redis connection, if one was opened."""
        redis = getattr(self._manager, "redis", None)
        if redis is not None:
            await redis.aclose()
            self._manager.redis = None
            self._manager.connected = False

    async def __aenter__(self) -> RedisPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
