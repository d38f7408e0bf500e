"""Suite-wide settings.

Hypothesis profiles: ``default`` keeps the suite fast; ``deep`` (``HYPOTHESIS_PROFILE=deep``)
runs each property with many more examples when hunting for bugs.

Tests needing an outside program (redis-server, node) skip where it is absent; with
``COLLAB_REQUIRE_ALL=1`` (set by ``.ci/run``) those skips become failures instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def require_program(name: str) -> str:
    """The path of ``name``, or skip (fail under ``COLLAB_REQUIRE_ALL=1``) with a clear reason."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; install it to run this test (.ci/run does)"
        if os.environ.get("COLLAB_REQUIRE_ALL") == "1":
            pytest.fail(message + " [COLLAB_REQUIRE_ALL=1]")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_redis() -> Iterator[None]:
    """Kill the redis-server that store-backed tests started on first use, if any."""
    yield
    from tests.store import redis_server

    redis_server.stop_shared()
