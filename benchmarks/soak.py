"""A long run against a real gateway: ``python -m benchmarks.soak [--clients N] [--seconds S]``
(``--quick`` for a ~5-minute run with 200 clients).

Not part of the test suite. It starts ``collab-gateway`` as a subprocess on loopback (SQLite
store in a temporary folder, default limits but ``--document-idle-seconds``, below), then
simulated clients (python-socketio ``AsyncClient``, websocket transport) in ``--workers``
processes of their own. For the length of a *cycle* each client runs sessions: it connects,
joins one or two documents of its company, edits them every ``--interval`` seconds on average
(its own member of the document, a counter it increments; writes go through the ``merge``
strategy, stale ones included), sometimes sends ``user:typing``, and after 5-40 s, at even
odds, *leaves* (``document:leave``, then a Socket.IO disconnect that reaches the server) or
*drops* (the connection closes without one, as when a network goes: the gateway holds the
session for connection state recovery), then comes back within 2 s. At the end of a cycle
every client leaves.

Phases:

1. start: the gateway's RSS before any client (reported, not checked);
2. warm-up: one cycle (``--warmup``, by default as long as the soak) of the same workload at
   full scale; drain (no connection, room, socket, queued packet or limiter entry left);
   settle (below); the sample at its end is the *baseline*;
3. soak: a second cycle (``--seconds``);
4. drain and settle again; the final sample is compared with the baseline.

Why the baseline is taken after a whole cycle: a soak test measures growth from a steady
state, and the first busy period at this scale does not leave memory where it found it. CPython
keeps a 1-MiB arena resident while any object in it lives, and a few objects that outlive the
peak are enough to keep dozens of them: objects re-allocated while the gateway idles (the
values its metrics hold and replace, the timers and futures of its background tasks, what
serves this soak's own sampling) go to whichever partly used pool of their size comes first,
anywhere. In an instrumented run (``--debug-memory``), once the warm-up cycle had settled the
gateway held 144,065 objects the collector tracks against 140,921 at the start and 26.9 MB in
CPython's small-object blocks against 25.5 MB, yet 89 arenas against 26: 60 address ranges held
under 4 KiB of live objects each. (125 of those objects were the last connections' URLs, from
yarl's parse caches; emptying those caches every minute, tried in another run, removed the URLs
but not one arena, 91 against 89: other objects were in the same ranges. So it was not kept.)
That costs the first cycle ~70 MiB, which the report prints (RSS at start, and growth against
it) but does not check. What is checked is that a second, identical cycle returns to within
10% of where the first one settled: a leak (state that grows with connections, sessions or
document loads) shows up as growth from one cycle to the next. In the same run, once the soak
cycle had settled: 144,298 tracked objects, 27.0 MB in small blocks, 17.4 MB of glibc's blocks
in use against 17.3 MB at the baseline; RSS +6.6%, seven more partly used arenas.

The leaks and retention this soak found, and what was done (each was a cycle-to-cycle or
connection-count growth before):

- Every websocket connection left a reference cycle: python-engineio's driver raises
  ``OSError`` when the websocket closes, the reading task keeps it, and its traceback keeps
  the frames that refer to the task and to every object of the connection (~70: aiohttp's
  request, handler, transport, websocket; the engine.io socket and its queue). Only a full
  collection frees those, and they are rare: with 300 clients, 20,267 unreachable objects
  were still waiting at the baseline, scattered over the arenas. The gateway's websocket
  driver (``gateway.outgoing._Connection.wait``) reports a closed websocket as the end of
  its messages instead: 0 left.
- Every idle eviction of a document leaked its CRDT: pycrdt's ``Doc.observe`` hands the Rust
  document a callback that holds the Python ``Doc``, a cycle through Rust the collector cannot
  see. The 200 documents evicted after each cycle stayed (glibc's blocks in use: 12.7 MB at the
  start, 22 MB after one cycle, 31 MB after two). ``collab.document.LiveDocument`` now drops
  the subscription when it goes.
- python-socketio's ``AsyncClient.disconnect()`` queues its DISCONNECT packet, then closes
  the websocket before the packet is written: the gateway saw every client of this soak drop,
  and held every session of a run for the window (6,188 of 6,188). :class:`SoakClient` leaves as
  socket.io-client does (the packet written first), and drops on purpose: now only the
  sessions that drop are held (4,625 of 11,079 in the instrumented run above).

Before these, the check failed at 1,000 clients (+33% and +42% with a baseline taken after a
20-s warm-up of connections only; +10.3% and +11.7% with this baseline while documents still
leaked).

Why the settle phases: a gateway whose clients have just left still holds, on purpose, what
lets them come back. With connection state recovery on (the default, ``--recovery-window``
120 s), a dropped session is held for the window and saved in the recovery log for the window
plus ``gateway.recovery.GRACE``; when a hold ends presence may announce ``user:offline``, an
event the log keeps for another window; the engine drops live documents idle for
``--document-idle-seconds``. Measuring before those deadlines measures retained state, not a
leak (the first soaks, with a drain of ~25 s: +40% RSS with the default window, +9% with
recovery off). So each settle phase ends, counted from the last client's departure, once the
longest of those retention times (read from the gateway's own settings: ``gateway.config``
with the flags of ``--gateway-flag`` and the ``COLLAB_*`` environment) and its sweep period
have passed, plus one pass of ``gateway.memory`` (every minute it trims glibc's heap, which is
what returns what the last expiries freed) and a margin: 320 s with the defaults. The soak runs
the gateway with ``--document-idle-seconds`` 150 (its default is 300) so that documents expire
within the recovery retention rather than lengthen both settle phases; a whole run takes
~15 minutes. RSS right after each drain is reported too (not checked): what retained state
costs.

Sampled every second from outside the gateway: RSS (``/proc/<pid>/status``), connections
(``/health/websocket``), and from ``/metrics``: event-loop lag (latest and 10-second max),
asyncio tasks, named rooms, engine.io sockets, queued outgoing packets, limiter entries.

Checked at the end (exit status 1 when one fails):

- RSS at the end of the last settle phase within 10% of the baseline;
- no task, room, socket, queued packet or limiter entry left beyond the baseline;
- no acknowledged write lost: for every client and document, the final document holds the
  client's counter at least at its last acknowledged value (and at most the last it sent),
  and the document's version is at least every version an ack reported.

The last run (``python -m benchmarks.soak``: 1,000 clients, 2 cores shared with other
benchmarks, 14.8 minutes): 11,140 connections (6,482 sessions left, 4,658 dropped), 43,049
writes sent and acknowledged, none lost (3,901 client-document records checked); RSS 66.2 MiB
at the start, 154.4 at the warm-up's peak, 138.0 once it had settled (the baseline, +108.5% on
the start), 162.2 at the soak's peak, 140.6 at the end: +1.9% on the baseline; 11 asyncio
tasks at the baseline and at the end, no room, socket, queued packet or limiter entry left.
Every check passed.

``--debug-memory DIR`` has the gateway write a report at the start, the baseline, after the
soak and at the end (``gateway.memory.install_debug``: allocator statistics, tables, objects by
type and by arena, largest containers; ``--tracemalloc FRAMES`` adds snapshots). The reports
allocate, so figures of such a run are not quite those of a plain one.

Prints tables and writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from socketio import packet as sio_packet

from benchmarks.common import fmt, machine_info, print_table, progress, write_json
from gateway.auth import mint_token
from gateway.config import Settings, parse_settings
from gateway.memory import DEBUG_ENV
from gateway.memory import INTERVAL as MEMORY_INTERVAL
from gateway.recovery import GRACE

SECRET = "soak-secret-0123456789abcdef-0123456789"
RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
DOCS_PER_COMPANY = 4
CLIENTS_PER_COMPANY = 20
#: The gateway's ``--document-idle-seconds`` in a soak (its default is 300): the recovery
#: window's default plus its grace, so that documents expire within the recovery retention
#: and the settle phases need not wait longer for them.
DOCUMENT_IDLE_SECONDS = 120.0 + GRACE
#: ``--quick``: defaults for a run of ~5 minutes.
QUICK: dict[str, Any] = {
    "clients": 200,
    "seconds": 40.0,
    "document_idle_seconds": 30.0,
    "gateway_flag": ["--recovery-window=15"],
}
#: Seconds added to a settle phase beyond the retention and one memory pass.
SETTLE_MARGIN = 5.0


def retention_seconds(settings: Settings) -> float:
    """Seconds from the last client's departure until the gateway has dropped everything it
    keeps, by design, for clients that left, its sweeps included.

    - Recovery (window ``w``): a dropped session is held ``w`` seconds and saved in the log
      for ``w`` + :data:`~gateway.recovery.GRACE`; when a hold ends, presence may announce
      ``user:offline``, an event the log keeps ``w`` seconds more: ``max(2w, w + GRACE)``,
      plus the log's sweep period (``w / 4``, at most 15 s).
    - Live documents: ``document_idle_seconds``, plus the engine's sweep period (a quarter of
      it, at most 30 s).
    """
    w = settings.recovery_window
    recovery = max(2 * w, w + GRACE) + max(0.5, min(w / 4, 15.0)) if w > 0 else 0.0
    idle = float(getattr(settings, "document_idle_seconds", 0.0) or 0.0)
    documents = idle + max(1.0, min(idle / 4, 30.0)) if idle > 0 else 0.0
    return max(recovery, documents)


def settle_seconds(settings: Settings) -> float:
    """How long after the last client's departure a settle phase ends: the retention, then
    one pass of ``gateway.memory`` (every :data:`~gateway.memory.INTERVAL` seconds it trims
    the heap, which returns what the last expiries freed), and a margin."""
    return retention_seconds(settings) + MEMORY_INTERVAL + SETTLE_MARGIN


# -- the simulated clients (worker processes) --------------------------------------------------


@dataclass
class Tally:
    """What one worker's clients did, and what they were told."""

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    #: Sessions ended by leaving (DISCONNECT sent) / by dropping (connection closed).
    leaves: int = 0
    drops: int = 0
    writes_sent: int = 0
    writes_acked: int = 0
    write_refusals: Counter[str] = field(default_factory=Counter)
    ack_timeouts: int = 0
    typing: int = 0
    events_received: int = 0
    #: "client|doc" -> [last acked counter, last sent counter, highest acked version]
    writes: dict[str, list[int]] = field(default_factory=dict)
    ack_latency_ms: list[float] = field(default_factory=list)


