"""The collab-gateway command: settings from flags and COLLAB_* variables, the token
subcommand, refusing to serve without a key, and --dev."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import socketio

from gateway.config import OPTIONS, Settings, SettingsError, parse_settings
from tests.gateway.conftest import SECRET


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=_env(env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env(extra: dict[str, str]) -> dict[str, str]:
    """The test's environment without any COLLAB_* setting, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    return {**base, **extra}


def test_every_setting_has_a_flag_and_a_variable() -> None:
    assert [o.name for o in OPTIONS] == [f.name for f in dataclasses.fields(Settings)]
    assert {o.env for o in OPTIONS} >= {"COLLAB_PORT", "COLLAB_JWT_SECRET", "COLLAB_REDIS"}


def test_flags_beat_variables_beat_defaults() -> None:
    env = {
        "COLLAB_PORT": "4000",
        "COLLAB_STORE": "memory://",
        "COLLAB_DEV": "yes",
        "COLLAB_CORS_ORIGINS": "https://a.example, https://b.example",
    }
    settings = parse_settings(["--port", "5000", "--serializer", "msgpack"], env)
    assert settings.port == 5000
    assert settings.store == "memory://"
    assert settings.dev is True
    assert settings.serializer == "msgpack"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.host == "0.0.0.0"
    assert settings.typing_throttle_ms == 500
    defaults = parse_settings([], {})
    assert (defaults.port, defaults.store, defaults.redis) == (3001, "collab.db", None)


def test_bad_values_name_their_source() -> None:
    with pytest.raises(SettingsError, match="COLLAB_PORT: expected an integer"):
        parse_settings([], {"COLLAB_PORT": "many"})
    with pytest.raises(SettingsError, match="--serializer: expected one of json, msgpack"):
        parse_settings(["--serializer", "xml"], {})
    with pytest.raises(SettingsError, match="port must be between"):
        parse_settings(["--port", "70000"], {})


def test_secret_is_not_in_the_repr() -> None:
    assert SECRET not in repr(Settings(jwt_secret=SECRET))


def test_token_subcommand() -> None:
    result = run(
        "token",
        "--sub",
        "u1",
        "--company",
        "c1",
        "--name",
        "Ann",
        "--role",
        "service",
        "--ttl",
        "120",
        env={"COLLAB_JWT_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["companyId"], claims["name"], claims["role"]) == (
        "u1",
        "c1",
        "Ann",
        "service",
    )
    assert claims["exp"] - claims["iat"] == 120


def test_token_needs_a_secret() -> None:
    result = run("token", "--sub", "u1", "--company", "c1")
    assert result.returncode == 2
    assert "--jwt-secret" in result.stderr


def test_serve_refuses_without_a_key(tmp_path: Path) -> None:
    result = run("--port", "0", "--store", "memory://", cwd=tmp_path)
    assert result.returncode == 2
    assert "refusing to start: no JWT secret or public key configured" in result.stderr
    assert "--dev" in result.stderr
    serve = run("serve", "--port", "0", cwd=tmp_path)
    assert serve.returncode == 2 and "refusing to start" in serve.stderr


def test_serve_reports_bad_settings(tmp_path: Path) -> None:
    result = run("--store", "ftp://x", env={"COLLAB_JWT_SECRET": SECRET}, cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown store URL scheme" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_dev_mode_serves_and_prints_a_working_token(tmp_path: Path) -> None:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "--dev",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--store",
        "memory://",
        env=_env({}),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        token = ""
        while not token.startswith("eyJ"):
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the gateway exited before printing a token"
            token = line.decode().strip()
        client = socketio.AsyncClient(reconnection=False)
        for _ in range(200):  # until the process listens
            try:
                await client.connect(
                    f"http://127.0.0.1:{port}",
                    auth={"token": token, "recovery": False},
                    transports=["websocket"],
                )
                break
            except socketio.exceptions.ConnectionError:
                await asyncio.sleep(0.05)
        ack = await client.call("document:join", {"documentId": "d"}, timeout=10)
        assert ack["ok"] is True
        await client.disconnect()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
    assert not (tmp_path / "collab.db").exists()


def test_help_lists_variables() -> None:
    parser = argparse.ArgumentParser()
    from gateway.config import add_arguments

    add_arguments(parser)
    text = parser.format_help()
    assert "COLLAB_JWT_SECRET" in text and "--typing-throttle-ms" in text
