"""The official JS clients, for tests that drive the gateway as a browser or Node app would.

``tests/js/package.json`` (with its lockfile) pins ``socket.io-client`` and friends; the first
test that needs them runs ``npm ci`` once per checkout (``node_modules`` is not committed).
Where ``node``/``npm`` are absent the test skips with a clear message (a failure under
``COLLAB_REQUIRE_ALL=1``, as in CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_program

JS_DIR = Path(__file__).resolve().parent / "js"
_installed = False


def node_env() -> Path:
    """``tests/js`` with its ``node_modules`` installed; skips if Node is missing."""
    global _installed
    require_program("node")
    npm = require_program("npm")
    marker = JS_DIR / "node_modules" / ".package-lock.json"
    if not _installed and not marker.exists():
        proc = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{proc.stdout}\n{proc.stderr}")
    _installed = True
    return JS_DIR


async def run_node(
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> list[dict[str, Any]]:
    """Run ``tests/js/<script>`` with Node; it prints one JSON object per line. Returns them.

    Fails the test with the script's stderr if it exits non-zero or times out.
    """
    cwd = node_env()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(cwd / script),
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        pytest.fail(
            f"node {script} timed out after {timeout}s\nstdout:\n{out.decode()}\n"
            f"stderr:\n{err.decode()}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"node {script} exited {proc.returncode}\nstdout:\n{out.decode()}\n"
            f"stderr:\n{err.decode()}"
        )
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]
