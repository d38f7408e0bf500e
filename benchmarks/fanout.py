"""Fan-out: how many events per second one server delivers to the sockets of one room, and how
late. ``.venv/bin/python -m benchmarks.fanout [--quick] [--target gateway|stock|node]``.

Not part of the test suite. Everything runs on loopback, in processes of its own:

- the server under test: the gateway (``python -m gateway``, ``--store memory://``, a JWT
  secret; the limits a benchmark trips switched off: connections per user, event rates),
  ``benchmarks/baselines/stock_server.py`` (python-socketio's ``AsyncServer`` with its
  defaults) or ``benchmarks/baselines/node_server/server.mjs`` (Node's socket.io 4);
- the load generator, ``benchmarks/loadgen/clients.mjs`` (Node, the official
  ``socket.io-client``, websocket transport): a coordinator that publishes and measures, and
  ``--procs`` worker processes holding the sockets. One worker (the default) takes in about
  160,000 deliveries/s on one core, but only about 30,000/s at C = 1,000 when the server
  compresses (inflating every frame); a second worker raised no figure on this 2-core
  machine (three busy processes then share two cores). The ``bound by`` column says when
  the generator, not the server, was the limit.

For each room size C (100 and 1,000 sockets):

1. connect C sockets of one user (connects/s), then the server's RSS with them idle;
2. company room: ``POST /api/events`` ``project:updated`` (a service's ERP event, the
   gateway's only server-side publish path) goes to the company room, which every socket is
   in. (a) 10 publishes/s: delivery latency under moderate load; (b) saturation: a closed loop
   keeping ``window`` events published but not yet delivered to every socket (the window is
   ``--window-deliveries`` / C events: 160 at C = 100, 16 at C = 1,000): the server always
   has events to work on while its per-socket queues stay bounded, so deliveries/s is what it
   sustains and the latency is that of a bounded queue, not of an ever-growing one. (An open
   loop "as fast as the server accepts" measures nothing: python-socketio's emit only queues
   the packet per socket, so the server accepts publishes far faster than it delivers them.
   Measured here at C = 1,000: with 2 events in flight Node delivered 82k/s and the gateway
   18k/s; with 16, 160k/s and 30k/s; with 32 or 64 the same, only later);
3. document room: every socket joins one document; a publisher socket writes
   ``document:update`` (acknowledged, always from the current version: the fast path), the
   server broadcasts ``document:updated`` to the room: (a) and (b) again;
4. the connect storm, on a fresh server: C sockets of C distinct users of one company; each
   user's first socket sends ``user:online`` to everyone already in the company room, so the
   storm delivers about C²/2 events; connects/s, and when the last announcement arrived.

Every event delivered is about 200 bytes of JSON (``--bytes``) and carries its sequence number
and send time; latency is arrival minus send time (``performance.timeOrigin +
performance.now()`` in the publisher and in the sockets' processes, whose clock offsets are
measured at start and taken out). Deliveries are counted by arrival time over the measured
window, after a warm-up. Server CPU is read from
``/proc/<pid>/stat`` at both ends of the window, the generator's from its own processes; the
``bound by`` column says which one ran out: ``server`` (its process at ≥ 90 % of a core),
``loadgen`` (a worker's event loop busy ≥ 90 % of the time with its CPU ≥ 80 %), ``machine``
(every core busy, the server and the generator sharing them: on 2 cores the generator takes
CPU the server could have used), ``others`` (every core busy and other processes or the
kernel took ≥ 25 % of a core: the figure is squeezed, see the ``others %`` column), or ``-``.

The official client offers permessage-deflate (as browsers do); aiohttp accepts it and then
compresses every frame it sends, Node's socket.io declines it by default. The ``deflate``
column says what was negotiated; ``--no-deflate`` makes the generator not offer it.

``--profile`` samples a Python server with py-spy during each saturation phase and prints
where its time went (collapsed stacks in ``benchmarks/results/profiles/``, for flamegraph.pl
or speedscope); sampling slows the server, so take figures from a run without it.

Prints tables and writes ``benchmarks/results/fanout.json``. ``--quick`` shortens every
phase (< 2 minutes in all). ``compare.py`` runs the same workload against the three servers.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import fmt, machine_info, print_table, progress, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen"
NODE_SERVER = HERE / "baselines" / "node_server"
STOCK_SERVER = HERE / "baselines" / "stock_server.py"
RESULTS = HERE / "results" / "fanout.json"
TARGETS = ("gateway", "stock", "node")
SECRET = "fanout-bench-secret-0123456789abcdef-0123456789"
HOST = "127.0.0.1"

#: Gateway settings the benchmark needs: one user holds C sockets; the document publisher and
#: the editors write faster than a person (rate limits off). Everything else is the default.
GATEWAY_FLAGS = tuple(
    "--store memory:// --max-connections-per-user 0 --event-rate 0 --user-event-rate 0".split()
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one fan-out run measures."""

    clients: tuple[int, ...] = (100, 1000)
    #: Publishes per second of the fixed-rate phases.
    rate: float = 10.0
    rate_seconds: float = 5.0
    warmup: float = 1.0
    seconds: float = 5.0
    #: Events in flight at saturation: this many deliveries' worth (window = this / C).
    window_deliveries: int = 16000
    bytes: int = 200
    #: Loadgen worker processes holding the sockets.
    procs: int = 1
    #: Handshakes in flight while connecting.
    concurrency: int = 100
    storm: bool = True
    #: Only the connect phases (one user, then the storm): no publish phase.
    connect_only: bool = False
    deflate: bool = True
    rooms: tuple[str, ...] = ("company", "document")
    #: Sample a Python server with py-spy during each saturation phase (perturbs the figures).
    profile: bool = False

    def window(self, clients: int) -> int:
        return max(2, math.ceil(self.window_deliveries / clients))


