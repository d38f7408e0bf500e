"""Publishers: the in-process one and RedisPublisher, through a real redis-server to a gateway
started with --redis; both validate and route with the catalogue, like POST /api/events."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from collab.errors import CollabError
from gateway.publisher import LocalPublisher, RedisPublisher
from tests.conftest import require_program
from tests.gateway.conftest import ServerFactory

PROJECT = {
    "id": "p1",
    "name": "Tower",
    "companyId": "c1",
    "status": "planning",
    "createdAt": "2024-01-15T10:30:00.000Z",
}


class Recorder:
    def __init__(self) -> None:
        self.emitted: list[tuple[str, Any, str]] = []

    async def emit(self, event: str, data: Any, *, to: str) -> None:
        self.emitted.append((event, data, to))


async def test_local_publisher_validates_and_routes() -> None:
    recorder = Recorder()
    publisher = LocalPublisher(recorder)
    route = await publisher.publish("project:created", "c1", PROJECT)
    assert route.room_kind == "company"
    notification = {
        "id": "n",
        "title": "t",
        "message": "m",
        "type": "info",
        "userId": "alice",
        "createdAt": "2024-01-15T10:30:00.000Z",
    }
    await publisher.publish("notification:new", "c1", notification)
    assert recorder.emitted == [
        ("project:created", PROJECT, "company:c1"),
        ("notification:new", notification, "user:c1:alice"),
    ]
    with pytest.raises(CollabError) as refused:
        await publisher.publish("project:created", "c1", {**PROJECT, "status": "?"})
    assert refused.value.details["fields"].keys() == {"status"}
    with pytest.raises(CollabError):
        await publisher.publish("user:online", "c1", {})
    assert len(recorder.emitted) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest_asyncio.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A throwaway redis-server (skipped where it is not installed)."""
    exe = require_program("redis-server")
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        exe,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    try:
        for _ in range(200):  # wait for the server process to listen
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.025)
        yield url
    finally:
        await client.aclose()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def _subscribed(url: str) -> None:
    """Wait until a gateway node listens on python-socketio's Redis channel."""
    client = Redis.from_url(url)
    try:
        for _ in range(400):
            [(_, count)] = await client.pubsub_numsub("socketio")
            if count:
                return
            await asyncio.sleep(0.025)
        raise AssertionError("no gateway subscribed to Redis")
    finally:
        await client.aclose()


async def test_redis_publisher_reaches_a_gateway_node(
    make_server: ServerFactory, redis_url: str
) -> None:
    server = await make_server(redis=redis_url)
    mine = await server.client("u1", "c1")
    other = await server.client("u1", "c2")
    await _subscribed(redis_url)
    async with RedisPublisher(redis_url) as publisher:
        route = await publisher.publish("project:created", "c1", PROJECT)
        assert route.room == "company:c1"
        assert await mine.next("project:created") == PROJECT
        with pytest.raises(CollabError):
            await publisher.publish("project:created", "c1", {"id": "p1"})
    await other.assert_none("project:created")
    # Documents still work through the Redis client manager.
    for c in (mine,):
        await c.call("document:join", {"documentId": "d"})
    ack = await mine.call("document:update", {"documentId": "d", "version": 0, "data": {}})
    assert ack["status"] == "applied"

    status = (await server.gw.redis_health())["ok"]
    assert status is True
