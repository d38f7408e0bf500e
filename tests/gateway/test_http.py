"""HTTP routes: /health/websocket, /metrics, the documents API, POST /api/events, CORS."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.auth import DenyList, Identity
from gateway.routes import events, middleware
from tests.gateway.conftest import Server, ServerFactory

PROJECT = {
    "id": "p1",
    "name": "Tower",
    "companyId": "c1",
    "status": "planning",
    "createdAt": "2024-01-15T10:30:00.000Z",
}


async def request(
    server: Server, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, headers=headers, **kw) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers


async def test_health(server: Server) -> None:
    await server.client()
    status, body, _ = await request(server, "GET", "/health/websocket")
    assert status == 200
    assert body["status"] == "ok"
    assert body["connections"] == 1
    assert body["store"]["ok"] is True and body["store"]["backend"] == "memory"
    assert body["redis"] is None
    assert body["node"] == "test-node"
    assert body["uptime"] >= 0


async def test_health_is_503_when_the_store_is_down(server: Server) -> None:
    await server.gw.engine.store.stop()
    status, body, _ = await request(server, "GET", "/health/websocket")
    assert status == 503
    assert body["status"] == "degraded"
    assert body["store"]["ok"] is False


async def test_health_with_sqlite(make_server: ServerFactory, tmp_path: Path) -> None:
    server = await make_server(store=str(tmp_path / "collab.db"))
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    await c.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    status, body, _ = await request(server, "GET", "/health/websocket")
    assert (status, body["store"]["ok"], body["store"]["backend"]) == (200, True, "sqlite")
    status, body, _ = await request(server, "GET", "/api/documents/d", server.token())
    assert (status, body) == (200, {"documentId": "d", "version": 1, "data": {"x": 1}})


async def test_metrics(server: Server) -> None:
    a = await server.client("a")
    b = await server.client("b")
    for c in (a, b):
        await c.call("document:join", {"documentId": "d"})
    await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    await b.next("document:updated")
    status, text, headers = await request(server, "GET", "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    for line in [
        "collab_connections_active 2.0",
        'collab_messages_received_total{event="document:update"} 1.0',
        'collab_messages_received_total{event="document:join"} 2.0',
        'collab_messages_sent_total{event="document:updated"} 1.0',
        "collab_delivery_latency_seconds_count 1.0",
        "collab_reconnections_total 0.0",
    ]:
        assert line in text, line
    for name in (
        "collab_connection_failures_total",
        "collab_merge_latency_seconds",
        "collab_conflicts_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text


async def test_documents_api(server: Server) -> None:
    c = await server.client("a", "c1")
    await c.call("document:join", {"documentId": "d"})
    await c.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    await c.call("resource:join", {"resourceId": "r"})
    token = server.token("someone", "c1")
    status, body, _ = await request(server, "GET", "/api/documents/d", token)
    assert (status, body) == (200, {"documentId": "d", "version": 1, "data": {"x": 1}})
    status, body, _ = await request(server, "GET", "/api/resources/r", token)
    assert (status, body) == (200, {"resourceId": "r", "version": 0, "data": {}})
    status, body, headers = await request(server, "GET", "/api/documents/d")
    assert status == 401
    assert body["error"] == {
        "code": "unauthenticated",
        "message": "authentication failed: missing token",
    }
    assert headers["WWW-Authenticate"] == "Bearer"
    status, body, _ = await request(server, "GET", "/api/documents/d", "garbage")
    assert (status, body["error"]["message"]) == (401, "authentication failed: malformed token")
    status, body, _ = await request(server, "GET", "/api/documents/d", server.token("x", "c2"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body, _ = await request(server, "GET", "/api/documents/nope", token)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_post_event_routes_to_the_company(server: Server) -> None:
    mine = await server.client("u1", "c1")
    other = await server.client("u1", "c2")
    service = server.token("billing", "c1", role="service")
    status, body, _ = await request(
        server,
        "POST",
        "/api/events",
        service,
        json={"event": "project:created", "companyId": "c1", "data": PROJECT},
    )
    assert (status, body) == (200, {"ok": True, "event": "project:created", "route": "company"})
    assert await mine.next("project:created") == PROJECT
    await other.assert_none("project:created")


async def test_post_event_routes_to_a_user(server: Server) -> None:
    alice = await server.client("alice", "c1")
    bob = await server.client("bob", "c1")
    service = server.token("svc", "c1", role="service")
    task = {
        "taskId": "t1",
        "taskName": "Inspect",
        "assignedTo": "alice",
        "assignedBy": "bob",
        "projectId": "p1",
    }
    status, body, _ = await request(
        server,
        "POST",
        "/api/events",
        service,
        json={"event": "task:assigned", "companyId": "c1", "data": task},
    )
    assert (status, body["route"], body["userId"]) == (200, "user", "alice")
    assert await alice.next("task:assigned") == task
    # Any event with an explicit userId goes to that user only.
    status, body, _ = await request(
        server,
        "POST",
        "/api/events",
        service,
        json={"event": "project:created", "companyId": "c1", "userId": "bob", "data": PROJECT},
    )
    assert status == 200
    assert await bob.next("project:created") == PROJECT
    await alice.assert_none("project:created")
    await bob.assert_none("task:assigned")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"event": "project:created", "companyId": "c1", "data": {**PROJECT, "status": "x"}},
            "status",
        ),
        ({"event": "project:created", "companyId": "c1", "data": {"id": "p"}}, "name"),
        (
            {"event": "invoice:paid", "companyId": "c1", "data": {"id": "i", "amount": "ten"}},
            "amount",
        ),
    ],
)
async def test_post_event_422_names_the_fields(
    server: Server, body: dict[str, Any], field: str
) -> None:
    service = server.token("svc", "c1", role="service")
    status, answer, _ = await request(server, "POST", "/api/events", service, json=body)
    assert status == 422
    assert answer["ok"] is False
    assert answer["error"]["code"] == "invalid_payload"
    assert field in answer["error"]["fields"]


@pytest.mark.parametrize(
    "body",
    [
        {"event": "document:updated", "companyId": "c1", "data": {}},
        {"event": "no:such", "companyId": "c1", "data": {}},
        {"companyId": "c1", "data": PROJECT},
        {"event": "project:created", "companyId": "c2", "data": PROJECT},
    ],
)
async def test_post_event_422_other_refusals(server: Server, body: dict[str, Any]) -> None:
    service = server.token("svc", "c1", role="service")
    status, answer, _ = await request(server, "POST", "/api/events", service, json=body)
    assert (status, answer["error"]["code"]) == (422, "invalid_payload")


async def test_post_event_auth(server: Server) -> None:
    body = {"event": "project:created", "companyId": "c1", "data": PROJECT}
    status, answer, _ = await request(server, "POST", "/api/events", json=body)
    assert (status, answer["error"]["code"]) == (401, "unauthenticated")
    user = server.token("u1", "c1")
    status, answer, _ = await request(server, "POST", "/api/events", user, json=body)
    assert (status, answer["error"]["code"]) == (403, "forbidden")
    service = server.token("svc", "c1", role="service")
    status, answer, _ = await request(server, "POST", "/api/events", service, data=b"{nope")
    assert (status, answer["error"]["code"]) == (422, "invalid_payload")


async def test_post_event_checks_a_service_token_once_while_it_is_valid(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's token is verified at its first publish and remembered: verified again
    once past its ``exp``, refused as soon as the deny list names it."""
    verified: list[str] = []

    def counting(request: web.Request) -> Identity:
        identity = middleware.authenticate(request)
        verified.append(identity.user_id)
        return identity

    monkeypatch.setattr(events, "authenticate", counting)
    body = {"event": "project:created", "companyId": "c1", "data": PROJECT}
    service = server.token("svc", "c1", role="service")
    for _ in range(3):
        status, answer, _ = await request(server, "POST", "/api/events", service, json=body)
        assert (status, answer["ok"]) == (200, True)
    assert verified == ["svc"]
    # Past the token's exp (as the cache sees the clock): verified again, not trusted.
    exp = time.time() + 3600
    monkeypatch.setattr(events, "clock", lambda: exp + 1)
    status, _, _ = await request(server, "POST", "/api/events", service, json=body)
    assert status == 200  # PyJWT's clock is the real one: still valid there
    assert verified == ["svc", "svc"]
    monkeypatch.undo()
    # Revoked: refused at once, with the uncached refusal.
    server.gw.verifier.deny = DenyList.parse({"users": ["svc"]})
    status, answer, _ = await request(server, "POST", "/api/events", service, json=body)
    assert (status, answer["error"]["code"]) == (401, "unauthenticated")
    assert "revoked" in answer["error"]["message"]