QUICK = Plan(rate_seconds=2.0, warmup=0.5, seconds=2.0)


# -- processes --------------------------------------------------------------------------------

_children: dict[int, str] = {}


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def kill_children() -> None:
    """Stop every process group this benchmark started (atexit, Ctrl-C, errors)."""
    for pid in list(_children):
        _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for pid in list(_children):
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            _kill_group(pid, signal.SIGKILL)
        _children.pop(pid, None)


def shown(path: Path) -> str:
    """A path as printed: relative to the repository when inside it."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def drive(
    work: Any, report: Callable[[dict[str, Any]], None], output: str | Path
) -> tuple[dict[str, Any], Path] | None:
    """Run a benchmark coroutine, always reap its child processes, time it, print its report
    and write its JSON; ``None`` if interrupted (every benchmark's ``main`` is this)."""
    started = time.monotonic()
    try:
        results: dict[str, Any] = asyncio.run(work)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return None
    finally:
        kill_children()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    report(results)
    return results, write_json(output, results)


def run_benchmark(work: Any, report: Callable[[dict[str, Any]], None], output: str | Path) -> int:
    """A benchmark's ``main``: :func:`drive`, then say where the JSON went; the exit status."""
    done = drive(work, report, output)
    if done is None:
        return 130
    results, out = done
    print(f"\nwrote {shown(out)} ({results['elapsed_s']:g} s)", flush=True)
    return 0


atexit.register(kill_children)


async def spawn(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    stdin: int | None = None,
    stdout: Any = None,
    stderr: Any = None,
) -> asyncio.subprocess.Process:
    """Start ``argv`` in a process group of its own (so that it and its children can be
    stopped together), remembered for cleanup."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    _children[proc.pid] = name
    return proc


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is None:
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            _kill_group(proc.pid, signal.SIGKILL)
            await proc.wait()
    _children.pop(proc.pid, None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def proc_status_kib(pid: int, field: str) -> int | None:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU time so far (user + system); None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """Busy and total jiffies of every core together (``/proc/stat``; idle and iowait are not
    busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def machine_busy_pct(seconds: float = 1.0) -> float:
    """CPU in use on the whole machine over ``seconds``, in % of one core."""
    busy0, total0 = machine_jiffies()
    time.sleep(seconds)
    busy1, total1 = machine_jiffies()
    cores = os.cpu_count() or 1
    return 100.0 * cores * (busy1 - busy0) / max(1, total1 - total0)


def ensure_node(folder: Path) -> None:
    """``npm ci`` in ``folder`` unless its ``node_modules`` is installed."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("fanout: needs node and npm (Node 18 or later) on the PATH")
    if (folder / "node_modules" / ".package-lock.json").exists():
        return
    progress(f"npm ci in {folder.relative_to(ROOT)}")
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise SystemExit(f"npm ci failed in {folder}:\n{done.stdout}\n{done.stderr}")


class Server:
    """The server under test, on a free loopback port."""

    def __init__(self, target: str, logdir: Path) -> None:
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}")
        self.target = target
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = logdir / f"{target}-{self.port}.log"
        self.proc: asyncio.subprocess.Process | None = None

    def argv(self) -> list[str]:
        port = str(self.port)
        if self.target == "gateway":
            return [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--host",
                HOST,
                "--port",
                port,
                *GATEWAY_FLAGS,
            ]
        if self.target == "stock":
            return [sys.executable, str(STOCK_SERVER), "--host", HOST, "--port", port]
        return ["node", str(NODE_SERVER / "server.mjs"), "--host", HOST, "--port", port]

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
        env["COLLAB_JWT_SECRET"] = SECRET
        with self.log.open("wb") as out:
            self.proc = await spawn(self.target, self.argv(), env=env, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.target} exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url}/health/websocket") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.target} not ready after 30 s")
                await asyncio.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mib(self) -> float | None:
        kib = proc_status_kib(self.pid, "VmRSS")
        return None if kib is None else kib / 1024

    def peak_mib(self) -> float | None:
        kib = proc_status_kib(self.pid, "VmHWM")
        return None if kib is None else kib / 1024

    async def stop(self) -> None:
        if self.proc is not None:
            await stop(self.proc)


class Loadgen:
    """``benchmarks/loadgen/clients.mjs``: JSON commands in, one JSON answer each."""

    def __init__(self, url: str, *, procs: int, server_pid: int | None, deflate: bool) -> None:
        self.argv = [
            "node",
            str(LOADGEN / "clients.mjs"),
            "--url",
            url,
            "--procs",
            str(procs),
            "--clk-tck",
            str(os.sysconf("SC_CLK_TCK")),
        ]
        if server_pid is not None:
            self.argv += ["--server-pid", str(server_pid)]
        if not deflate:
            self.argv.append("--no-deflate")
        self.proc: asyncio.subprocess.Process | None = None
        self.clocks: list[dict[str, float]] | None = None

    async def start(self) -> None:
        env = {**os.environ, "LOADGEN_JWT_SECRET": SECRET}
        self.proc = await spawn(
            "loadgen",
            self.argv,
            cwd=LOADGEN,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
        )
        ready = await self._line(30)
        if not ready.get("ready"):
            raise RuntimeError(f"loadgen did not start: {ready}")
        #: Each worker's clock offset from the publisher's (already corrected for).
        self.clocks = ready.get("clocks")

    async def _line(self, within: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), within)
            if not raw:
                raise RuntimeError("the load generator exited")
            with contextlib.suppress(ValueError):
                answer: dict[str, Any] = json.loads(raw)
                return answer

    async def command(self, within: float = 120.0, **cmd: Any) -> dict[str, Any]:
        """Send ``cmd`` and wait at most ``within`` seconds for its answer."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        answer = await self._line(within)
        if "error" in answer:
            raise RuntimeError(f"loadgen {cmd['cmd']}: {answer['error']}")
        return answer

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None and self.proc.returncode is None:
            with contextlib.suppress(OSError, RuntimeError):
                self.proc.stdin.write(b'{"cmd":"quit"}\n')
                await self.proc.stdin.drain()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 5)
        await stop(self.proc)


@contextlib.asynccontextmanager
async def serving(target: str, logdir: Path, plan: Plan) -> Any:
    """A started server and a load generator pointed at it; both stopped on the way out."""
    server = Server(target, logdir)
    loadgen: Loadgen | None = None
    try:
        await server.start()
        loadgen = Loadgen(server.url, procs=plan.procs, server_pid=server.pid, deflate=plan.deflate)
        await loadgen.start()
        yield server, loadgen
    finally:
        if loadgen is not None:
            await loadgen.close()
        await server.stop()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the load generator and its workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return out


class CpuSampler:
    """Samples, every ``period`` seconds, the CPU time of the server, of the load generator
    (coordinator and workers, each) and of the machine, so that a connect phase can say which
    process ran out: the connect command reports no CPU of its own (a storm's cost is shared
    between the server sending ``user:online`` and the workers parsing it)."""

    def __init__(self, server_pid: int, loadgen_pid: int, period: float = 0.05) -> None:
        self.server_pid = server_pid
        self.loadgen_pid = loadgen_pid
        self.period = period
        #: (wall time, server CPU s, {loadgen pid: CPU s}, machine busy jiffies)
        self.samples: list[tuple[float, float, dict[int, float], int]] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        pids = descendants(self.loadgen_pid)
        loadgen = {p: t for p in pids if (t := cpu_seconds(p)) is not None}
        server = cpu_seconds(self.server_pid) or 0.0
        self.samples.append((time.time(), server, loadgen, machine_jiffies()[0]))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.period)

    def __enter__(self) -> CpuSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()

    def between(self, t0: float, t1: float) -> dict[str, Any] | None:
        """CPU % of one core from the sample nearest ``t0`` to the one nearest ``t1`` (wall
        seconds): server, loadgen (all its processes), its busiest process, the machine."""
        if len(self.samples) < 2 or t1 <= t0:
            return None
        a = min(self.samples, key=lambda x: abs(x[0] - t0))
        b = min(self.samples, key=lambda x: abs(x[0] - t1))
        dt = b[0] - a[0]
        if dt <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK")

        def pct(seconds: float) -> float:
            return round(100.0 * seconds / dt, 1)

        per = {p: b[2][p] - a[2].get(p, 0.0) for p in b[2]}
        server, loadgen = pct(b[1] - a[1]), pct(sum(per.values()))
        machine = pct((b[3] - a[3]) / hz)
        return {
            "seconds": round(dt, 2),
            "server_pct": server,
            "loadgen_pct": loadgen,
            "loadgen_max_proc_pct": pct(max(per.values(), default=0)),
            "machine_pct": machine,
            "others_pct": round(max(0.0, machine - server - loadgen), 1),
        }


