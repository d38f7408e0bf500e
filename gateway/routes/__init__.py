"""The HTTP side, on the same aiohttp application as Socket.IO: health, metrics, the document
read API and the ERP event intake, behind the CORS and error middlewares."""

from __future__ import annotations

from aiohttp import web

from gateway.routes import documents, events, health


def install(app: web.Application) -> None:
    """Add every HTTP route to ``app``."""
    app.router.add_get("/health/websocket", health.health)
    app.router.add_get("/metrics", health.metrics)
    app.router.add_get("/api/documents/{id}", documents.get_document)
    app.router.add_get("/api/resources/{id}", documents.get_resource)
    app.router.add_post("/api/events", events.post_event)