class SoakClient(socketio.AsyncClient):  # type: ignore[misc]
    """python-socketio's ``AsyncClient``, able to leave as socket.io-client does, or to drop.

    ``AsyncClient.disconnect()`` queues the Socket.IO DISCONNECT packet, then closes the
    websocket at once, before its writer task has sent the packet: the server sees the
    transport close, a dropped client (held for the recovery window), never a client leaving.
    socket.io-client's ``socket.disconnect()`` sends DISCONNECT and closes the connection only
    once its write buffer has drained. :meth:`leave` does the same with python-socketio's
    pieces: the DISCONNECT packet, then waiting until python-engineio's writer has written
    everything queued (its queue is an ``asyncio.Queue`` whose writer marks each packet done
    once written: ``join()``), then closing the engine.io connection. :meth:`drop` closes the
    connection without DISCONNECT, as a lost network or a closed tab does.
    """

    async def leave(self) -> None:
        if self.connected:
            for namespace in list(self.namespaces):
                await self._send_packet(
                    self.packet_class(sio_packet.DISCONNECT, namespace=namespace)
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.eio.queue.join()
        await self.eio.disconnect()

    async def drop(self) -> None:
        await self.eio.disconnect()


class SimClient:
    """One simulated user: its own token, its company's documents, its member of them."""

    def __init__(self, index: int, url: str, tally: Tally, interval: float, rng: random.Random):
        self.index = index
        self.user = f"u{index}"
        self.company = f"c{index // CLIENTS_PER_COMPANY}"
        self.url = url
        self.tally = tally
        self.interval = interval
        self.rng = rng
        self.key = f"k{index}"
        self.counter = 0
        self.views: dict[str, tuple[int, dict[str, Any]]] = {}
        self.token = mint_token(SECRET, sub=self.user, company_id=self.company, ttl=6 * 3600)

    def documents(self) -> list[str]:
        return [f"{self.company}-doc{d}" for d in range(DOCS_PER_COMPANY)]

    async def run(self, until: float) -> None:
        """Sessions until ``until``: connect, work for 5-40 s, then leave or drop (even odds)
        and come back after up to 2 s; a session still open at ``until`` leaves."""
        first = True
        while time.monotonic() < until:
            sio = SoakClient(reconnection=False)
            sio.on("*", self._on_event)
            try:
                await sio.connect(
                    self.url,
                    auth={"token": self.token},
                    transports=["websocket"],
                    wait_timeout=30,
                )
            except Exception:
                self.tally.connect_failures += 1
                await asyncio.sleep(1 + self.rng.random())
                continue
            self.tally.connects += 1
            if not first:
                self.tally.reconnects += 1
            first = False
            session_end = min(until, time.monotonic() + self.rng.uniform(5, 40))
            try:
                await self._session(sio, session_end)
            finally:
                drop = time.monotonic() < until and self.rng.random() < 0.5
                if drop:
                    self.tally.drops += 1
                    with contextlib.suppress(Exception):
                        await sio.drop()
                else:
                    self.tally.leaves += 1
                    if sio.connected:
                        for doc in list(self.views):
                            with contextlib.suppress(Exception):
                                await sio.call("document:leave", {"documentId": doc}, timeout=10)
                    with contextlib.suppress(Exception):
                        await sio.leave()
                self.views.clear()
            await asyncio.sleep(max(0.0, min(self.rng.uniform(0, 2), until - time.monotonic())))

    async def _on_event(self, event: str, *args: Any) -> None:
        self.tally.events_received += 1
        if event == "document:updated" and args and isinstance(args[0], dict):
            doc, version = args[0].get("documentId"), args[0].get("version")
            if doc in self.views and isinstance(version, int) and version > self.views[doc][0]:
                self.views[doc] = (version, args[0].get("data") or {})

    async def _session(self, sio: socketio.AsyncClient, end: float) -> None:
        docs = self.rng.sample(self.documents(), self.rng.choice((1, 1, 2)))
        for doc in docs:
            ack = await sio.call("document:join", {"documentId": doc}, timeout=30)
            if ack.get("ok"):
                self.views[doc] = (ack["version"], ack["data"])
        while time.monotonic() < end and sio.connected and self.views:
            pause = self.rng.expovariate(1 / self.interval)
            await asyncio.sleep(max(0.0, min(pause, end - time.monotonic())))
            if time.monotonic() >= end or not sio.connected:
                return
            doc = self.rng.choice(list(self.views))
            if self.rng.random() < 0.2:
                with contextlib.suppress(Exception):
                    await sio.call("user:typing", {"documentId": doc}, timeout=30)
                    self.tally.typing += 1
            await self._write(sio, doc)

    async def _write(self, sio: socketio.AsyncClient, doc: str) -> None:
        version, data = self.views[doc]
        self.counter += 1
        record = self.tally.writes.setdefault(f"{self.key}|{doc}", [0, 0, 0])
        record[1] = self.counter
        payload = {"documentId": doc, "version": version, "data": {**data, self.key: self.counter}}
        self.tally.writes_sent += 1
        started = time.perf_counter()
        try:
            ack = await sio.call("document:update", payload, timeout=30)
        except Exception:
            self.tally.ack_timeouts += 1
            return
        self.tally.ack_latency_ms.append((time.perf_counter() - started) * 1000)
        if not ack.get("ok"):
            self.tally.write_refusals[ack.get("error", {}).get("code", "?")] += 1
            return
        self.tally.writes_acked += 1
        record[0] = self.counter
        record[2] = max(record[2], ack["version"])
        if ack["version"] > self.views.get(doc, (-1, {}))[0]:
            self.views[doc] = (ack["version"], ack["data"])


async def worker(config: dict[str, Any]) -> dict[str, Any]:
    """Run this worker's clients through the warm-up cycle, then (once the parent writes the
    line ``soak`` to stdin: it has its baseline) the soak cycle; report the tally."""
    tally = Tally()
    rng = random.Random(config["seed"])
    clients = [
        SimClient(i, config["url"], tally, config["interval"], random.Random(rng.random()))
        for i in config["indices"]
    ]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def cycle(seconds: float) -> None:
        until = time.monotonic() + seconds
        tasks = []
        for n, c in enumerate(clients):
            tasks.append(asyncio.create_task(c.run(until)))
            if n % 25 == 24:
                await asyncio.sleep(0.05)  # ramp up, not a thundering herd
        await asyncio.gather(*tasks)

    await cycle(config["warmup"])
    print("warm-done", flush=True)
    await reader.readline()  # "soak": the parent has its baseline
    await cycle(config["seconds"])
    latencies = sorted(tally.ack_latency_ms)
    out = {k: v for k, v in tally.__dict__.items() if k != "ack_latency_ms"}
    out["write_refusals"] = dict(tally.write_refusals)
    out["ack_latency_ms"] = latencies[:: max(1, len(latencies) // 2000)]
    return out


# -- the parent: gateway, sampling, checks ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


METRICS = (
    "collab_event_loop_lag_seconds",
    "collab_event_loop_lag_max_seconds",
    "collab_asyncio_tasks",
    "collab_rooms",
    "collab_engineio_sockets",
    "collab_outgoing_queued_packets",
    "collab_limiter_entries",
    "collab_connections_active",
)


class Gateway:
    """The gateway subprocess and its sampling."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = args.store or str(tmp / "soak.db")
        self.log = tmp / "gateway.log"
        self.flags = [
            "--host=127.0.0.1",
            f"--port={self.port}",
            f"--store={self.store}",
            "--log-level=WARNING",
            f"--log-file={self.log}",
            f"--document-idle-seconds={args.document_idle_seconds:g}",
            *self.args.gateway_flag,
        ]
        self.env = {**os.environ, "COLLAB_JWT_SECRET": SECRET}
        #: Where the gateway writes memory reports (``gateway.memory.install_debug``).
        self.debug = Path(args.debug_memory) if args.debug_memory else None
        self.reports = 0
        if self.debug is not None:
            self.env[DEBUG_ENV] = str(self.debug)
            if args.tracemalloc:
                self.env["PYTHONTRACEMALLOC"] = str(args.tracemalloc)
        #: The settings the gateway runs with (parsed as it will parse them).
        self.settings = parse_settings(self.flags, self.env)
        #: Seconds from the last client's departure to the end of a settle phase.
        self.settle = settle_seconds(self.settings) if args.settle is None else args.settle
        self.proc: asyncio.subprocess.Process | None = None
        self.samples: list[dict[str, Any]] = []
        self.phase = "start"
        self.started = time.monotonic()

    async def start(self, http: aiohttp.ClientSession) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            *self.flags,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.url + "/health/websocket") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError("the gateway did not start")

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        assert self.proc is not None
        row: dict[str, Any] = {
            "t": round(time.monotonic() - self.started, 2),
            "phase": self.phase,
            "rss_mib": round(rss_mib(self.proc.pid), 2),
        }
        async with http.get(self.url + "/health/websocket") as r:
            row["connections"] = (await r.json())["connections"]
        async with http.get(self.url + "/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in METRICS:
                row[name.removeprefix("collab_")] = float(value)
        self.samples.append(row)
        return row

    async def sample_forever(self, http: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, KeyError):
                await self.sample(http)
            await asyncio.sleep(1.0)

    async def idle(
        self, http: aiohttp.ClientSession, within: float, tasks: float = 0.0
    ) -> dict[str, Any]:
        """Sample until no connection, socket, room, queued packet or limiter entry is left
        and at most ``tasks`` asyncio tasks run (python-engineio's ping task of a closed
        socket sleeps out its ``ping_interval``), or ``within`` seconds; then a few more
        seconds for the dust to settle; the last sample."""
        deadline = time.monotonic() + within
        row = await self.sample(http)
        while time.monotonic() < deadline:
            if (
                row["connections"] == 0
                and row.get("engineio_sockets", 0) == 0
                and row.get("rooms", 0) == 0
                and row.get("limiter_entries", 0) == 0
                and (not tasks or row.get("asyncio_tasks", 0) <= tasks)
            ):
                break
            await asyncio.sleep(1.0)
            row = await self.sample(http)
        await asyncio.sleep(3.0)
        return await self.sample(http)

    async def settled(self, left: float) -> None:
        """Wait until :attr:`settle` seconds have passed since ``left`` (the last client's
        departure), sampling meanwhile."""
        wait = max(0.0, left + self.settle - time.monotonic())
        progress(f"settle: {wait:.0f}s more, for the state kept by design to expire")
        await asyncio.sleep(wait)

    async def report(self, label: str) -> None:
        """With ``--debug-memory``: have the gateway write a memory report now (SIGUSR1),
        named after ``label``, and wait for it."""
        if self.debug is None or self.proc is None:
            return
        self.reports += 1
        name = f"{self.reports:02d}"
        self.proc.send_signal(signal.SIGUSR1)
        for _ in range(1200):
            if (self.debug / f"{name}.done").exists():
                break
            await asyncio.sleep(0.1)
        (self.debug / f"{name}.label").write_text(label)
        progress(f"memory report {name} ({label}) in {self.debug}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 15)
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()


async def final_documents(
    gw: Gateway, http: aiohttp.ClientSession, companies: int
) -> dict[str, Any]:
    docs: dict[str, Any] = {}
    for c in range(companies):
        token = mint_token(SECRET, sub="auditor", company_id=f"c{c}")
        for d in range(DOCS_PER_COMPANY):
            doc = f"c{c}-doc{d}"
            async with http.get(
                f"{gw.url}/api/documents/{doc}", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                if r.status == 200:
                    docs[doc] = await r.json()
    return docs


def lost_writes(tallies: list[dict[str, Any]], docs: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(records checked, records lost, a few examples)."""
    checked, lost = 0, 0
    examples: list[str] = []
    for tally in tallies:
        for name, (acked, sent, version) in tally["writes"].items():
            if acked == 0:
                continue
            key, doc = name.split("|")
            checked += 1
            final = docs.get(doc)
            value = (final or {}).get("data", {}).get(key)
            ok = (
                final is not None
                and isinstance(value, int)
                and acked <= value <= sent
                and final["version"] >= version
            )
            if not ok:
                lost += 1
                if len(examples) < 5:
                    found = None if final is None else (value, final["version"])
                    examples.append(
                        f"{name}: acked {acked} (v{version}), sent {sent}, found {found}"
                    )
    return checked, lost, examples


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="collab-soak-"))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        gw = Gateway(args, tmp)
        args.settle_seconds = gw.settle
        await gw.start(http)
        assert gw.proc is not None
        progress(f"gateway pid {gw.proc.pid} on {gw.url}, store {gw.store}")
        start_row = await gw.sample(http)
        await gw.report("start")
        sampler = asyncio.create_task(gw.sample_forever(http))
        indices = list(range(args.clients))
        shares = [indices[w :: args.workers] for w in range(args.workers)]
        workers = []
        for w, share in enumerate(shares):
            config = {
                "url": gw.url,
                "indices": share,
                "seed": args.seed + w,
                "interval": args.interval,
                "warmup": args.warmup,
                "seconds": args.seconds,
            }
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "benchmarks.soak",
                    "--worker",
                    json.dumps(config),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=64 * 1024 * 1024,
                )
            )
        try:
            gw.phase = "warm-up"
            progress(
                f"warm-up: {args.clients} clients in {args.workers} workers, {args.warmup:.0f}s"
            )
            for proc in workers:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                assert line.strip() == b"warm-done", line
            left = time.monotonic()
            gw.phase = "warm-up drain"
            warmed = await gw.idle(http, 60, tasks=start_row.get("asyncio_tasks", 0) + 10)
            progress(f"after the warm-up: {warmed}")
            gw.phase = "warm-up settle"
            await gw.settled(left)
            baseline = await gw.sample(http)
            progress(f"baseline: {baseline}")
            await gw.report("baseline")
            gw.phase = "soak"
            progress(f"soak: {args.seconds:.0f}s")
            for proc in workers:
                assert proc.stdin is not None
                proc.stdin.write(b"soak\n")
                await proc.stdin.drain()
            tallies = []
            for proc in workers:
                assert proc.stdout is not None
                out = await proc.stdout.read()
                await proc.wait()
                tallies.append(json.loads(out))
            left = time.monotonic()
            gw.phase = "drain"
            progress("drain: waiting for the gateway to be idle")
            churned = await gw.idle(http, 60, tasks=baseline.get("asyncio_tasks", 0) + 10)
            progress(f"after the soak: {churned}")
            await gw.report("after the soak")
            gw.phase = "settle"
            await gw.settled(left)
            end = await gw.sample(http)
            await gw.report("end")
            docs = await final_documents(gw, http, -(-args.clients // CLIENTS_PER_COMPANY))
        finally:
            sampler.cancel()
            for proc in workers:
                if proc.returncode is None:
                    proc.kill()
            await gw.stop()
    return report(args, start_row, warmed, baseline, churned, end, gw.samples, tallies, docs)


def report(
    args: argparse.Namespace,
    start: dict[str, Any],
    warmed: dict[str, Any],
    baseline: dict[str, Any],
    churned: dict[str, Any],
    end: dict[str, Any],
    samples: list[dict[str, Any]],
    tallies: list[dict[str, Any]],
    docs: dict[str, Any],
) -> int:
    def total(key: str) -> int:
        return sum(int(t[key]) for t in tallies)

    refusals: Counter[str] = Counter()
    for t in tallies:
        refusals.update(t["write_refusals"])
    latencies = sorted(x for t in tallies for x in t["ack_latency_ms"])
    busy = [s for s in samples if s["phase"] in ("warm-up", "soak")]
    lags = sorted(s.get("event_loop_lag_seconds", 0.0) * 1000 for s in busy)
    lag_max = max((s.get("event_loop_lag_max_seconds", 0.0) * 1000 for s in busy), default=0)
    peak_rss = max(s["rss_mib"] for s in samples)
    warm_peak = max((s["rss_mib"] for s in samples if s["phase"].startswith("warm-up")), default=0)
    soak_peak = max(
        (s["rss_mib"] for s in samples if not s["phase"].startswith("warm-up")), default=0
    )
    checked, lost, examples = lost_writes(tallies, docs)

    def growth(row: dict[str, Any], base: dict[str, Any] = baseline) -> str:
        return f"{(float(row['rss_mib']) / float(base['rss_mib']) - 1) * 100:+.1f}%"

    def q(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    checks = {
        "rss within 10% of the baseline": end["rss_mib"] <= baseline["rss_mib"] * 1.10,
        "no task leaked": end.get("asyncio_tasks", 0) <= baseline.get("asyncio_tasks", 0) + 2,
        "no room leaked": end.get("rooms", 0) == 0,
        "no socket leaked": end["connections"] == 0 and end.get("engineio_sockets", 0) == 0,
        "no queued packet left": end.get("outgoing_queued_packets", 0) == 0,
        "no limiter entry left": end.get("limiter_entries", 0) == 0,
        "no acknowledged write lost": lost == 0 and checked > 0,
    }
    settle = f"settle to {args.settle_seconds:.0f}s"
    print_table(
        f"Soak: {args.clients} clients, {args.warmup:.0f}s warm-up cycle + {settle}, "
        f"{args.seconds:.0f}s soak cycle + {settle} (edit every ~{args.interval:g}s)",
        ["figure (both cycles)", "value"],
        [
            ["connects (reconnects)", f"{fmt(total('connects'))} ({fmt(total('reconnects'))})"],
            ["sessions left / dropped", f"{fmt(total('leaves'))} / {fmt(total('drops'))}"],
            ["connect failures", fmt(total("connect_failures"))],
            ["writes sent / acked", f"{fmt(total('writes_sent'))} / {fmt(total('writes_acked'))}"],
            ["write refusals", ", ".join(f"{k} {v}" for k, v in refusals.items()) or "none"],
            ["ack timeouts (dropped connections)", fmt(total("ack_timeouts"))],
            [
                "acked writes/s (while clients ran)",
                fmt(total("writes_acked") / (args.seconds + args.warmup)),
            ],
            ["events received by clients", fmt(total("events_received"))],
            [
                "write ack latency p50 / p99 / max, ms",
                "/".join(fmt(q(latencies, p)) for p in (50, 99, 100)),
            ],
            [
                "event-loop lag p50 / p99 / max, ms",
                f"{fmt(q(lags, 50))} / {fmt(q(lags, 99))} / {fmt(lag_max)}",
            ],
            ["RSS at start (no client yet), MiB", fmt(start["rss_mib"])],
            [
                "RSS warm-up: peak / drained / settled = baseline, MiB",
                f"{fmt(warm_peak)} / {fmt(warmed['rss_mib'])} / {fmt(baseline['rss_mib'])} "
                f"({growth(baseline, start)} vs start)",
            ],
            [
                "RSS soak: peak / drained / settled = end, MiB",
                f"{fmt(soak_peak)} / {fmt(churned['rss_mib'])} / {fmt(end['rss_mib'])}",
            ],
            [
                "RSS at end vs baseline / vs start",
                f"{growth(end)} / {growth(end, start)}",
            ],
            [
                "asyncio tasks at baseline / end",
                f"{fmt(baseline.get('asyncio_tasks'))} / {fmt(end.get('asyncio_tasks'))}",
            ],
            [
                "rooms / sockets / queued / limiter entries at end",
                f"{fmt(end.get('rooms'))} / {fmt(end.get('engineio_sockets'))} / "
                f"{fmt(end.get('outgoing_queued_packets'))} / {fmt(end.get('limiter_entries'))}",
            ],
            ["acked writes checked / lost", f"{fmt(checked)} / {fmt(lost)}"],
        ],
    )
    every = max(1, len(samples) // 24)
    print_table(
        "Samples (every ~1 s; a subset)",
        ["t s", "phase", "RSS MiB", "conns", "lag ms", "lag max ms", "tasks", "rooms", "queued"],
        [
            [
                fmt(s["t"]),
                s["phase"],
                fmt(s["rss_mib"]),
                fmt(s["connections"]),
                fmt(s.get("event_loop_lag_seconds", 0) * 1000),
                fmt(s.get("event_loop_lag_max_seconds", 0) * 1000),
                fmt(s.get("asyncio_tasks")),
                fmt(s.get("rooms")),
                fmt(s.get("outgoing_queued_packets")),
            ]
            for s in samples[::every]
        ],
        "rlrrrrrrr",
    )
    print_table(
        "Checks", ["check", "result"], [[k, "ok" if v else "FAILED"] for k, v in checks.items()]
    )
    for example in examples:
        print("lost:", example)
    out = write_json(
        args.out,
        {
            "args": vars(args),
            "machine": machine_info(),
            "checks": checks,
            "start": start,
            "after_warmup": warmed,
            "baseline": baseline,
            "after_soak": churned,
            "end": end,
            "peak_rss_mib": peak_rss,
            "warmup_peak_rss_mib": warm_peak,
            "soak_peak_rss_mib": soak_peak,
            "totals": {
                k: total(k)
                for k in (
                    "connects",
                    "reconnects",
                    "connect_failures",
                    "leaves",
                    "drops",
                    "writes_sent",
                    "writes_acked",
                    "ack_timeouts",
                    "typing",
                    "events_received",
                )
            },
            "write_refusals": dict(refusals),
            "ack_latency_ms": {
                "p50": q(latencies, 50),
                "p99": q(latencies, 99),
                "max": q(latencies, 100),
            },
            "event_loop_lag_ms": {"p50": q(lags, 50), "p99": q(lags, 99), "max": lag_max},
            "acked_writes_checked": checked,
            "acked_writes_lost": lost,
            "lost_examples": examples,
            "samples": samples,
        },
    )
    print(f"\nwritten {out}")
    return 0 if all(checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the soak cycle")
    parser.add_argument(
        "--warmup", type=float, help="length of the warm-up cycle (default: --seconds)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run to iterate with: {QUICK['clients']} clients, "
        f"{QUICK['seconds']:.0f}s cycles, documents idle after "
        f"{QUICK['document_idle_seconds']:.0f}s, {' '.join(QUICK['gateway_flag'])} "
        "(explicit options still win)",
    )
    parser.add_argument(
        "--document-idle-seconds",
        type=float,
        default=DOCUMENT_IDLE_SECONDS,
        help="the gateway's --document-idle-seconds (its default is 300; this one keeps each "
        "settle phase, which waits it out, as long as the recovery retention)",
    )
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--interval", type=float, default=5.0, help="mean seconds between edits")
    parser.add_argument("--store", help="gateway store URL (default: SQLite in a temp folder)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--gateway-flag",
        action="append",
        default=[],
        help="extra collab-gateway flag, e.g. --gateway-flag=--recovery-window=0 (repeatable)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds from the last client's departure to the baseline and to the final "
        "sample (default: the gateway's retention, read from its settings: the longest of "
        "twice the recovery window, the window + its grace, the document idle time, each "
        f"with its sweep period; then one memory pass, {MEMORY_INTERVAL:.0f}s, and "
        f"{SETTLE_MARGIN:.0f}s)",
    )
    parser.add_argument(
        "--debug-memory",
        metavar="DIR",
        help="have the gateway write memory reports to DIR at the start, the baseline, after "
        "churn and at the end (gateway.memory.install_debug)",
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="FRAMES",
        help="with --debug-memory: run the gateway under tracemalloc, FRAMES frames deep, and "
        "add a snapshot to each report (slow)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    if args.warmup is None:
        args.warmup = args.seconds
    if args.worker:
        result = asyncio.run(worker(json.loads(args.worker)))
        print(json.dumps(result), flush=True)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
