"""Authentication: every refusal reason as the client's connect_error sees it, the Bearer
header, public-key tokens, and disconnection when a token expires while connected."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth import mint_token
from tests.gateway.conftest import SECRET, TIMEOUT, Server, ServerFactory


async def refused(server: Server, **connect: Any) -> str:
    """The connect_error message of a refused connection."""
    c = server.unconnected()
    token = connect.pop("token", None)
    auth = connect.pop("auth", {"token": token} if token is not None else None)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.sio.connect(
            server.url, auth=auth, transports=["websocket"], wait_timeout=TIMEOUT, **connect
        )
    assert len(c.connect_errors) == 1
    message: str = c.connect_errors[0]["message"]
    return message


def raw_token(claims: dict[str, Any], key: str = SECRET) -> str:
    return jwt.encode(claims, key, algorithm="HS256")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda s: None, "missing token"),
        (lambda s: "", "missing token"),
        (lambda s: mint_token(SECRET, sub="u", company_id="c", ttl=-10), "token expired"),
        (lambda s: mint_token("x" * 40, sub="u", company_id="c"), "bad signature"),
        (lambda s: "not-a-jwt", "malformed token"),
        (lambda s: "a.b.c", "malformed token"),
        (lambda s: raw_token({"sub": "u", "exp": time.time() + 60}), "missing claim companyId"),
        (lambda s: raw_token({"companyId": "c", "exp": time.time() + 60}), "missing claim sub"),
        (lambda s: raw_token({"sub": "u", "companyId": "c"}), "missing claim exp"),
        (
            lambda s: raw_token({"sub": "u", "companyId": 7, "exp": time.time() + 60}),
            "invalid claim companyId",
        ),
    ],
)
async def test_refusals_name_their_reason(server: Server, make: Any, reason: str) -> None:
    assert await refused(server, token=make(server)) == f"authentication failed: {reason}"


async def test_refusal_without_auth_object(server: Server) -> None:
    assert await refused(server, auth=None) == "authentication failed: missing token"


async def test_refusals_are_counted_by_reason(server: Server) -> None:
    await refused(server, auth=None)
    text = server.gw.metrics.render().decode()
    assert 'collab_connection_failures_total{reason="missing_token"} 1.0' in text


async def test_bearer_header(server: Server) -> None:
    c = await server.client(auth=None, headers={"Authorization": f"Bearer {server.token('hdr')}"})
    ack = await c.call("document:join", {"documentId": "d1"})
    assert ack["ok"] is True


async def test_bad_bearer_header_is_refused(server: Server) -> None:
    message = await refused(server, headers={"Authorization": "Bearer nope"})
    assert message == "authentication failed: malformed token"


async def test_issuer_and_audience(make_server: ServerFactory) -> None:
    server = await make_server(jwt_issuer="erp", jwt_audience="collab")
    good = mint_token(SECRET, sub="u", company_id="c", issuer="erp", audience="collab")
    await server.client(token=good)
    wrong_iss = mint_token(SECRET, sub="u", company_id="c", issuer="x", audience="collab")
    assert await refused(server, token=wrong_iss) == "authentication failed: bad issuer"
    wrong_aud = mint_token(SECRET, sub="u", company_id="c", issuer="erp", audience="x")
    assert await refused(server, token=wrong_aud) == "authentication failed: bad audience"


def _pem(private: Any, path: Path) -> str:
    path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(path)


@pytest.mark.parametrize(
    ("private", "alg"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
    ],
)
async def test_public_key_tokens(
    make_server: ServerFactory, tmp_path: Path, private: Any, alg: str
) -> None:
    key_file = _pem(private, tmp_path / "key.pem")
    server = await make_server(jwt_secret=None, jwt_public_key_file=key_file)
    token = mint_token(private, sub="u", company_id="c", algorithm=alg)
    c = await server.client(token=token)
    assert (await c.call("document:join", {"documentId": "d"}))["ok"] is True
    # An HS256 token whose "secret" is the public key itself: algorithm confusion, refused.
    forged = jwt.encode(
        {"sub": "u", "companyId": "c", "exp": time.time() + 60}, "public-key" * 4, algorithm="HS256"
    )
    assert await refused(server, token=forged) == "authentication failed: algorithm not allowed"


async def test_expired_token_disconnects_the_socket(server: Server) -> None:
    observer = await server.client("obs", "c1")
    c = await server.client(token=mint_token(SECRET, sub="short", company_id="c1", ttl=2))
    assert (await observer.next("user:online"))["userId"] == "short"
    error = await c.next("error", wait=15)
    assert error == {
        "code": "unauthenticated",
        "message": "authentication failed: token expired",
        "event": "connect",
    }
    await c.disconnected.wait()
    offline = await observer.next("user:offline")
    assert offline["userId"] == "short"
    assert len(server.gw.sessions) == 1


async def test_a_failure_after_authentication_refuses_cleanly(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> bool:
        raise RuntimeError("presence backend down")

    monkeypatch.setattr(server.gw.presence, "connect", broken)
    assert await refused(server, token=server.token()) == "internal error"
    assert len(server.gw.sessions) == 0
    assert "collab_connections_active 0.0" in server.gw.metrics.render().decode()
