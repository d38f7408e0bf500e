"""Fixtures shared by the store tests: a fresh store of every backend, started and stopped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from collab.store import Store, open_store
from tests.store import redis_server

#: Backend name -> URL of a fresh, empty store under the test's temporary directory. The
#: contract suite runs once per entry: adding a backend is one line here.
BACKENDS: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp: "memory://",
    "sqlite": lambda tmp: f"sqlite://{tmp / 'collab.db'}",
    "redis": lambda tmp: redis_server.shared_url(prefix=f"{tmp.name}:"),
}

StoreFactory = Callable[[], Store]


@pytest.fixture(params=list(BACKENDS))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A factory of unstarted stores of one backend; for SQLite every call opens the same
    file, so a second store is the first one reopened."""
    url = BACKENDS[request.param](tmp_path)
    return lambda: open_store(url)


@pytest_asyncio.fixture
async def store(make_store: StoreFactory) -> AsyncIterator[Store]:
    """A started store of each backend, stopped after the test."""
    s = make_store()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()
