"""Every limit of ``gateway.limits`` (and the engine's document limits, configured by the
gateway): answered with its contract code, nothing changed, the connection still usable,
except in the documented disconnect cases (an over-size websocket frame, an outgoing backlog,
a revoked identity)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import socketio

from gateway.config import Settings, SettingsError
from gateway.limits import TOO_MANY, TokenBucket
from tests.gateway.conftest import Server, ServerFactory


async def _state(server: Server, doc: str = "d", company: str = "c1") -> tuple[int, Any]:
    view = await server.gw.engine.get("document", doc, company_id=company)
    return view.version, view.data


def _refusals(server: Server, limit: str) -> float:
    sample = server.gw.guard.refusals.labels(limit=limit)._value.get()
    return float(sample)


async def _connect_error(server: Server, sub: str, company: str = "c1") -> Any:
    c = server.unconnected()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.sio.connect(
            server.url,
            auth={"token": server.token(sub, company)},
            transports=["websocket"],
            wait_timeout=5,
        )
    return c.connect_errors[-1]


# -- rates -----------------------------------------------------------------------------------


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.wait(0.0) == 0.0
        bucket.take()
    assert bucket.wait(0.0) == pytest.approx(0.5)
    assert bucket.wait(0.5) == 0.0  # one token back after 1/rate seconds
    assert not bucket.full(0.5)
    assert bucket.full(10.0)


async def test_event_rate_per_connection(make_server: ServerFactory) -> None:
    server = await make_server(event_rate=2.0, event_burst=3, user_event_rate=0)
    c = await server.client("u1")
    other = await server.client("u2")
    assert (await c.call("document:join", {"documentId": "d"}))["ok"]
    assert (await c.call("document:update", {"documentId": "d", "version": 0, "data": {"n": 1}}))[
        "ok"
    ]
    assert (await c.call("user:typing", {"documentId": "d"}))["ok"]
    before = await _state(server)

    ack = await c.call("document:update", {"documentId": "d", "version": 1, "data": {"n": 2}})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "rate_limited"
    assert "this connection" in ack["error"]["message"]
    retry = ack["error"]["retryAfterMs"]
    assert isinstance(retry, int) and 0 < retry <= 500
    assert await _state(server) == before  # nothing applied
    # Another connection has its own bucket; the limited one recovers after retryAfterMs.
    assert (await other.call("document:join", {"documentId": "e"}))["ok"]
    await asyncio.sleep(retry / 1000 + 0.05)
    ack = await c.call("document:update", {"documentId": "d", "version": 1, "data": {"n": 2}})
    assert ack["ok"] is True and ack["version"] == 2
    assert _refusals(server, "event_rate") == 1


async def test_event_rate_per_user_spans_connections(make_server: ServerFactory) -> None:
    server = await make_server(event_rate=0, user_event_rate=2.0, user_event_burst=4)
    tab1 = await server.client("u1")
    tab2 = await server.client("u1")
    someone_else = await server.client("u2")
    for tab in (tab1, tab2, tab1, tab2):
        assert (await tab.call("document:join", {"documentId": "d"}))["ok"]
    ack = await tab2.call("document:join", {"documentId": "d"})
    assert ack["error"]["code"] == "rate_limited"
    assert "this user" in ack["error"]["message"]
    assert ack["error"]["retryAfterMs"] > 0
    assert (await someone_else.call("document:join", {"documentId": "d"}))["ok"]
    assert _refusals(server, "user_event_rate") == 1


async def test_rate_limited_without_ack_is_an_error_event(make_server: ServerFactory) -> None:
    server = await make_server(event_rate=1.0, event_burst=1, user_event_rate=0)
    c = await server.client()
    await c.send("document:join", {"documentId": "d"})
    await c.send("document:join", {"documentId": "d"})
    error = await c.next("error")
    assert error["code"] == "rate_limited"
    assert error["event"] == "document:join"
    assert error["retryAfterMs"] > 0
    assert c.sio.connected


async def test_rates_off(make_server: ServerFactory) -> None:
    server = await make_server(event_rate=0, user_event_rate=0)
    c = await server.client()
    acks = await asyncio.gather(*(c.call("document:join", {"documentId": "d"}) for _ in range(300)))
    assert all(a["ok"] for a in acks)
    assert server.gw.guard.entries() == 2  # the user's socket set and the sid -> user entry


# -- connections and rooms -------------------------------------------------------------------


async def test_connections_per_user(make_server: ServerFactory) -> None:
    server = await make_server(max_connections_per_user=2)
    first = await server.client("u1")
    await server.client("u1")
    message = (await _connect_error(server, "u1"))["message"]
    assert message.startswith(TOO_MANY)
    assert not message.startswith("authentication failed:")
    assert "limit 2" in message
    # The same user id in another company is another user; other users are not affected.
    await server.client("u1", "c2")
    await server.client("u2")
    assert len(server.gw.sessions) == 4
    # A slot frees when a connection closes.
    await first.disconnect()
    for _ in range(100):
        if len(server.gw.sessions) == 3:
            break
        await asyncio.sleep(0.02)
    await server.client("u1")
    metrics = server.gw.metrics.render().decode()
    assert 'collab_connection_failures_total{reason="too_many_connections"} 1.0' in metrics


async def test_lifecycle_event_names_are_refused(server: Server) -> None:
    """A client emitting ``disconnect`` must not run the server's disconnect handler (it would
    drop its session and free its connection slot while staying connected)."""
    c = await server.client()
    for name in ("disconnect", "connect"):
        ack = await c.call(name, {"HTTP_AUTHORIZATION": "Bearer x"})
        assert ack["ok"] is False and ack["error"]["code"] == "invalid_payload"
        assert "malformed event" in ack["error"]["message"]
    assert len(server.gw.sessions) == 1
    assert (await c.call("document:join", {"documentId": "d"}))["ok"]


async def test_rooms_per_connection(make_server: ServerFactory) -> None:
    server = await make_server(max_rooms_per_connection=2)
    c = await server.client()
    assert (await c.call("document:join", {"documentId": "a"}))["ok"]
    assert (await c.call("resource:join", {"resourceId": "r"}))["ok"]
    ack = await c.call("document:join", {"documentId": "b"})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "forbidden"
    assert ack["error"]["limit"] == 2
    # Nothing was created, and the connection is fine.
    assert await server.gw.engine.store.list_documents("c1") != []
    ids = {m.id for m in await server.gw.engine.store.list_documents("c1")}
    assert "b" not in ids
    assert (await c.call("document:join", {"documentId": "a"}))["ok"]  # rejoining is fine
    assert (await c.call("document:leave", {"documentId": "a"}))["ok"]
    assert (await c.call("document:join", {"documentId": "b"}))["ok"]
    assert _refusals(server, "rooms") == 1


# -- document limits (the engine's, configured by the gateway) --------------------------------


@pytest.mark.parametrize(
    ("overrides", "data", "code"),
    [
        ({"max_document_bytes": 200}, {"text": "x" * 300}, "payload_too_large"),
        ({"max_document_depth": 3}, {"a": {"b": {"c": {}}}}, "invalid_payload"),
        ({"max_document_fields": 5}, {"list": list(range(10))}, "payload_too_large"),
        ({"max_string_length": 10}, {"s": "y" * 11}, "payload_too_large"),
        ({}, {"n": 2**60}, "invalid_payload"),
        ({}, {"s": "\ud800"}, "invalid_payload"),
    ],
)
async def test_document_limits(
    make_server: ServerFactory, overrides: dict[str, Any], data: Any, code: str
) -> None:
    server = await make_server(**overrides)
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    assert (await c.call("document:update", {"documentId": "d", "version": 0, "data": {"ok": 1}}))[
        "ok"
    ]
    before = await _state(server)
    ack = await c.call("document:update", {"documentId": "d", "version": 1, "data": data})
    assert ack["ok"] is False, ack
    assert ack["error"]["code"] == code
    assert await _state(server) == before
    assert (await c.call("document:update", {"documentId": "d", "version": 1, "data": {"ok": 2}}))[
        "ok"
    ]


# -- JSON depth ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [65, 300, 1_000, 2_000, 100_000])
async def test_json_depth(server: Server, depth: int) -> None:
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    before = await _state(server)
    nested = orjson.Fragment(b"[" * depth + b"]" * depth)
    ack = await c.call("document:update", {"documentId": "d", "version": 0, "data": {"a": nested}})
    assert ack == {
        "ok": False,
        "error": {"code": "invalid_payload", "message": "payload nested deeper than 64 levels"},
    }
    await c.send("document:update", {"documentId": "d", "version": 0, "data": {"a": nested}})
    error = await c.next("error")
    assert (error["code"], error["event"]) == ("invalid_payload", "document:update")
    assert await _state(server) == before
    assert (await c.call("document:join", {"documentId": "d"}))["ok"]


async def test_json_depth_is_configurable(make_server: ServerFactory) -> None:
    server = await make_server(max_json_depth=8)
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    ack = await c.call("document:update", {"documentId": "d", "version": 0, "data": {"a": [[[]]]}})
    assert ack["ok"] is True  # packet depth 6: [event, {payload: {data: [[[]]]}}]
    deep = {"a": [[[[[[]]]]]]}
    ack = await c.call("document:update", {"documentId": "d", "version": 1, "data": deep})
    assert ack["error"]["message"] == "payload nested deeper than 8 levels"
    with pytest.raises(SettingsError):
        Settings(max_json_depth=1000)


async def test_huge_numbers(server: Server) -> None:
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    huge = orjson.Fragment(b"9" * 150)
    ack = await c.call("document:update", {"documentId": "d", "version": huge, "data": {}})
    assert ack["error"]["code"] == "invalid_payload"
    assert "longer than 100 digits" in ack["error"]["message"]
    ack = await c.call("document:update", {"documentId": "d", "version": 0, "data": {"n": 10**30}})
    assert ack["error"]["code"] == "invalid_payload"
    assert "JSON-safe range" in ack["error"]["message"]
    nan = orjson.Fragment(b"NaN")
    ack = await c.call("document:update", {"documentId": "d", "version": 0, "data": {"n": nan}})
    assert ack["error"]["code"] == "invalid_payload"
    assert await _state(server) == (0, {})


# -- message size ----------------------------------------------------------------------------


async def test_oversized_websocket_message_closes_the_connection(
    make_server: ServerFactory,
) -> None:
    """Documented disconnect case: engine.io refuses a frame over ``max_http_buffer_size``
    by closing the connection (aiohttp closes it with 1009); the ack never comes."""
    server = await make_server(max_http_buffer_size=20_000)
    big_sender = await server.client("u1")
    bystander = await server.client("u2")
    await big_sender.call("document:join", {"documentId": "d"})
    await bystander.call("document:join", {"documentId": "d"})
    with pytest.raises(socketio.exceptions.TimeoutError):
        await big_sender.call(
            "document:update", {"documentId": "d", "version": 0, "data": {"x": "y" * 30_000}}, 2
        )
    await asyncio.wait_for(big_sender.disconnected.wait(), 5)
    assert await _state(server) == (0, {})
    assert (await bystander.call("document:join", {"documentId": "d"}))["ok"]
    async with aiohttp.ClientSession() as http, http.get(server.url + "/health/websocket") as r:
        assert r.status == 200


async def test_document_over_the_engine_limit_is_payload_too_large(server: Server) -> None:
    """Between the engine's 1 MiB and engine.io's 4 MiB: answered, not disconnected."""
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    data = {"x": "y" * 1_100_000}
    ack = await c.call("document:update", {"documentId": "d", "version": 0, "data": data}, 20)
    assert ack["error"]["code"] == "payload_too_large"
    assert c.sio.connected


# -- slow clients ----------------------------------------------------------------------------


def _small_receive_buffer(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)
    return sock


class RawSocket:
    """A Socket.IO client speaking the engine.io websocket protocol by hand, so that it can
    stop reading altogether (a python-socketio client always reads)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, server: Server, sub: str) -> RawSocket:
        url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        ws = await http.ws_connect(url, max_msg_size=0)
        raw = cls(ws)
        assert (await ws.receive_str()).startswith("0")  # engine.io open
        await ws.send_str("40" + json.dumps({"token": server.token(sub, "c1")}))
        assert (await raw.receive()).startswith("40")
        return raw

    async def receive(self) -> str:
        while True:
            msg = await asyncio.wait_for(self.ws.receive_str(), 10)
            if msg == "2":  # engine.io ping
                await self.ws.send_str("3")
                continue
            return msg

    async def call(self, event: str, payload: Any) -> Any:
        await self.ws.send_str("421" + json.dumps([event, payload]))
        while True:
            msg = await self.receive()
            if msg.startswith("431"):
                return json.loads(msg[3:])[0]


