"""``create_app(settings)``: the aiohttp application serving Socket.IO (``/socket.io/``) and
the HTTP routes, with the engine started and stopped alongside it."""

from __future__ import annotations

from aiohttp import web

from collab.engine import Engine, EngineConfig
from collab.store import open_store
from gateway import fanout, handlers, memory, routes
from gateway.auth import TokenVerifier
from gateway.config import Settings
from gateway.context import GATEWAY, Gateway
from gateway.limits import document_limits
from gateway.metrics import Metrics
from gateway.presence import MemoryPresence, Presence, RedisPresence, node_id
from gateway.routes import demo, middleware
from gateway.sio import make_server


def create_app(settings: Settings) -> web.Application:
    """A ready-to-run application; the engine starts with the app (``on_startup``), sockets
    are closed on shutdown and the engine stopped on cleanup.

    Raises ``SettingsError`` (bad key file, no JWT secret or key) or ``ValueError`` (bad store
    URL) at once, before anything is served.
    """
    verifier = TokenVerifier.from_settings(settings)
    engine = Engine(
        open_store(settings.store),
        EngineConfig(
            history_limit=settings.history_limit,
            idle_seconds=settings.document_idle_seconds,
            limits=document_limits(settings),
        ),
    )
    sio = make_server(settings)
    presence: Presence = MemoryPresence()
    if settings.redis:
        # Several nodes: fan-out that never stalls local clients, presence counted across nodes.
        fanout.install(sio, fanout.RedisFanout(settings.redis))
        node = node_id(settings.node)
        presence = RedisPresence(settings.redis, node=node, ttl=settings.presence_ttl)
    gw = Gateway(
        settings,
        engine=engine,
        sio=sio,
        verifier=verifier,
        presence=presence,
        metrics=Metrics(),
    )
    handlers.install(gw)

    app = web.Application(
        middlewares=[middleware.cors(settings.cors_origins), middleware.errors],
        client_max_size=settings.max_http_buffer_size,
    )
    app[GATEWAY] = gw
    gw.sio.attach(app)
    routes.install(app)
    if settings.demo_enabled:
        demo.install(app)  # the /demo page and its API (gateway.routes.demo)

    async def start(_: web.Application) -> None:
        await gw.start()
        gw.spawn(memory.maintain(gw))  # prune and give freed memory back (gateway.memory)
        memory.install_debug(gw)  # reports on SIGUSR1 when COLLAB_MEMORY_DEBUG is set

    async def shutdown(_: web.Application) -> None:
        await gw.close_connections()

    async def cleanup(_: web.Application) -> None:
        await gw.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    return app
