"""The Yjs path (``document:sync``) under load, on a real editing trace: ingest, fan-out to 100
replicas, and a subscriber that stops reading. ``.venv/bin/python -m benchmarks.yjs [--quick]
[--target gateway,stock,hocuspocus]``.

Not part of the test suite. The trace is ``friendsforever`` (``collab.traces``: two authors,
26,078 transactions, 2,258 merges). Before each case the benchmark replays it with one Yjs
replica per author (pycrdt; as ``collab.traces.replay_concurrent`` does, but keeping each
transaction's own update, what a Yjs client's ``update`` event sends: about 19 bytes on
average) against the document's initial state, so the writer only sends precomputed bytes.
Everything under load runs in processes of its own:

- the server under test: the gateway (``python -m gateway serve``, the embedded SQLite store in
  a temporary folder, event rate limits and the per-user connection cap off; everything else
  its default, ``max_outgoing_packets`` 1,000 included), and, with ``--target hocuspocus``,
  Hocuspocus 3.4 (``benchmarks/baselines/hocuspocus``: ``@hocuspocus/server`` with its
  defaults, no extensions: in memory, nothing persisted), and, with ``--target stock``, the
  floor of a Python server (``benchmarks/baselines/stock_yjs_server.py``: python-socketio and
  one pycrdt ``Doc`` per document, nothing else: what the gateway's Socket.IO and CRDT
  libraries cost at the least for this workload);
- the load generator, ``benchmarks/yjsload/yjs.mjs`` (Node; yjs, y-protocols,
  ``socket.io-client`` for the gateway, ``ws`` speaking Hocuspocus's protocol for Hocuspocus):
  one writer process, and subscriber processes each holding Yjs replicas.

Cases (each on a fresh document of the same server):

1. ``ingest``: no subscribers; one writer sends every update of the trace, at most
   ``--window`` unacknowledged (gateway: the ``document:sync`` ack; Hocuspocus: its SyncStatus
   answer); updates/s acknowledged and the ack latency. Then a fresh replica syncs and its text
   must be the trace's ``endContent``; for the gateway ``GET /api/documents/<id>`` too.
2. ``fanout``: the same with ``--subscribers`` replicas (100) synced before the writer starts;
   deliveries/s (every update received by every replica, over the time from the first send to
   the last arrival) and the delivery latency (arrival minus the writer's send time: both are
   the machine's monotonic clock). Each replica's document, its synced state plus every update
   it received, must end at the expected text: no update dropped.
3. ``slow``: ``--slow-others`` (10) replicas and one more that stops reading (its process
   SIGSTOPped after it synced) while the writer pushes the trace twice over (into two text
   fields, 52,156 updates). The server's RSS is sampled every 100 ms; the
   slow replica is resumed once the writer is done and the others have caught up, and tells
   whether it was disconnected (and why, from the gateway's log: the outgoing queue bound or
   the ping timeout) or kept everything. A replica still connected with updates missing would
   be a silent drop: that fails the case.

``--quick`` (under 2 minutes) replays only a prefix of the trace: 5,000 transactions for
ingest, 1,000 for fan-out, 10,000 once for the slow subscriber (too few for the kernel's socket
buffers to fill, so the slow subscriber usually keeps up there); the expected text is then the
reference replay's rather than ``endContent``.

The columns: acked/s and the ack latency (send to ack, in the writer); deliveries/s and the
delivery latency (send to arrival at a replica); the server's RSS (sampled) and CPU over the
writer's run (``/proc/<pid>/stat``, % of one core), the generator's, the rest of the machine's
(``others``); ``bound by``: ``server`` (its process ≥ 90 % of a core) or ``machine`` (every
core busy: the server and the generator share them). ``--store memory://`` runs the gateway
without durability (what the SQLite commit per update costs); ``--gateway-root`` runs another
checkout's ``gateway``/``collab`` (e.g. ``git archive HEAD gateway collab | tar -x -C /tmp/x``);
``--profile`` samples the gateway with py-spy while the writer runs
(``benchmarks/results/profiles/``; slows it down).

Prints a table and writes ``benchmarks/results/yjs.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from pycrdt import Doc, Map, Text

from benchmarks.common import fmt, machine_info, print_table, progress
from benchmarks.fanout import (
    PROFILES,
    SECRET,
    Server,
    cpu_seconds,
    ensure_node,
    machine_busy_pct,
    machine_jiffies,
    ms,
    record_profile,
    run_benchmark,
    spawn,
    stop,
    stop_on_signals,
)
from collab import traces, yjs

HERE = Path(__file__).resolve().parent
YJSLOAD = HERE / "yjsload"
HOCUSPOCUS = HERE / "baselines" / "hocuspocus"
STOCK_YJS = HERE / "baselines" / "stock_yjs_server.py"
RESULTS = HERE / "results" / "yjs.json"
TARGETS = ("gateway", "stock", "hocuspocus")
TRACE = "friendsforever"
FIELDS = ("content", "content2")

#: The gateway's settings for the benchmark: the embedded SQLite store (the default, in the
#: temporary folder), limits a benchmark trips switched off (one writer sends far faster than
#: a person types). ``max_outgoing_packets`` stays at its default.
GATEWAY_FLAGS = ("--max-connections-per-user", "0", "--event-rate", "0", "--user-event-rate", "0")

#: What the issue quotes for the other servers (friendsforever, measured elsewhere).
ISSUE_TARGETS = {
    "ingest_updates_per_s": [14_000, 20_000],
    "fanout_deliveries_per_s_100": [102_000, 119_000],
    "pycrdt_websocket_fanout_per_s": 25_000,
}


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[str, ...] = TARGETS
    #: Unacknowledged updates the writer keeps in flight.
    window: int = 32
    subscribers: int = 100
    #: Transactions of the trace replayed in each case (0 = all).
    ingest_updates: int = 0
    fanout_updates: int = 0
    slow_updates: int = 0
    slow_others: int = 10
    #: Times the trace is replayed in the slow-subscriber case (1 or 2 text fields).
    slow_rounds: int = 2
    #: Seconds the slow subscriber stays stopped after the others caught up.
    slow_hold: float = 5.0
    cases: tuple[str, ...] = ("ingest", "fanout", "slow")
    #: The gateway's store: ``sqlite`` (the embedded default, a file in the temporary folder)
    #: or a store URL such as ``memory://`` (to see what durability costs).
    store: str = "sqlite"
    #: Run the gateway (and collab) of another checkout (e.g. a ``git archive`` of a commit).
    gateway_root: str | None = None
    #: More gateway flags, e.g. ``--recovery-window 0`` (default: none, the defaults).
    gateway_args: str = ""
    #: Sample the gateway with py-spy while the writer runs (perturbs the figures).
    profile: bool = False


QUICK = Plan(
    ingest_updates=5000, fanout_updates=1000, slow_updates=10000, slow_rounds=1, slow_hold=2.0
)


# -- the trace as Yjs updates ------------------------------------------------------------------


def trace_updates(
    trace: dict[str, Any], initial_state: bytes, field: str, client_base: int
) -> list[bytes]:
    """Every transaction of a concurrent trace as the Yjs update its author's replica made.

    The replicas are :func:`collab.traces.concurrent_edits`'s, but each update is the
    transaction's own (the document's ``observe`` event), as a Yjs client's ``update`` event
    sends it, not the replica's whole state since the previous one. Authors get
    ``client_base + agent`` as client ids.
    """
    updates: list[bytes] = []
    edits = traces.concurrent_edits(trace, initial_state, field, updates, client_base)
    for i, (doc, text, patches) in enumerate(edits):
        made: list[bytes] = []
        sub = doc.observe(lambda event, made=made: made.append(event.update))
        with doc.transaction():
            traces.edit_text(text, patches)
        doc.unobserve(sub)
        if len(made) != 1:
            raise RuntimeError(f"transaction {i}: {len(made)} updates")
        updates.append(made[0])
    return updates


def structure_update(fields: Sequence[str]) -> bytes:
    """For a server that creates nothing (Hocuspocus): the update creating the gateway's Yjs
    view of a document, a root map ``data`` with an empty ``Y.Text`` per field."""
    doc: Doc[Any] = Doc(client_id=1)
    root = doc.get("data", type=Map)
    with doc.transaction():
        for f in fields:
            root[f] = Text()
    return doc.get_update()


@dataclass(slots=True)
class Workload:
    """A case's updates, written for the load generator, and the texts they must end at."""

    updates_file: Path
    expected_file: Path
    count: int
    bytes_total: int
    expected: dict[str, str]