async def test_a_client_that_stops_reading_is_cut_and_blocks_nobody(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_outgoing_packets=20, event_rate=0, user_event_rate=0)
    writer = await server.client("writer")
    assert (await writer.call("document:join", {"documentId": "d"}))["ok"]
    # A small receive buffer (no autotuning to megabytes): the backlog builds up sooner.
    connector = aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as http:
        stalled = await RawSocket.connect(http, server, "stalled")
        assert (await stalled.call("document:join", {"documentId": "d"}))["ok"] is True
        assert len(server.gw.sessions) == 2
        # From now on `stalled` reads nothing: TCP buffers fill, then its engine.io queue.
        blob = "z" * 200_000
        version = 0
        cut_after = None
        for i in range(300):
            started = time.perf_counter()
            ack = await writer.call(
                "document:update",
                {"documentId": "d", "version": version, "data": {"b": blob, "i": i}},
            )
            assert ack["ok"], ack
            version = ack["version"]
            assert time.perf_counter() - started < 2.0  # the writer is never held up
            if len(server.gw.sessions) == 1:
                cut_after = i
                break
        assert cut_after is not None, "the stalled client was never disconnected"
        assert _refusals(server, "backlog") == 1
        assert server.gw.sio.rooms(writer.sid)  # the writer is still there
        # Its engine.io socket is gone; only the writer's websocket is still served.
        for _ in range(100):
            if len(server.gw.sio.eio.sockets) == 1:
                break
            await asyncio.sleep(0.02)
        assert len(server.gw.sio.eio.sockets) == 1
        assert len(server.gw.sio.eio.connections) == 1
        await stalled.ws.close()
    assert (await writer.call("document:join", {"documentId": "d"}))["version"] == version