async def measured_connect(
    server: Server, loadgen: Loadgen, plan: Plan, clients: int, users: str
) -> dict[str, Any]:
    """The loadgen's ``connect`` command, with each process's CPU over the connect window
    (first handshake to last connect) and over the settling of the presence storm (last
    connect to last ``user:online``); with ``--profile``, py-spy samples the server meanwhile."""
    assert loadgen.proc is not None
    profile = None
    if plan.profile and server.target != "node":
        name = f"{server.target}-{clients}-connect-{users}.txt"
        profile = asyncio.create_task(record_profile(server.pid, 0.1, 2.0, PROFILES / name))
    started = time.time() + 0.05  # the loadgen starts connecting 50 ms after the command
    with CpuSampler(server.pid, loadgen.proc.pid) as cpu:
        connect = await loadgen.command(
            cmd="connect", clients=clients, users=users, concurrency=plan.concurrency, within=300
        )
    connected = started + (connect.get("seconds") or 0)
    connect["cpu_connect"] = cpu.between(started, connected)
    settled = connect.get("presence_settled_s")
    connect["cpu_settle"] = cpu.between(connected, started + settled) if settled else None
    if profile is not None:
        connect["profile"] = await profile
    return connect


# -- the workload -----------------------------------------------------------------------------


def verdict(phase: dict[str, Any]) -> str:
    """Which resource ran out during a saturation phase (see the module docstring)."""
    cpu = phase.get("cpu") or {}
    server = cpu.get("server_pct") or 0.0
    workers = [w for w in cpu.get("loadgen_workers") or [] if w]
    cores = os.cpu_count() or 1
    if server >= 90:
        return "server"
    if any((w.get("self_elu") or 0) >= 0.9 and (w.get("self_pct") or 0) >= 80 for w in workers):
        return "loadgen"
    if (cpu.get("machine_pct") or 0) >= 95 * cores:
        others = (phase.get("cpu_summary") or {}).get("others_pct") or 0
        return "others" if others >= 25 else "machine"
    return "-"