def build_workload(
    trace: dict[str, Any],
    initial_state: bytes,
    fields: Sequence[str],
    limit: int,
    folder: Path,
    name: str,
    prefix: Sequence[bytes] = (),
) -> Workload:
    """Replay the trace into each of ``fields`` (its first ``limit`` transactions when > 0),
    write the update messages (uint32-LE length + bytes each) and the expected texts."""
    if limit:
        trace = {**trace, "txns": trace["txns"][:limit]}
    updates: list[bytes] = list(prefix)
    for round_, field in enumerate(fields):
        updates += trace_updates(trace, initial_state, field, 1_000_000 * (round_ + 1))
    check: Doc[Any] = Doc()
    check.apply_update(initial_state)
    for u in updates:
        check.apply_update(u)
    root = check.get("data", type=Map)
    expected = {f: str(root[f]) for f in fields}
    if not limit:
        for f in fields:
            if expected[f] != trace["endContent"]:
                raise RuntimeError(f"the reference replay of {f} does not end at endContent")
    messages = [yjs.create_update_message(u) for u in updates]
    updates_file = folder / f"{name}.updates"
    updates_file.write_bytes(b"".join(struct.pack("<I", len(m)) + m for m in messages))
    expected_file = folder / f"{name}.expected.json"
    expected_file.write_text(json.dumps(expected), encoding="utf-8")
    return Workload(
        updates_file, expected_file, len(messages), sum(len(m) for m in messages), expected
    )


