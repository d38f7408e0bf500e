"""A throwaway ``redis-server`` for the store tests.

:class:`RedisServer` runs one on a free port of 127.0.0.1 — never the machine's own Redis on
6379, so no test depends on state left there — waits until it answers PING and kills it at
the end. ``aof=True`` gives the durable variant (``appendonly yes``, ``appendfsync always``)
whose data survives :meth:`RedisServer.kill` and :meth:`RedisServer.start` again on the same
port and directory. Where ``redis-server`` is not installed, starting one skips the test
(``require_program``).

The contract suite shares one server per session (:func:`shared_url`), each test under its own
key prefix, so tests neither see each other's data nor pay for a server each.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from tests.conftest import require_program

#: How long a server may take to answer PING (an AOF replay included).
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    """Whether a Redis on ``port`` answers PING (not LOADING, not refusing)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` subprocess; a context manager that starts and kills it."""

    def __init__(self, directory: Path, *, aof: bool = False) -> None:
        self.directory = directory
        self.aof = aof
        #: Chosen at the first start and kept, so a restart listens where clients connect.
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "server never started"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start (or restart) the server and wait until it answers PING."""
        exe = require_program("redis-server")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a free port can be taken before the server binds it
            port = self.port or free_port()
            args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--dir", str(self.directory), "--logfile", "redis.log", "--daemonize", "no"]
            if self.aof:
                args += ["--appendonly", "yes", "--appendfsync", "always"]
            else:
                args += ["--appendonly", "no"]
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + START_TIMEOUT
            while self.proc.poll() is None and time.monotonic() < deadline:
                if _pong(port):
                    self.port = port
                    return self
                time.sleep(0.01)
            self.kill()
            if self.port is not None:
                break  # a restart must keep its port: do not wander off to another one
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start:\n{tail}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL: a crash, nothing flushed) and reap the process."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def signal(self, sig: int) -> None:
        """Send ``sig`` without waiting (SIGSTOP / SIGCONT to make it hang and resume)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
        self.kill()


_shared: RedisServer | None = None


def shared_url(prefix: str) -> str:
    """A store URL on the session's shared server (started on first use) under ``prefix``."""
    global _shared
    if _shared is None:
        server = RedisServer(Path(tempfile.mkdtemp(prefix="collab-redis-")))
        server.start()
        _shared = server
    return f"{_shared.url}?prefix={quote(prefix, safe='')}"


def stop_shared() -> None:
    """Kill the shared server, if one was started, and remove its directory."""
    global _shared
    if _shared is not None:
        _shared.kill()
        shutil.rmtree(_shared.directory, ignore_errors=True)
        _shared = None