# -- the deny list ---------------------------------------------------------------------------


def _write_deny(path: Path, content: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    os.replace(tmp, path)  # atomic, and a new inode: the watcher sees the change


async def test_deny_file_cuts_off_and_refuses(make_server: ServerFactory, tmp_path: Path) -> None:
    deny = tmp_path / "deny.json"
    _write_deny(deny, {})
    server = await make_server(deny_file=str(deny))
    acme = await server.client("ann", "acme")
    other_acme = await server.client("bob", "acme")
    globex_u9 = await server.client("u9", "globex")
    initech_u9 = await server.client("u9", "initech")
    observer = await server.client("obs", "hooli")

    _write_deny(deny, {"companies": ["acme"], "users": [{"companyId": "globex", "userId": "u9"}]})
    for c in (acme, other_acme, globex_u9):
        error = await c.next("error", wait=5)
        assert error == {
            "code": "unauthenticated",
            "message": "authentication failed: revoked",
            "event": "connect",
        }
        await asyncio.wait_for(c.disconnected.wait(), 5)
    # Scoped entry: the same user id in another company is untouched; so is everyone else.
    assert (await initech_u9.call("document:join", {"documentId": "i"}))["ok"]
    assert (await observer.call("document:join", {"documentId": "h"}))["ok"]
    assert len(server.gw.sessions) == 2

    error = await _connect_error(server, "carol", "acme")
    assert error["message"] == "authentication failed: revoked"
    headers = {"Authorization": f"Bearer {server.token('carol', 'acme')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/documents/x", headers=headers) as r,
    ):
        assert r.status == 401
        assert (await r.json())["error"]["message"] == "authentication failed: revoked"
    metrics = server.gw.metrics.render().decode()
    assert 'collab_connection_failures_total{reason="revoked"}' in metrics
    assert "collab_revoked_disconnects_total 3.0" in metrics

    # A broken file keeps the previous list; a fixed one replaces it.
    _write_deny(deny, "{not json")
    await asyncio.sleep(1.5)
    assert (await _connect_error(server, "carol", "acme"))["message"].endswith("revoked")
    _write_deny(deny, {"users": ["u9"]})
    await initech_u9.next("error", wait=5)  # a plain user id: revoked in every company
    await server.client("carol", "acme")


async def test_deny_file_must_be_readable_at_start(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="deny-file"):
        await make_server(deny_file=str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"companies": "acme"}))
    with pytest.raises(SettingsError, match="companies must be a list"):
        await make_server(deny_file=str(bad))


# -- long-run gauges -------------------------------------------------------------------------


async def test_long_run_gauges(server: Server) -> None:
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    await asyncio.sleep(0.6)  # a few loop-lag samples
    async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as r:
        text = await r.text()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["collab_rooms"] == 4  # company, user, document and its JSON members
    assert values["collab_engineio_sockets"] == 1
    assert values["collab_asyncio_tasks"] > 0
    assert 0 <= values["collab_event_loop_lag_seconds"] < 1
    assert values["collab_outgoing_queued_packets"] >= 0
    assert values["collab_limiter_entries"] >= 2