# -- servers -----------------------------------------------------------------------------------


class GatewayServer(Server):
    """The gateway on the embedded SQLite store, in ``folder``."""

    def __init__(self, folder: Path, store: str = "sqlite", root: Path | None = None) -> None:
        super().__init__("gateway", folder)
        self.store = str(folder / "yjs-bench.db") if store == "sqlite" else store
        #: Another checkout's ``gateway`` and ``collab`` to run instead of this one's.
        self.root = root
        #: More flags (``--gateway-args``).
        self.extra: list[str] = []

    def argv(self) -> list[str]:
        python = super().argv()[:8]  # python -m gateway serve --host H --port P
        if self.root is not None:
            # -P: not the working directory first on sys.path (PYTHONPATH names the checkout)
            python.insert(1, "-P")
        return [
            *python,
            "--store",
            self.store,
            *GATEWAY_FLAGS,
            *self.extra,
        ]


class HocuspocusServer(Server):
    """``benchmarks/baselines/hocuspocus/server.mjs`` (answers any GET, so ``start`` works)."""

    def __init__(self, folder: Path) -> None:
        super().__init__("node", folder)
        self.target = "hocuspocus"
        self.log = folder / f"hocuspocus-{self.port}.log"

    def argv(self) -> list[str]:
        return [
            "node",
            str(HOCUSPOCUS / "server.mjs"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]


class StockYjsServer(Server):
    """``benchmarks/baselines/stock_yjs_server.py``: python-socketio and pycrdt alone."""

    def __init__(self, folder: Path) -> None:
        super().__init__("stock", folder)

    def argv(self) -> list[str]:
        return [sys.executable, str(STOCK_YJS), "--host", "127.0.0.1", "--port", str(self.port)]


def make_server(target: str, folder: Path, plan: Plan) -> Server:
    if target == "stock":
        return StockYjsServer(folder)
    if target == "gateway":
        root = Path(plan.gateway_root).resolve() if plan.gateway_root else None
        server = GatewayServer(folder, plan.store, root)
        server.extra = plan.gateway_args.split()
        return server
    return HocuspocusServer(folder)


def machine_pct(a: tuple[int, int], b: tuple[int, int]) -> float:
    """The machine's CPU in use between two :func:`machine_jiffies`, in % of one core."""
    return round(100.0 * (os.cpu_count() or 1) * (b[0] - a[0]) / max(1, b[1] - a[1]), 1)


class RssSampler:
    """The server's RSS every ``period`` seconds while running."""

    def __init__(self, server: Server, period: float = 0.1) -> None:
        self.server = server
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            rss = self.server.rss_mib()
            if rss is not None:
                self.samples.append((round(time.monotonic() - self._t0, 2), round(rss, 1)))
            await asyncio.sleep(self.period)

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        values = [r for _, r in self.samples]
        # A series thinned to about 100 points for the JSON, keeping the peak.
        step = max(1, len(self.samples) // 100)
        series = self.samples[::step]
        if values:
            peak_at = values.index(max(values))
            if self.samples[peak_at] not in series:
                series = sorted([*series, self.samples[peak_at]])
        return {
            "start": values[0] if values else None,
            "peak": max(values) if values else None,
            "end": values[-1] if values else None,
            "series_s_mib": series,
        }


# -- load generator processes ------------------------------------------------------------------


class Node:
    """One ``yjs.mjs`` process: JSON lines out, commands in."""

    def __init__(self, role: str, config: dict[str, Any]) -> None:
        self.role = role
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 120.0) -> dict[str, Any]:
        env = {**os.environ, "LOADGEN_JWT_SECRET": SECRET}
        self.proc = await spawn(
            f"yjsload-{self.role}",
            ["node", str(YJSLOAD / "yjs.mjs"), self.role, json.dumps(self.config)],
            cwd=YJSLOAD,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return await self.line(within)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def line(self, within: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
        if not raw:
            raise RuntimeError(f"yjsload {self.role} exited")
        answer: dict[str, Any] = json.loads(raw)
        if "error" in answer:
            raise RuntimeError(f"yjsload {self.role}: {answer['error']}")
        return answer

    async def command(self, cmd: str, within: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((cmd + "\n").encode())
        await self.proc.stdin.drain()
        return await self.line(within)

    def cpu_s(self) -> float | None:
        return None if self.proc is None else cpu_seconds(self.proc.pid)

    async def close(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            await stop(self.proc)


# -- one case ------------------------------------------------------------------------------------


async def gateway_initial_state(url: str, document: str, fields: Sequence[str]) -> bytes:
    """Create the document on the gateway and return its Yjs state (the step 2 a replica
    gets): the server creates the structure, with its own client id."""
    token = await asyncio.to_thread(mint, "yjs-setup")
    client = socketio.AsyncClient()
    await client.connect(url, auth={"token": token, "recovery": False}, transports=["websocket"])
    try:
        join = await client.call(
            "document:join", {"documentId": document, "textFields": list(fields)}, timeout=30
        )
        if not join.get("ok"):
            raise RuntimeError(f"join: {join}")
        step1 = yjs.create_sync_step1_message(Doc().get_state())
        ack = await client.call(
            "document:sync", {"documentId": document, "message": step1}, timeout=30
        )
        if not ack.get("ok"):
            raise RuntimeError(f"sync: {ack}")
        return bytes(yjs.parse(ack["message"]).payload)
    finally:
        await client.disconnect()


def mint(sub: str) -> str:
    import jwt

    now = int(time.time())
    claims = {"sub": sub, "companyId": "bench", "name": sub, "iat": now, "exp": now + 6 * 3600}
    return str(jwt.encode(claims, SECRET, algorithm="HS256"))


async def http_text(url: str, document: str) -> dict[str, Any] | None:
    headers = {"Authorization": f"Bearer {mint('yjs-check')}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/documents/{document}", headers=headers) as resp,
    ):
        if resp.status != 200:
            return None
        body: dict[str, Any] = await resp.json()
        return body


def gateway_cut(log: Path, since: int, start: float) -> dict[str, Any]:
    """How the gateway's log says sockets were cut after byte offset ``since``: the outgoing
    queue bound (and when, in seconds after ``start``, a wall-clock time) or a ping timeout."""
    try:
        lines = log.read_bytes()[since:].decode(errors="replace").splitlines()
    except OSError:
        return {}
    backlog: list[float] = []
    other: Counter[str] = Counter()
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            msg = str(entry.get("msg", ""))
            if "outgoing backlog" in msg:
                at = datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp()
                backlog.append(round(at - start, 2))
            elif msg == "disconnect" and "yjs-slow" in str(entry.get("userId")):
                other[str(entry.get("reason"))] += 1
    return {"outgoing_backlog_cuts_at_s": backlog, "slow_disconnect_reasons": dict(other)}


async def run_case(
    case: str, server: Server, trace: dict[str, Any], plan: Plan, folder: Path
) -> dict[str, Any]:
    document = f"yjs-{case}-{time.time_ns()}"
    fields = FIELDS[: plan.slow_rounds] if case == "slow" else FIELDS[:1]
    limit = {"ingest": plan.ingest_updates, "fanout": plan.fanout_updates}.get(
        case, plan.slow_updates
    )
    prefix: list[bytes] = []
    if server.target == "gateway":
        initial = await gateway_initial_state(server.url, document, fields)
    else:
        initial = structure_update(fields)
        prefix = [initial]
    work = await asyncio.to_thread(
        build_workload, trace, initial, fields, limit, folder, f"{server.target}-{case}", prefix
    )
    progress(f"{server.target} {case}: {work.count:,} updates ({work.bytes_total:,} bytes)")
    base = {
        "target": server.target,
        "url": server.url,
        "documentId": document,
        "textFields": list(fields),
        "updatesFile": str(work.updates_file),
        "expectedFile": str(work.expected_file),
        "sendTimesFile": str(folder / f"{server.target}-{case}.sendtimes"),
        "count": work.count,
    }
    subs: list[Node] = []
    slow: Node | None = None
    if case == "fanout":
        subs.append(Node("subscribers", {**base, "clients": plan.subscribers}))
    elif case == "slow":
        subs.append(Node("subscribers", {**base, "clients": plan.slow_others}))
        slow = Node("subscribers", {**base, "clients": 1, "prefix": "yjs-slow", "quietMs": 3000})
    writer = Node("writer", {**base, "window": plan.window})
    nodes = [*subs, *([slow] if slow else []), writer]
    log_offset = server.log.stat().st_size if server.log.exists() else 0
    try:
        ready = [await n.start() for n in nodes]
        if slow is not None:
            os.kill(slow.pid, signal.SIGSTOP)
        await asyncio.sleep(0.5)
        sampler = RssSampler(server)
        sampler.start()
        cpu0 = cpu_seconds(server.pid)
        load0 = [n.cpu_s() for n in nodes]
        jiffies0 = machine_jiffies()
        t0, wall0 = time.monotonic(), time.time()
        profile = None
        if plan.profile and server.target == "gateway":
            name = f"yjs-{server.target}-{case}.txt"
            profile = asyncio.create_task(record_profile(server.pid, 1.0, 10.0, PROFILES / name))
        w = await writer.command("go", within=1800)
        # CPU over the writer's run (the subscribers' final checks come after).
        cpu1 = cpu_seconds(server.pid)
        load1 = [n.cpu_s() for n in nodes]
        jiffies1 = machine_jiffies()
        elapsed = write_s = time.monotonic() - t0
        results = [await s.command("finish", within=600) for s in subs]
        slow_result: dict[str, Any] | None = None
        if slow is not None:
            await asyncio.sleep(plan.slow_hold)
            os.kill(slow.pid, signal.SIGCONT)
            slow_result = await slow.command("finish", within=600)
        rss = await sampler.stop()
        check = await verify(server, base, work)
    finally:
        for n in nodes:
            await n.close()
    out: dict[str, Any] = {
        "target": server.target,
        "case": case,
        "documentId": document,
        "updates": work.count,
        "update_bytes": work.bytes_total,
        "window": plan.window,
        "deflate": ready[-1].get("deflate"),
        "writer": w,
        "rss_mib": rss,
        "server_cpu_pct": None
        if cpu0 is None or cpu1 is None
        else round(100 * (cpu1 - cpu0) / elapsed, 1),
        "loadgen_cpu_pct": round(
            100 * sum((b or 0) - (a or 0) for a, b in zip(load0, load1, strict=True)) / elapsed, 1
        ),
        "machine_cpu_pct": machine_pct(jiffies0, jiffies1),
        "write_s": round(write_s, 3),
        "final": check,
    }
    if profile is not None:
        out["profile"] = await profile
    server_pct, loadgen_pct = out["server_cpu_pct"] or 0.0, out["loadgen_cpu_pct"]
    out["others_cpu_pct"] = round(max(0.0, out["machine_cpu_pct"] - server_pct - loadgen_pct), 1)
    out["bound_by"] = (
        "server"
        if server_pct >= 90
        else "machine"
        if out["machine_cpu_pct"] >= 90 * (os.cpu_count() or 1)
        else "-"
    )
    if results:
        r = results[0]
        span_ms = (r["last_arrival_ms"] or w["start_ms"]) - w["start_ms"]
        out["subscribers"] = {k: v for k, v in r.items() if k != "per_client"}
        out["subscribers"]["deliveries_per_s"] = (
            r["deliveries"] * 1000 / span_ms if span_ms else None
        )
        out["subscribers"]["problems"] = [
            p for p in r["per_client"] if not p["converged"] or p["missing"] or p["duplicates"]
        ][:5]
        out["subscribers"]["json_events"] = sum(p["json_events"] for p in r["per_client"])
        out["subscribers"]["disconnected"] = [
            p["disconnect"] for p in r["per_client"] if not p["connected"]
        ][:5]
    if slow_result is not None:
        p = slow_result["per_client"][0]
        cut = gateway_cut(server.log, log_offset, wall0) if server.target == "gateway" else {}
        silent = p["connected"] and not p["converged"]
        out["slow"] = {
            "received": p["received"],
            "missing": p["missing"],
            "connected": p["connected"],
            "disconnect": p["disconnect"],
            "converged": p["converged"],
            "outcome": "silently dropped updates"
            if silent
            else ("kept up (everything buffered)" if p["converged"] else "disconnected"),
            "gateway_log": cut,
        }
    return out


async def verify(server: Server, base: dict[str, Any], work: Workload) -> dict[str, Any]:
    """A fresh replica syncs: its text, and (gateway) the HTTP view's."""
    fresh = Node("subscribers", {**base, "clients": 1, "count": 0, "prefix": "yjs-check"})
    try:
        await fresh.start()
        r = await fresh.command("finish", within=120)
    finally:
        await fresh.close()
    out: dict[str, Any] = {"replica_converged": bool(r["converged"])}
    if server.target == "gateway":
        body = await http_text(server.url, base["documentId"])
        data = (body or {}).get("data") or {}
        out["http_version"] = (body or {}).get("version")
        out["http_converged"] = all(data.get(f) == t for f, t in work.expected.items())
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_from(args)
    ensure_node(YJSLOAD)
    if "hocuspocus" in plan.targets:
        ensure_node(HOCUSPOCUS)
    background = machine_busy_pct()
    if background > 20:
        progress(f"warning: the machine is already busy ({background:.0f} % of a core in use)")
    if plan.gateway_root:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (plan.gateway_root, os.environ.get("PYTHONPATH")) if p
        )
    trace = await asyncio.to_thread(traces.load_trace, TRACE)
    results: dict[str, Any] = {
        "benchmark": "yjs",
        "machine": machine_info(),
        "background_cpu_pct": round(background, 1),
        "trace": {"name": TRACE, "txns": len(trace["txns"]), "agents": trace["numAgents"]},
        "plan": asdict(plan),
        "gateway_flags": [*GATEWAY_FLAGS, *plan.gateway_args.split()],
        "gateway_root": plan.gateway_root or "this checkout (working tree)",
        "issue_targets": ISSUE_TARGETS,
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="yjs-bench-") as tmp:
        folder = Path(tmp)
        results["machine"] |= {"tmpdir": tmp}
        for target in plan.targets:
            server = make_server(target, folder, plan)
            try:
                await server.start()
                await asyncio.sleep(0.5)
                for case in plan.cases:
                    results["cases"].append(await run_case(case, server, trace, plan, folder))
            finally:
                await server.stop()
            if target == "gateway":
                results["gateway_log_tail"] = server.log.read_text(errors="replace")[-3000:]
    return results


# -- report --------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    rows = []
    for c in results["cases"]:
        w = c["writer"]
        s = c.get("subscribers") or {}
        lat = s.get("latency") or {}
        ok = [c["final"]["replica_converged"], c["final"].get("http_converged", True)]
        if s:
            ok.append(s["converged"] == s["clients"])
        slow = c.get("slow")
        rows.append(
            [
                c["target"],
                c["case"],
                fmt(c["updates"]),
                fmt(s.get("clients", 0)),
                fmt(w["acked_per_s"]),
                ms(w["ack_latency"].get("p50_ms")),
                ms(w["ack_latency"].get("p99_ms")),
                fmt(s.get("deliveries_per_s")),
                ms(lat.get("p50_ms")),
                ms(lat.get("p99_ms")),
                fmt(c["rss_mib"]["start"]),
                fmt(c["rss_mib"]["peak"]),
                fmt(c["server_cpu_pct"]),
                fmt(c["loadgen_cpu_pct"]),
                fmt(c["others_cpu_pct"]),
                c["bound_by"],
                "yes" if all(ok) else "NO",
                slow["outcome"] if slow else "",
            ]
        )
    print_table(
        f"Yjs updates of the {results['trace']['name']} trace through one server "
        f"(window {results['plan']['window']} unacked updates; RSS in MiB; CPU % of one core)",
        [
            "server",
            "case",
            "updates",
            "subs",
            "acked/s",
            "ack p50 ms",
            "ack p99 ms",
            "deliveries/s",
            "deliv p50 ms",
            "deliv p99 ms",
            "RSS start",
            "RSS peak",
            "server CPU %",
            "loadgen CPU %",
            "others %",
            "bound by",
            "converged",
            "slow subscriber",
        ],
        rows,
    )
    by = {(c["target"], c["case"]): c for c in results["cases"]}
    ratios = []
    for case, key in (("ingest", "acked_per_s"), ("fanout", "deliveries_per_s")):
        g = by.get(("gateway", case))
        for other in ("hocuspocus", "stock"):
            h = by.get((other, case))
            if g and h:
                gv = g["writer"][key] if key == "acked_per_s" else g["subscribers"][key]
                hv = h["writer"][key] if key == "acked_per_s" else h["subscribers"][key]
                ratios.append(f"{case}: gateway / {other} = {gv / hv:.2f}")
    t = results["issue_targets"]
    print(
        "\nIssue 7's figures (elsewhere, same trace): ingest "
        f"{t['ingest_updates_per_s'][0]:,}-{t['ingest_updates_per_s'][1]:,} updates/s, fan-out to "
        f"100 {t['fanout_deliveries_per_s_100'][0]:,}-{t['fanout_deliveries_per_s_100'][1]:,} "
        "deliveries/s (Hocuspocus, y-websocket).",
        flush=True,
    )
    for line in ratios:
        print(line, flush=True)
    for c in results["cases"]:
        profile = c.get("profile")
        if profile and "error" not in profile:
            rows = [
                [str(a[0]), fmt(a[1]), str(b[0]), fmt(b[1])]
                for a, b in zip(profile["self"][:12], profile["inclusive"][:12], strict=False)
            ]
            print_table(
                f"py-spy, gateway, {c['case']} ({profile['samples']:,} samples; % of non-idle; "
                f"{profile['file']})",
                ["self: function", "%", "inclusive: function", "%"],
                rows,
                "lrlr",
            )
    for c in results["cases"]:
        if c.get("slow"):
            s = c["slow"]
            print(
                f"{c['target']} slow subscriber: {s['outcome']}; received {s['received']:,} of "
                f"{c['updates']:,}; disconnect {s['disconnect']}; gateway log {s['gateway_log']}",
                flush=True,
            )


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller cases (< 2 minutes)")
    parser.add_argument(
        "--target", help="gateway, stock, hocuspocus (comma-separated; default all)"
    )
    parser.add_argument("--cases", help="ingest, fanout, slow (default all)")
    parser.add_argument("--window", type=int, help="unacked updates in flight (default 32)")
    parser.add_argument("--subscribers", type=int, help="replicas in the fan-out case (100)")
    parser.add_argument("--ingest-updates", type=int, help="transactions replayed, ingest")
    parser.add_argument("--fanout-updates", type=int, help="transactions replayed, fan-out")
    parser.add_argument("--slow-updates", type=int, help="transactions replayed per round, slow")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the gateway while the writer runs"
    )
    parser.add_argument("--slow-others", type=int, help="other replicas in the slow case (10)")
    parser.add_argument("--slow-rounds", type=int, choices=(1, 2), help="trace replays, slow case")
    parser.add_argument(
        "--gateway-root", help="run gateway/ and collab/ from this folder (another checkout)"
    )
    parser.add_argument(
        "--gateway-args", help="more gateway flags, quoted (e.g. '--recovery-window 0')"
    )
    parser.add_argument("--store", help="gateway store: sqlite (default) or e.g. memory://")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/)")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    if args.target:
        targets = tuple(t.strip() for t in args.target.split(",") if t.strip())
        if any(t not in TARGETS for t in targets):
            raise SystemExit(f"targets: {', '.join(TARGETS)}")
        changes["targets"] = targets
    if args.cases:
        changes["cases"] = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    names = ("window", "subscribers", "slow_others", "slow_rounds", "store", "gateway_args")
    for name in (*names, "ingest_updates", "fanout_updates", "slow_updates"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.profile:
        changes["profile"] = True
    if args.gateway_root:
        changes["gateway_root"] = str(Path(args.gateway_root).resolve())
    return replace(plan, **changes)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(run(args), print_report, args.output or RESULTS)


if __name__ == "__main__":
    stop_on_signals()
    raise SystemExit(main())