async def test_post_event_remembers_tokens_per_secret(make_server: ServerFactory) -> None:
    """A token remembered by one gateway means nothing to another with a different secret."""
    first = await make_server()
    second = await make_server(jwt_secret="another-secret-0123456789abcdef-0123456789")
    body = {"event": "project:created", "companyId": "c1", "data": PROJECT}
    service = first.token("svc", "c1", role="service")
    status, _, _ = await request(first, "POST", "/api/events", service, json=body)
    assert status == 200
    status, answer, _ = await request(second, "POST", "/api/events", service, json=body)
    assert (status, answer["error"]["code"]) == (401, "unauthenticated")


async def test_cors_is_same_origin_by_default(server: Server) -> None:
    _, _, headers = await request(
        server, "GET", "/health/websocket", headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


async def test_cors_allows_configured_origins(make_server: ServerFactory) -> None:
    server = await make_server(cors_origins=("https://app.example",))
    origin = {"Origin": "https://app.example"}
    _, _, headers = await request(server, "GET", "/health/websocket", headers=origin)
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    status, _, headers = await request(
        server,
        "OPTIONS",
        "/api/events",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert status == 204
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    _, _, headers = await request(
        server, "GET", "/health/websocket", headers={"Origin": "https://other.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers
    # Socket.IO's handshake applies the same origins.
    status, _, headers = await request(
        server, "GET", "/socket.io/?EIO=4&transport=polling", headers=origin
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    status, _, _ = await request(
        server,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        headers={"Origin": "https://other.example"},
    )
    assert status == 400


async def test_health_is_503_when_redis_is_down(make_server: ServerFactory) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = await make_server(redis=f"redis://127.0.0.1:{port}/0")
    status, body, _ = await request(server, "GET", "/health/websocket")
    assert status == 503
    assert body["status"] == "degraded"
    assert body["store"]["ok"] is True
    assert body["redis"]["ok"] is False
