"""Real gateway processes for the multi-node and crash tests.

:class:`GatewayProcess` runs ``python -m gateway`` (what ``collab-gateway`` runs) on a free
port of 127.0.0.1, waits until ``GET /health/websocket`` answers 200, and kills it (SIGKILL by
default: a crash) or restarts it on the same port and store. Its output goes to a log file in
the test's directory, whose tail is shown when it fails to start.

:class:`Cluster` is a redis-server (``tests.store.redis_server.RedisServer``: a free port,
optionally with an ``appendfsync always`` AOF) and the gateway nodes started against it, each
with ``--redis`` and ``--store redis://``; :func:`cluster` is the fixture factory. Without
``redis-server`` the tests skip (fail under ``COLLAB_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from gateway.auth import mint_token
from tests.gateway.conftest import SECRET, TIMEOUT, Client, post_event
from tests.store.redis_server import RedisServer, free_port

#: Seconds a gateway process may take to answer its health check.
START_TIMEOUT = 20.0


class GatewayProcess:
    """One ``python -m gateway`` subprocess; its port is kept across restarts."""

    def __init__(self, directory: Path, name: str, args: list[str]) -> None:
        self.directory = directory
        self.name = name
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.clients: list[Client] = []
        self.log = directory / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> GatewayProcess:
        """Start (or restart) the process and wait until its health check answers 200."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
        cmd = [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--jwt-secret", SECRET, "--node", self.name, "--log-level", "WARNING"]
        self.proc = self._spawn([*cmd, *self.args], env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _ = await self.health()
            except aiohttp.ClientError:
                status = 0
            if status == 200:
                return self
            await asyncio.sleep(0.05)
        self.kill()
        raise RuntimeError(f"gateway {self.name} did not start:\n{self.log_tail()}")

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL: a crash, nothing cleaned up) and reap the process."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    async def health(self) -> tuple[int, Any]:
        """``GET /health/websocket``: status and JSON body."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.url + "/health/websocket") as r,
        ):
            return r.status, await r.json()

    async def post_event(self, event: str, company: str, data: Any, **extra: Any) -> Any:
        """``POST /api/events`` with a service token (``conftest.post_event``)."""
        return await post_event(self.url, event, company, data, **extra)

    async def client(self, sub: str = "u1", company: str = "c1", **claims: Any) -> Client:
        """A connected websocket client of this node."""
        c = Client()
        self.clients.append(c)
        token = mint_token(SECRET, sub=sub, company_id=company, **claims)
        await c.sio.connect(
            self.url,
            auth={"token": token, "recovery": False},
            transports=["websocket"],
            wait_timeout=TIMEOUT,
        )
        return c

    async def close_clients(self) -> None:
        for c in self.clients:
            try:
                await asyncio.wait_for(c.disconnect(), 5)
            except Exception:
                pass
        self.clients.clear()


@dataclass
class Cluster:
    """A redis-server and gateway nodes sharing it (fan-out, store and presence)."""

    directory: Path
    redis: RedisServer
    nodes: list[GatewayProcess] = field(default_factory=list)
    prefix: str = "t:"

    @property
    def store_url(self) -> str:
        return f"{self.redis.url}?prefix={self.prefix}"

    async def node(self, name: str, *extra: str, presence_ttl: float = 2.0) -> GatewayProcess:
        """Start one more node (``--redis``, ``--store redis://``, the given presence TTL)."""
        args = ["--redis", self.redis.url, "--store", self.store_url]
        args += ["--presence-ttl", str(presence_ttl), *extra]
        node = GatewayProcess(self.directory, name, args)
        self.nodes.append(node)
        return await node.start()

    async def close(self) -> None:
        for node in self.nodes:
            await node.close_clients()
            node.kill()
        self.redis.kill()


ClusterFactory = Callable[..., Coroutine[Any, Any, Cluster]]


@pytest_asyncio.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Start a redis-server (``aof=True``: ``appendfsync always``) and ``nodes`` gateway nodes
    against it; everything is killed after the test."""
    clusters: list[Cluster] = []

    async def start(nodes: int = 2, *, aof: bool = False, presence_ttl: float = 2.0) -> Cluster:
        redis = RedisServer(tmp_path / f"redis{len(clusters)}", aof=aof)
        cluster = Cluster(tmp_path, redis)
        clusters.append(cluster)
        redis.start()
        await asyncio.gather(
            *(cluster.node(f"node{i + 1}", presence_ttl=presence_ttl) for i in range(nodes))
        )
        cluster.nodes.sort(key=lambda n: n.name)
        return cluster

    yield start
    for cluster in clusters:
        await cluster.close()


async def eventually(
    check: Callable[[], Coroutine[Any, Any, bool]], within: float = TIMEOUT
) -> None:
    """Wait until ``check()`` is true (polling: for conditions no event announces)."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within}s: {check.__name__}")
        await asyncio.sleep(0.1)
