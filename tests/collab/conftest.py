"""Engine fixtures: every engine test runs against the in-memory reference store, the SQLite
store (a real file in a temporary directory) and the Redis store (a redis-server the tests
start; skipped where redis-server is absent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from collab.engine import Engine, EngineConfig
from collab.model import Author
from collab.store import open_store
from collab.store.base import Store
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore
from tests.store import redis_server

ANN = Author("u-ann", "Ann", "acme")
BOB = Author("u-bob", "Bob", "acme")
EVE = Author("u-eve", "Eve", "globex")


def store_factory(kind: str, tmp_path: Path) -> Callable[[], Store]:
    if kind == "memory":
        shared = MemoryStore()
        return lambda: shared
    if kind == "redis":
        url = redis_server.shared_url(prefix=f"engine:{tmp_path.name}:")
        return lambda: open_store(url)
    path = tmp_path / "engine.db"
    return lambda: SQLiteStore(path)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A factory giving the same underlying storage each call (a restart reopens it)."""
    return store_factory(request.param, tmp_path)


@pytest_asyncio.fixture
async def engine(make_store: Callable[[], Store]) -> AsyncIterator[Engine]:
    async with Engine(make_store(), EngineConfig(history_limit=50)) as e:
        yield e