def digest(phase: dict[str, Any]) -> dict[str, Any]:
    """The loadgen's answer to a publish, with the CPU split and the verdict added."""
    cpu = phase.get("cpu") or {}
    workers = [w for w in cpu.get("loadgen_workers") or [] if w]
    loadgen = sum(w.get("self_pct") or 0 for w in workers) + (cpu.get("self_pct") or 0)
    machine = cpu.get("machine_pct")
    others = None
    if machine is not None:
        others = max(0.0, machine - (cpu.get("server_pct") or 0) - loadgen)
    phase["cpu_summary"] = {
        "server_pct": cpu.get("server_pct"),
        "loadgen_pct": round(loadgen, 1),
        "machine_pct": machine,
        "others_pct": None if others is None else round(others, 1),
        "loadgen_max_elu": max((w.get("self_elu") or 0 for w in workers), default=None),
    }
    phase["bound_by"] = verdict(phase) if phase.get("mode") == "saturate" else None
    return phase


async def publish_phases(
    loadgen: Loadgen, server: Server, room: str, clients: int, plan: Plan, document: str
) -> dict[str, dict[str, Any]]:
    common = {"room": room, "bytes": plan.bytes, "documentId": document}
    out: dict[str, dict[str, Any]] = {}
    progress(f"  {room} room: {plan.rate:g} publishes/s for {plan.rate_seconds:g} s")
    out["rate"] = digest(
        await loadgen.command(
            cmd="publish",
            mode="rate",
            rate=plan.rate,
            warmup=plan.warmup,
            seconds=plan.rate_seconds,
            within=plan.warmup + plan.rate_seconds + 60,
            **common,
        )
    )
    window = plan.window(clients)
    progress(f"  {room} room: saturation, window {window} events, {plan.seconds:g} s")
    profile = None
    if plan.profile and server.target != "node":
        name = f"{server.target}-{clients}-{room}.txt"
        profile = asyncio.create_task(
            record_profile(server.pid, plan.warmup + 0.1, plan.seconds, PROFILES / name)
        )
    out["saturate"] = digest(
        await loadgen.command(
            cmd="publish",
            mode="saturate",
            window=window,
            warmup=plan.warmup,
            seconds=plan.seconds,
            within=plan.warmup + plan.seconds + 60,
            **common,
        )
    )
    if profile is not None:
        out["saturate"]["profile"] = await profile
    return out


