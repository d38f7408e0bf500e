"""``GET /health/websocket`` and ``GET /metrics``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.context import GATEWAY

#: Seconds a dependency has to answer a health probe.
PROBE_TIMEOUT = 2.0


async def health(request: web.Request) -> web.Response:
    """Connections, store and Redis state, node and uptime; 503 when a dependency is down."""
    gw = request.app[GATEWAY]
    store = await _probe(gw.engine.store.health())
    redis = await _probe(gw.redis_health()) if gw.settings.redis else None
    ok = bool(store.get("ok")) and (redis is None or bool(redis.get("ok")))
    body = {
        "status": "ok" if ok else "degraded",
        "connections": len(gw.sessions),
        "store": store,
        "redis": redis,
        "node": gw.settings.node,
        "uptime": round(time.monotonic() - gw.started_at, 3),
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition (see ``gateway.metrics``)."""
    body = request.app[GATEWAY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _probe(check: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await asyncio.wait_for(check, PROBE_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "error": f"no answer within {PROBE_TIMEOUT}s"}
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    return result
