"""A long run against a real gateway: ``python -m benchmarks.soak [--clients N] [--seconds S]``.

Not part of the test suite. It starts ``collab-gateway`` as a subprocess on loopback (SQLite
store in a temporary folder, default limits), then simulated clients (python-socketio
``AsyncClient``, websocket transport) in ``--workers`` processes of their own. Each client
connects, joins one or two documents of its company, edits them every ``--interval`` seconds
on average (its own member of the document, a counter it increments; writes go through the
``merge`` strategy, stale ones included), sometimes sends ``user:typing``, and after a while
leaves (leave + disconnect) or drops (disconnect without leaving) and comes back.

Phases:

1. warm-up (``--warmup`` seconds): every client connects and works, then all leave; once the
   gateway reports no connection, its idle RSS, asyncio tasks and rooms are the baseline;
2. soak (``--seconds``): the churn above;
3. drain: every client leaves; the gateway is sampled until it is idle again (no
   connection, room, socket, queued packet or limiter entry: "after churn");
4. settle (``--settle``): the gateway is left alone, still sampled every second, until what it
   keeps *by design* after its clients leave has expired, then the final sample is taken.

Why the settle phase: a gateway whose clients have just left still holds, on purpose, what lets
them come back. With connection state recovery on (the default, ``--recovery-window`` 120 s),
every event of the last window is in the recovery log and every dropped session is saved for
the window plus ``gateway.recovery.GRACE``; the live documents the engine holds are dropped once
idle for ``--document-idle-seconds``. Measuring before those deadlines measures retained state,
not a leak: the first soaks (a drain of ~25 s) found +40% RSS with the default window, +22% with
a 10-s window, +9% with recovery off. So by default the settle phase lasts the longest of those
retention times, read from the gateway's own settings (``gateway.config`` with the flags given
by ``--gateway-flag`` and the ``COLLAB_*`` environment), plus a sweep period and a margin. The
RSS after churn is reported too (not checked): it shows what the retained state costs. With
the defaults the settle phase lasts 335 s (documents idle for 300 s), the whole run ~9 minutes.

Waiting alone is not enough (1,000 clients, 2 shared cores). Once every retained state has
expired, the gateway holds fewer Python objects than at the baseline (in an instrumented run:
28 MB in small-object blocks against 48 MB, 75k tracked objects against 162k; no recovery
entry, hold, session, room, limiter or live document left), yet its RSS stays 30-40% up:
CPython keeps a 1-MiB arena resident while any object in it lives (97 arenas after settling
against 62 at the baseline, 41 MB of free blocks inside them), and glibc keeps free chunks
(16 MB) until ``malloc_trim``, which returns them only where whole pages are free.
``gateway.memory`` trims every minute: 11 MiB back in one run, 1-2 MiB in others.
``PYTHONMALLOC=malloc`` was worse (glibc then held 58 MB free and trimming returned 5). So at
1,000 clients the RSS check still fails (+33% and +42% after settling in the last runs); what
it measures now is allocator retention after a peak, not state the gateway keeps.

Note also that python-socketio's ``disconnect()`` closes the websocket without waiting for
its Socket.IO DISCONNECT packet to go out: the gateway sees every client of this soak drop
rather than leave, and holds each session for the window (the worst case for recovery
memory; a socket.io-client ``socket.disconnect()`` is not held).

Sampled every second from outside the gateway: RSS (``/proc/<pid>/status``), connections
(``/health/websocket``), and from ``/metrics``: event-loop lag (latest and 10-second max),
asyncio tasks, named rooms, engine.io sockets, queued outgoing packets, limiter entries.

Checked at the end (exit status 1 when one fails):

- RSS at the end of the settle phase back within 10% of the post-warm-up baseline;
- no task, room, socket, queued packet or limiter entry left beyond the baseline;
- no acknowledged write lost: for every client and document, the final document holds the
  client's counter at least at its last acknowledged value (and at most the last it sent),
  and the document's version is at least every version an ack reported.

Prints tables and writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
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

from benchmarks.common import fmt, machine_info, print_table, progress, write_json
from gateway.auth import mint_token
from gateway.config import Settings, parse_settings
from gateway.recovery import GRACE

SECRET = "soak-secret-0123456789abcdef-0123456789"
RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
DOCS_PER_COMPANY = 4
CLIENTS_PER_COMPANY = 20
#: Seconds added to the longest retention time before the final sample: the sweeps that
#: drop expired state run every ``min(retention / 4, 15)`` seconds, plus a margin.
SETTLE_MARGIN = 20.0


def retention_seconds(settings: Settings) -> float:
    """How long the gateway keeps, by design, state of clients that have left: recovery
    log entries and saved sessions (window + grace), idle live documents."""
    recovery = settings.recovery_window + GRACE if settings.recovery_window > 0 else 0.0
    documents = float(getattr(settings, "document_idle_seconds", 0.0) or 0.0)
    return max(recovery, documents)


# -- the simulated clients (worker processes) --------------------------------------------------


@dataclass
class Tally:
    """What one worker's clients did, and what they were told."""

    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    writes_sent: int = 0
    writes_acked: int = 0
    write_refusals: Counter[str] = field(default_factory=Counter)
    ack_timeouts: int = 0
    typing: int = 0
    events_received: int = 0
    #: "client|doc" -> [last acked counter, last sent counter, highest acked version]
    writes: dict[str, list[int]] = field(default_factory=dict)
    ack_latency_ms: list[float] = field(default_factory=list)


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

    async def run(self, until: float, *, churn: bool) -> None:
        """Sessions until ``until``: connect, work, leave or drop, come back (``churn``); or
        one session to the end."""
        first = True
        while time.monotonic() < until:
            sio = socketio.AsyncClient(reconnection=False)
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
            session_end = until
            if churn:
                session_end = min(until, time.monotonic() + self.rng.uniform(5, 40))
            try:
                await self._session(sio, session_end)
            finally:
                if churn and self.rng.random() < 0.5 and sio.connected:
                    for doc in list(self.views):
                        with contextlib.suppress(Exception):
                            await sio.call("document:leave", {"documentId": doc}, timeout=10)
                with contextlib.suppress(Exception):
                    await sio.disconnect()
                self.views.clear()
            if churn:
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
    """Run this worker's clients through the warm-up and soak phases (told by the parent
    through stdin lines ``soak`` / ``drain``) and report the tally."""
    tally = Tally()
    rng = random.Random(config["seed"])
    clients = [
        SimClient(i, config["url"], tally, config["interval"], random.Random(rng.random()))
        for i in config["indices"]
    ]
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def ramp(churn: bool, until: float) -> None:
        tasks = []
        for n, c in enumerate(clients):
            tasks.append(asyncio.create_task(c.run(until, churn=churn)))
            if n % 25 == 24:
                await asyncio.sleep(0.05)  # ramp up, not a thundering herd
        await asyncio.gather(*tasks)

    await ramp(False, time.monotonic() + config["warmup"])
    print("warm-done", flush=True)
    await reader.readline()  # "soak": the parent has its baseline
    await ramp(True, time.monotonic() + config["seconds"])
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
            *self.args.gateway_flag,
        ]
        self.env = {**os.environ, "COLLAB_JWT_SECRET": SECRET}
        #: The settings the gateway runs with (parsed as it will parse them).
        self.settings = parse_settings(self.flags, self.env)
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
    checked, lost, examples = 0, 0, []
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
        await gw.start(http)
        assert gw.proc is not None
        progress(f"gateway pid {gw.proc.pid} on {gw.url}, store {gw.store}")
        start_row = await gw.sample(http)
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
            progress(f"warm-up: {args.clients} clients in {args.workers} workers, {args.warmup}s")
            for proc in workers:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                assert line.strip() == b"warm-done", line
            gw.phase = "idle after warm-up"
            baseline = await gw.idle(http, 60, tasks=start_row.get("asyncio_tasks", 0) + 10)
            progress(f"baseline: {baseline}")
            gw.phase = "soak"
            progress(f"soak: {args.seconds}s of churn")
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
            gw.phase = "drain"
            progress("drain: waiting for the gateway to be idle")
            churned = await gw.idle(http, 60, tasks=baseline.get("asyncio_tasks", 0) + 2)
            progress(f"after churn: {churned}")
            settle = args.settle
            if settle is None:
                retention = retention_seconds(gw.settings)
                settle = retention + min(retention / 4, 15.0) + SETTLE_MARGIN if retention else 0
            gw.phase = "settle"
            progress(f"settle: {settle:.0f}s for the state kept by design to expire")
            await asyncio.sleep(settle)
            end = await gw.sample(http)
            docs = await final_documents(gw, http, -(-args.clients // CLIENTS_PER_COMPANY))
        finally:
            sampler.cancel()
            for proc in workers:
                if proc.returncode is None:
                    proc.kill()
            await gw.stop()
    return report(args, start_row, baseline, churned, end, gw.samples, tallies, docs)


def report(
    args: argparse.Namespace,
    start: dict[str, Any],
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
    soak = [s for s in samples if s["phase"] == "soak"]
    lags = sorted(s.get("event_loop_lag_seconds", 0.0) * 1000 for s in soak)
    lag_max = max((s.get("event_loop_lag_max_seconds", 0.0) * 1000 for s in samples), default=0)
    peak_rss = max(s["rss_mib"] for s in samples)
    checked, lost, examples = lost_writes(tallies, docs)

    def growth(row: dict[str, Any]) -> float:
        return (row["rss_mib"] / baseline["rss_mib"] - 1) * 100

    def q(values: list[float], p: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    checks = {
        "rss within 10% of post-warm-up": end["rss_mib"] <= baseline["rss_mib"] * 1.10,
        "no task leaked": end.get("asyncio_tasks", 0) <= baseline.get("asyncio_tasks", 0) + 2,
        "no room leaked": end.get("rooms", 0) == 0,
        "no socket leaked": end["connections"] == 0 and end.get("engineio_sockets", 0) == 0,
        "no queued packet left": end.get("outgoing_queued_packets", 0) == 0,
        "no limiter entry left": end.get("limiter_entries", 0) == 0,
        "no acknowledged write lost": lost == 0 and checked > 0,
    }
    print_table(
        f"Soak: {args.clients} clients, {args.warmup}s warm-up + {args.seconds}s churn "
        f"(edit every ~{args.interval}s)",
        ["figure", "value"],
        [
            ["connects (reconnects)", f"{fmt(total('connects'))} ({fmt(total('reconnects'))})"],
            ["connect failures", fmt(total("connect_failures"))],
            ["writes sent / acked", f"{fmt(total('writes_sent'))} / {fmt(total('writes_acked'))}"],
            ["write refusals", ", ".join(f"{k} {v}" for k, v in refusals.items()) or "none"],
            ["ack timeouts (dropped connections)", fmt(total("ack_timeouts"))],
            [
                "acked writes/s (whole run)",
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
            [
                "RSS start / idle after warm-up / peak, MiB",
                f"{fmt(start['rss_mib'])} / {fmt(baseline['rss_mib'])} / {fmt(peak_rss)}",
            ],
            [
                "RSS after churn / after settle, MiB (vs warm-up)",
                f"{fmt(churned['rss_mib'])} ({growth(churned):+.1f}%) / "
                f"{fmt(end['rss_mib'])} ({growth(end):+.1f}%)",
            ],
            [
                "asyncio tasks after warm-up / end",
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
            "baseline": baseline,
            "after_churn": churned,
            "end": end,
            "peak_rss_mib": peak_rss,
            "totals": {
                k: total(k)
                for k in (
                    "connects",
                    "reconnects",
                    "connect_failures",
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
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the churn phase")
    parser.add_argument("--warmup", type=float, default=20.0)
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
        help="seconds between the drain and the final sample (default: the gateway's longest "
        f"retention: recovery window + {GRACE:.0f}s grace, or document idle time; + sweep + "
        f"{SETTLE_MARGIN:.0f}s)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = asyncio.run(worker(json.loads(args.worker)))
        print(json.dumps(result), flush=True)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