# -- profiles ---------------------------------------------------------------------------------

PROFILES = HERE / "results" / "profiles"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record_profile(pid: int, delay: float, seconds: float, out: Path) -> dict[str, Any]:
    """py-spy's samples of ``pid`` for ``seconds`` after ``delay``, as collapsed stacks in
    ``out`` (for flamegraph.pl or speedscope), summarized (:func:`summarize_profile`)."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not found (`.venv/bin/pip install py-spy`)"}
    await asyncio.sleep(delay)
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "200",
        "--format",
        "raw",
        "--nolineno",
        "-o",
        str(out),
    ]
    proc = await spawn(
        "py-spy", argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    text, _ = await proc.communicate()
    _children.pop(proc.pid, None)
    return read_profile(out, proc.returncode, text.decode(errors="replace"))


def read_profile(out: Path, status: int | None, log: str) -> dict[str, Any]:
    if status != 0 or not out.exists():
        return {"error": log[-500:]}
    return summarize_profile(out) | {"file": str(out.relative_to(ROOT))}


#: Frames on (nearly) every stack, saying nothing: the event loop running callbacks, and what
#: started it.
PLUMBING = frozenset(
    {
        "_run_module_as_main",
        "_run_code",
        "<module>",
        "main",
        "serve",
        "run_app",
        "BaseEventLoop.run_until_complete",
        "BaseEventLoop.run_forever",
        "BaseEventLoop._run_once",
        "Handle._run",
    }
)


def _function(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _package(frame: str) -> str:
    """Where a frame's code lives: the top-level package, or ``asyncio``, ``json``, ..."""
    where = frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else frame
    return where.split("/")[0].removesuffix(".py") or where


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of py-spy samples (non-idle: time on the CPU or holding the GIL): by the function
    running (self), by every function on the stack (inclusive) and by package (self)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        packages[_package(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n

    def shares(counter: Counter[str], limit: int = top) -> list[list[Any]]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(limit)]

    telling = Counter({k: v for k, v in inclusive.items() if _function(k) not in PLUMBING})
    return {
        "samples": total,
        "self": shares(own),
        "inclusive": shares(telling),
        "packages": shares(packages, 12),
    }


async def run_fanout(target: str, clients: int, plan: Plan, logdir: Path) -> dict[str, Any]:
    """One server: connect C sockets of one user, then the rooms' fixed-rate and saturation
    phases."""
    progress(f"{target}, {clients} sockets: connecting (one user)")
    async with serving(target, logdir, plan) as (server, loadgen):
        await asyncio.sleep(0.5)
        rss0 = server.rss_mib()
        connect = await measured_connect(server, loadgen, plan, clients, "one")
        if connect["connected"] < clients:
            raise RuntimeError(
                f"{target}: only {connect['connected']}/{clients} connected: {connect['errors']}"
            )
        await asyncio.sleep(1.0)
        rss = server.rss_mib()
        phases: dict[str, Any] = {}
        document = f"fanout-{clients}-{int(time.time())}"
        for room in () if plan.connect_only else plan.rooms:
            if room == "document":
                joined = await loadgen.command(cmd="join", documentId=document, within=120)
                if joined["joined"] < clients:
                    raise RuntimeError(
                        f"{target}: {joined['joined']}/{clients} joined: {joined['errors']}"
                    )
            phases[room] = await publish_phases(loadgen, server, room, clients, plan, document)
        peak = server.peak_mib()
    return {
        "target": target,
        "clients": clients,
        "connect": connect,
        "rss_mib": {"started": rss0, "idle_connected": rss, "peak": peak},
        "loadgen_clocks": loadgen.clocks,
        "rss_kib_per_socket": None
        if rss is None or rss0 is None
        else (rss - rss0) * 1024 / clients,
        "phases": phases,
    }


async def run_storm(target: str, clients: int, plan: Plan, logdir: Path) -> dict[str, Any]:
    """A fresh server: C distinct users of one company connect; every first socket of a user
    announces it (``user:online``) to everyone already there."""
    progress(f"{target}, {clients} sockets: connect storm ({clients} distinct users)")
    async with serving(target, logdir, plan) as (server, loadgen):
        await asyncio.sleep(0.5)
        rss0 = server.rss_mib()
        connect = await measured_connect(server, loadgen, plan, clients, "distinct")
        await asyncio.sleep(1.0)
        rss = server.rss_mib()
    return {
        "target": target,
        "clients": clients,
        "connect": connect,
        "rss_mib": {"started": rss0, "idle_connected": rss},
    }


# -- reporting --------------------------------------------------------------------------------


def ms(value: Any) -> str:
    return fmt(value, 1 if isinstance(value, float) and value >= 10 else 2)


def publish_rows(runs: Sequence[dict[str, Any]], mode: str) -> list[list[str]]:
    rows = []
    for run in runs:
        for room, phases in run["phases"].items():
            p = phases[mode]
            cpu = p["cpu_summary"]
            row = [
                run["target"],
                fmt(run["clients"]),
                room,
                fmt(p["deliveries_per_s"]),
                fmt(p["publishes_per_s"]),
                ms(p["latency"]["p50_ms"]),
                ms(p["latency"]["p99_ms"]),
                ms(p["latency"]["max_ms"]),
                fmt(cpu["server_pct"]),
                fmt(cpu["loadgen_pct"]),
                fmt(cpu["others_pct"]),
            ]
            if mode == "saturate":
                row.insert(3, fmt(p["window"]))
                row.append(p["bound_by"])
            rows.append(row)
    return rows


def connect_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for kind, runs in (("one", results["runs"]), ("distinct", results["storms"])):
        for run in runs:
            c = run["connect"]
            rows.append(
                [
                    run["target"],
                    fmt(run["clients"]),
                    kind,
                    fmt(c["connects_per_s"]),
                    ms(c["connect_latency"]["p50_ms"]),
                    ms(c["connect_latency"]["p99_ms"]),
                    fmt(c["presence_online_received"]),
                    fmt(c["presence_settled_s"], 2),
                    fmt(run["rss_mib"]["started"]),
                    fmt(run["rss_mib"]["idle_connected"]),
                    fmt(
                        ((run["rss_mib"]["idle_connected"] or 0) - (run["rss_mib"]["started"] or 0))
                        * 1024
                        / run["clients"]
                    ),
                    {True: "yes", False: "no"}.get(c.get("deflate"), "?"),
                    fmt((c.get("cpu_connect") or {}).get("server_pct")),
                    fmt((c.get("cpu_connect") or {}).get("loadgen_pct")),
                    fmt((c.get("cpu_connect") or {}).get("others_pct")),
                ]
            )
    return rows


def print_report(results: dict[str, Any]) -> None:
    plan = results["plan"]
    runs = results["runs"]
    print_table(
        f"Fan-out at saturation (closed loop: `window` events in flight; {plan['bytes']}-byte "
        f"events; {plan['seconds']:g} s after {plan['warmup']:g} s warm-up)",
        [
            "server",
            "C",
            "room",
            "window",
            "deliveries/s",
            "publishes/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU %",
            "loadgen CPU %",
            "others %",
            "bound by",
        ],
        publish_rows(runs, "saturate"),
    )
    print_table(
        f"Latency at a fixed rate ({plan['rate']:g} publishes/s for {plan['rate_seconds']:g} s)",
        [
            "server",
            "C",
            "room",
            "deliveries/s",
            "publishes/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU %",
            "loadgen CPU %",
            "others %",
        ],
        publish_rows(runs, "rate"),
    )
    print_table(
        "Connections: C sockets of one user, then (fresh server) of C distinct users; RSS in MiB",
        [
            "server",
            "C",
            "users",
            "connects/s",
            "p50 ms",
            "p99 ms",
            "user:online recv",
            "settled s",
            "RSS start",
            "RSS idle",
            "KiB/socket",
            "deflate",
            "server CPU %",
            "loadgen CPU %",
            "others %",
        ],
        connect_rows(results),
    )
    print(
        "\nCPU % is of one core over the measured window (server: /proc/<pid>/stat; loadgen: its "
        "workers and publisher; others: the rest of the machine). "
        f"{os.cpu_count()} cores here.",
        flush=True,
    )
    for line in trouble(results):
        print(f"warning: {line}", flush=True)
    print_profiles(runs)


def trouble(results: dict[str, Any]) -> list[str]:
    """Anything that went wrong: refused publishes, sockets dropped, events never delivered."""
    lines = []
    for run in results["runs"]:
        for room, phases in run["phases"].items():
            for mode, p in phases.items():
                if p["errors"] or p["dropped"] or p["stalled"] or p["not_drained"]:
                    lines.append(
                        f"{run['target']} C={run['clients']} {room} {mode}: errors {p['errors']}, "
                        f"sockets dropped {p['dropped']}, events given up {p['stalled']}, "
                        f"undelivered at the end {p['not_drained']}"
                    )
    for run in results["runs"] + results["storms"]:
        c = run["connect"]
        if c["failed"] or c["dropped"]:
            lines.append(
                f"{run['target']} C={run['clients']} connect ({c['users']} users): "
                f"{c['failed']} refused {c['errors']}, {c['dropped']} dropped"
            )
    return lines


def print_profiles(runs: Sequence[dict[str, Any]]) -> None:
    """Where a Python server's time went at saturation (``--profile``)."""
    for run in runs:
        for room, phases in run["phases"].items():
            profile = phases["saturate"].get("profile")
            if not profile:
                continue
            title = f"py-spy, {run['target']}, C = {run['clients']}, {room} room, saturation"
            if "error" in profile:
                print(f"\n{title}: {profile['error']}")
                continue
            columns = [profile["self"], profile["inclusive"], profile["packages"]]
            rows: list[list[str]] = []
            for i in range(max(len(c) for c in columns)):
                row: list[str] = []
                for column in columns:
                    name, share = column[i] if i < len(column) else ("", None)
                    row += [str(name), fmt(share)]
                rows.append(row)
            print_table(
                f"{title} ({profile['samples']:,} samples; % of non-idle samples; "
                f"stacks in {profile['file']})",
                ["self: function", "%", "inclusive: function", "%", "self: package", "%"],
                rows,
                "lrlrlr",
            )


def plot_deliveries(results: dict[str, Any], path: Path, title: str) -> Path | None:
    """Deliveries/s by C, one line per server and room; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print(
            f"(no plot: matplotlib is not installed; `.venv/bin/pip install matplotlib` "
            f"for {path.name})",
            flush=True,
        )
        return None
    series: dict[tuple[str, str], dict[int, list[float]]] = {}
    for run in results["runs"]:
        for room, phases in run["phases"].items():
            by_c = series.setdefault((run["target"], room), {})
            by_c.setdefault(run["clients"], []).append(phases["saturate"]["deliveries_per_s"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"gateway": "tab:blue", "stock": "tab:orange", "node": "tab:green"}
    styles = {"company": "-", "document": "--"}
    for (target, room), by_c in sorted(series.items()):
        xs = sorted(by_c)
        ys = [statistics.median(by_c[x]) for x in xs]  # median over rounds
        ax.plot(
            xs,
            ys,
            styles.get(room, ":"),
            color=colors.get(target),
            marker="o",
            label=f"{target}, {room} room",
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted({c for by_c in series.values() for c in by_c}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.minorticks_off()
    ax.set_ylim(bottom=0)
    ax.get_yaxis().set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("sockets in the room (C)")
    ax.set_ylabel("deliveries / s at saturation")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, description: str = __doc__ or "") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short phases (< 2 minutes)")
    parser.add_argument(
        "--target",
        default="gateway",
        help="gateway, stock, node, or several comma-separated (default gateway)",
    )
    parser.add_argument("--clients", help="room sizes, comma-separated (default 100,1000)")
    parser.add_argument("--seconds", type=float, help="measured seconds per saturation phase")
    parser.add_argument("--rate", type=float, help="publishes/s of the fixed-rate phases (10)")
    parser.add_argument(
        "--window-deliveries", type=int, help="deliveries in flight at saturation (default 16000)"
    )
    parser.add_argument("--procs", type=int, help="loadgen worker processes (default 1)")
    parser.add_argument("--bytes", type=int, help="delivered payload size (default 200)")
    parser.add_argument("--rooms", help="company, document or both (default both)")
    parser.add_argument("--no-storm", action="store_true", help="skip the connect storm")
    parser.add_argument(
        "--connect-only",
        action="store_true",
        help="only the connect phases (one user, distinct users): no publish phase",
    )
    parser.add_argument(
        "--no-deflate", action="store_true", help="clients do not offer permessage-deflate"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample Python servers with py-spy at saturation (results/profiles/; perturbs)",
    )
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/)")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else Plan()
    changes: dict[str, Any] = {}
    if args.clients:
        changes["clients"] = tuple(int(c) for c in args.clients.split(","))
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.rate:
        changes["rate"] = args.rate
    if args.window_deliveries:
        changes["window_deliveries"] = args.window_deliveries
    if args.procs:
        changes["procs"] = args.procs
    if args.bytes:
        changes["bytes"] = args.bytes
    if args.rooms:
        changes["rooms"] = tuple(r.strip() for r in args.rooms.split(","))
    if getattr(args, "no_storm", False):
        changes["storm"] = False
    if getattr(args, "connect_only", False):
        changes["connect_only"] = True
    if args.no_deflate:
        changes["deflate"] = False
    if getattr(args, "profile", False):
        changes["profile"] = True
    return replace(plan, **changes)


def targets_from(spec: str) -> list[str]:
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS)}")
    return targets


def prepare(targets: Sequence[str]) -> float:
    """Install the Node packages needed; returns the machine's background CPU use."""
    ensure_node(LOADGEN)
    if "node" in targets:
        ensure_node(NODE_SERVER)
    busy = machine_busy_pct()
    if busy > 20:
        progress(
            f"warning: the machine is already busy ({busy:.0f} % of a core in use by "
            "other processes): absolute figures will be low and noisy"
        )
    return busy


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_from(args)
    targets = targets_from(args.target)
    background = prepare(targets)
    results: dict[str, Any] = {
        "benchmark": "fanout",
        "machine": machine_info(),
        "background_cpu_pct": round(background, 1),
        "plan": asdict(plan) | {"windows": {c: plan.window(c) for c in plan.clients}},
        "gateway_flags": list(GATEWAY_FLAGS),
        "runs": [],
        "storms": [],
    }
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        logdir = Path(tmp)
        for target in targets:
            for clients in plan.clients:
                results["runs"].append(await run_fanout(target, clients, plan, logdir))
        if plan.storm:
            for target in targets:
                for clients in plan.clients:
                    results["storms"].append(await run_storm(target, clients, plan, logdir))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(run(args), print_report, args.output or RESULTS)


def stop_on_signals() -> None:
    """Ctrl-C and ``kill <pid>`` stop a benchmark, and with it every process it started (SIGINT
    too when started in the background, where the shell would have it ignored)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


if __name__ == "__main__":
    stop_on_signals()
    raise SystemExit(main())
