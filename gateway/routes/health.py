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
    """Connections, store and Redis state, node and uptime; 503 when a dependency is down,
    ``failing`` naming each one (``store``, ``redis.fanout``, ``redis.presence``).

    With ``--redis``, ``redis`` reports the fan-out (Redis answers and this node's listener is
    subscribed: events from other nodes reach it) and the shared presence. This node keeps
    serving its own clients while any of them is down.
    """
    gw = request.app[GATEWAY]
    store = await _probe(gw.engine.store.health())
    reports: dict[str, dict[str, Any]] = {"store": store}
    redis: dict[str, Any] | None = None
    if gw.settings.redis:
        fanout_health = getattr(gw.sio.manager, "health", None)  # gateway.fanout.RedisFanout
        fanout = await _probe(fanout_health() if fanout_health else gw.redis_health())
        presence = await _probe(gw.presence.health())
        reports |= {"redis.fanout": fanout, "redis.presence": presence}
        redis = {"ok": _ok(fanout) and _ok(presence), "fanout": fanout, "presence": presence}
    failing = [name for name, report in reports.items() if not _ok(report)]
    body = {
        "status": "degraded" if failing else "ok",
        "failing": failing,
        "connections": len(gw.sessions),
        "store": store,
        "redis": redis,
        "node": gw.settings.node,
        "uptime": round(time.monotonic() - gw.started_at, 3),
    }
    return web.json_response(body, status=503 if failing else 200)


def _ok(report: dict[str, Any]) -> bool:
    return bool(report.get("ok"))


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
