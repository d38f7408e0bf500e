"""Fixtures of the gateway tests: a real gateway on a free port, and Socket.IO clients that
record every event they receive.

Nothing here sleeps to wait for something: events are awaited from per-event queues with
generous timeouts, and "never receives" is checked after a round trip on the same socket
(:meth:`Client.barrier`): a server emits to one socket in order, so once the answer to a later
request has arrived, an event emitted before it would have arrived too.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest_asyncio
import socketio
from aiohttp import web

from gateway.app import create_app
from gateway.auth import mint_token
from gateway.config import Settings
from gateway.context import GATEWAY, Gateway

SECRET = "gateway-tests-secret-0123456789abcdef"
TIMEOUT = 10.0


class Client:
    """A python-socketio ``AsyncClient`` whose received events wait in per-event queues."""

    def __init__(self, serializer: str = "default") -> None:
        self.sio = socketio.AsyncClient(reconnection=False, serializer=serializer)
        self.queues: defaultdict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.connect_errors: list[Any] = []
        self.disconnected = asyncio.Event()
        self.sio.on("*", self._record)
        self.sio.on("connect_error", self._connect_error)
        self.sio.on("disconnect", self._disconnect)

    async def _record(self, event: str, *args: Any) -> None:
        self.queues[event].put_nowait(args[0] if len(args) == 1 else args)

    async def _connect_error(self, data: Any = None) -> None:
        self.connect_errors.append(data)

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    @property
    def sid(self) -> str:
        sid: str = self.sio.get_sid()
        return sid

    async def call(self, event: str, payload: Any = None, wait: float = TIMEOUT) -> Any:
        """Emit with an ack callback and return the ack (within ``wait`` seconds)."""
        if payload is None:
            return await self.sio.call(event, timeout=wait)
        return await self.sio.call(event, payload, timeout=wait)

    async def send(self, event: str, payload: Any = None) -> None:
        """Emit without an ack callback."""
        await self.sio.emit(event, payload)

    async def next(self, event: str, wait: float = TIMEOUT) -> Any:
        """The next ``event`` received (waiting for it up to ``wait`` seconds)."""
        return await asyncio.wait_for(self.queues[event].get(), wait)

    async def barrier(self) -> None:
        """Return once everything the server emitted to this socket so far has arrived."""
        ack = await self.call("test:barrier", {})
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"

    def received(self, event: str) -> list[Any]:
        """Everything received of ``event`` and not yet consumed (consumes it)."""
        out = []
        queue = self.queues[event]
        while not queue.empty():
            out.append(queue.get_nowait())
        return out

    async def assert_none(self, *events: str) -> None:
        """After a barrier: none of ``events`` was received (beyond those consumed)."""
        await self.barrier()
        for event in events:
            assert self.received(event) == [], f"unexpected {event}"

    async def disconnect(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


async def post_event(url: str, event: str, company: str, data: Any, **extra: Any) -> Any:
    """``POST /api/events`` to the gateway at ``url`` with a service token; the JSON answer
    (asserted 200)."""
    token = mint_token(SECRET, sub="erp", company_id=company, role="service")
    body = {"event": event, "companyId": company, "data": data, **extra}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/api/events", json=body, headers=headers) as r,
    ):
        answer = await r.json()
        assert r.status == 200, answer
        return answer


@dataclass
class Server:
    """A gateway serving on 127.0.0.1 at a free port."""

    app: web.Application
    runner: web.AppRunner
    url: str
    clients: list[Client] = field(default_factory=list)

    @property
    def gw(self) -> Gateway:
        return self.app[GATEWAY]

    def token(self, sub: str = "u1", company: str = "c1", **claims: Any) -> str:
        return mint_token(SECRET, sub=sub, company_id=company, **claims)

    async def post_event(self, event: str, company: str, data: Any, **extra: Any) -> Any:
        """``POST /api/events`` with a service token (:func:`post_event`)."""
        return await post_event(self.url, event, company, data, **extra)

    async def client(
        self,
        sub: str = "u1",
        company: str = "c1",
        *,
        name: str | None = None,
        role: str | None = None,
        token: str | None = None,
        transports: list[str] | None = None,
        serializer: str = "default",
        auth: Any = ...,
        headers: dict[str, str] | None = None,
    ) -> Client:
        """A connected client (``token`` overrides the one minted for ``sub``/``company``)."""
        c = self.unconnected(serializer)
        if token is None:
            token = self.token(sub, company, name=name, role=role)
        await c.sio.connect(
            self.url,
            # python-socketio handlers take exactly the arguments sent: no recovery offsets.
            auth={"token": token, "recovery": False} if auth is ... else auth,
            headers=headers or {},
            transports=transports or ["websocket"],
            wait_timeout=TIMEOUT,
        )
        return c

    def unconnected(self, serializer: str = "default") -> Client:
        c = Client(serializer)
        self.clients.append(c)
        return c

    async def close(self) -> None:
        """Disconnect the clients and stop the server (once; later calls do nothing)."""
        for c in self.clients:
            await c.disconnect()
        if self.runner.server is not None:
            await self.runner.cleanup()


ServerFactory = Callable[..., Awaitable[Server]]


@pytest_asyncio.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start gateways with settings overrides (memory store and the test secret by default);
    all are stopped after the test."""
    servers: list[Server] = []

    async def start(**overrides: Any) -> Server:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "store": "memory://",
            "jwt_secret": SECRET,
            "node": "test-node",
            **overrides,
        }
        app = create_app(Settings(**values))
        runner = web.AppRunner(app, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server = Server(app, runner, f"http://127.0.0.1:{port}")
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def server(make_server: ServerFactory) -> Server:
    """A gateway with default test settings."""
    return await make_server()
