"""Helpers shared by the benchmarks: measurement loops, percentiles, plain-text tables, JSON
results and a description of the machine they ran on.

Conventions: every duration is taken with ``time.perf_counter_ns``; a sequential loop runs a
fixed number of untimed warm-up operations, then a fixed number of timed ones, each phase with
a time cap; concurrent workers run for a fixed time after a warm-up time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from time import perf_counter_ns, process_time_ns
from typing import Any, Literal, TypeVar

T = TypeVar("T")

NS_PER_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Budget:
    """How much one sequential scenario measures: ``warmup`` untimed operations, then
    ``count`` timed ones; each phase is cut short after ``max_seconds`` (the result then says
    ``truncated``). Counts rather than durations, so that every run does the same work: some
    costs grow with a document's history, and a time budget would make them machine-dependent.
    """

    count: int
    warmup: int = 0
    max_seconds: float = math.inf


@dataclass(frozen=True, slots=True)
class Stats:
    """Latencies of ``count`` operations and the rate they give.

    ``rate_basis`` says what the rate divides by: ``busy`` (the sum of the operations' own
    times, for a sequential loop whose untimed input preparation must not count) or ``wall``
    (the elapsed time of the whole measurement, for concurrent workers).
    """

    count: int
    busy_ns: int
    wall_ns: int
    rate_basis: Literal["busy", "wall"]
    #: Mean of the first and of the last tenth of the operations, in the order they ran.
    first_tenth_us: float
    last_tenth_us: float
    min_us: float
    mean_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    #: CPU time of the whole process during the measurement (all threads): well below
    #: ``wall_ns`` in a CPU-bound loop means other processes were taking the CPU.
    cpu_ns: int = 0
    #: Stopped by ``Budget.max_seconds`` before ``Budget.count`` operations.
    truncated: bool = False

    @property
    def rate(self) -> float:
        """Operations per second."""
        span = self.busy_ns if self.rate_basis == "busy" else self.wall_ns
        return self.count * NS_PER_S / span if span else math.inf

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate_per_s": self.rate}


def percentile(ordered: Sequence[int], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of an already sorted sequence."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def _mean_us(values: Sequence[int]) -> float:
    return sum(values) / len(values) / 1e3 if values else math.nan


def summarize(
    latencies_ns: list[int],
    wall_ns: int,
    basis: Literal["busy", "wall"],
    truncated: bool = False,
    cpu_ns: int = 0,
) -> Stats:
    """Stats of latencies given in the order the operations ran."""
    ordered = sorted(latencies_ns)
    n = len(ordered)
    busy = sum(ordered)
    tenth = max(1, n // 10)
    return Stats(
        count=n,
        busy_ns=busy,
        wall_ns=wall_ns,
        rate_basis=basis,
        first_tenth_us=_mean_us(latencies_ns[:tenth]),
        last_tenth_us=_mean_us(latencies_ns[-tenth:]),
        min_us=ordered[0] / 1e3 if n else math.nan,
        mean_us=busy / n / 1e3 if n else math.nan,
        p50_us=percentile(ordered, 50) / 1e3,
        p90_us=percentile(ordered, 90) / 1e3,
        p99_us=percentile(ordered, 99) / 1e3,
        max_us=ordered[-1] / 1e3 if n else math.nan,
        cpu_ns=cpu_ns,
        truncated=truncated,
    )


class _Clock:
    """Counts a phase's operations against its budget."""

    def __init__(self, count: int, max_seconds: float) -> None:
        self.left = count
        self.deadline = perf_counter_ns() + max_seconds * NS_PER_S
        self.truncated = False

    def more(self) -> bool:
        if self.left <= 0:
            return False
        if perf_counter_ns() > self.deadline:
            self.truncated = True
            return False
        self.left -= 1
        return True


def run_sync(prepare: Callable[[int], T], op: Callable[[T], object], budget: Budget) -> Stats:
    """Time ``op(prepare(i))`` for i = 0, 1, ...; only ``op`` is timed."""
    i = 0
    warm = _Clock(budget.warmup, budget.max_seconds)
    while warm.more():
        op(prepare(i))
        i += 1
    latencies: list[int] = []
    clock = _Clock(budget.count, budget.max_seconds)
    start, cpu = perf_counter_ns(), process_time_ns()
    while clock.more():
        arg = prepare(i)
        t0 = perf_counter_ns()
        op(arg)
        latencies.append(perf_counter_ns() - t0)
        i += 1
    wall, cpu = perf_counter_ns() - start, process_time_ns() - cpu
    return summarize(latencies, wall, "busy", warm.truncated or clock.truncated, cpu)


async def run_async(
    prepare: Callable[[int], T],
    op: Callable[[T], Awaitable[object]],
    budget: Budget,
    on_measure: Callable[[], None] | None = None,
) -> Stats:
    """Time ``await op(prepare(i))`` for i = 0, 1, ...; only ``op`` is timed.
    ``on_measure`` is called once, between the warm-up and the measurement."""
    i = 0
    warm = _Clock(budget.warmup, budget.max_seconds)
    while warm.more():
        await op(prepare(i))
        i += 1
    if on_measure is not None:
        on_measure()
    latencies: list[int] = []
    clock = _Clock(budget.count, budget.max_seconds)
    start, cpu = perf_counter_ns(), process_time_ns()
    while clock.more():
        arg = prepare(i)
        t0 = perf_counter_ns()
        await op(arg)
        latencies.append(perf_counter_ns() - t0)
        i += 1
    wall, cpu = perf_counter_ns() - start, process_time_ns() - cpu
    return summarize(latencies, wall, "busy", warm.truncated or clock.truncated, cpu)


Worker = tuple[Callable[[], Awaitable[T]], Callable[[T], Awaitable[object]]]


async def run_concurrent(
    workers: Sequence[Worker[Any]], seconds: float, warmup_seconds: float = 0.0
) -> Stats:
    """Run every ``(prepare, op)`` worker as its own task, each looping ``await op(await
    prepare())`` (only ``op`` timed): first for the warm-up time, then for the measurement
    time, after which each worker finishes the operation it is in. The rate is per wall time.
    """

    async def loop(
        prepare: Callable[[], Awaitable[Any]],
        op: Callable[[Any], Awaitable[object]],
        seconds: float,
        out: list[int],
    ) -> None:
        deadline = perf_counter_ns() + seconds * NS_PER_S
        while perf_counter_ns() < deadline:
            arg = await prepare()
            t0 = perf_counter_ns()
            await op(arg)
            out.append(perf_counter_ns() - t0)

    if warmup_seconds > 0:
        scratch: list[int] = []
        await asyncio.gather(*(loop(p, o, warmup_seconds, scratch) for p, o in workers))
    latencies: list[int] = []
    start, cpu = perf_counter_ns(), process_time_ns()
    await asyncio.gather(*(loop(p, o, seconds, latencies) for p, o in workers))
    wall, cpu = perf_counter_ns() - start, process_time_ns() - cpu
    return summarize(latencies, wall, "wall", cpu_ns=cpu)


# -- output ----------------------------------------------------------------------------------


def fmt(value: float | int | None, digits: int = 1) -> str:
    """A number for a table: thousands separated, ``-`` for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A plain-text table; ``align`` holds one ``l`` or ``r`` per column (default: the first
    column left, the others right)."""
    cols = len(headers)
    align = align or "l" + "r" * (cols - 1)
    widths = [max(len(str(x)) for x in [headers[c], *(r[c] for r in rows)]) for c in range(cols)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(v).ljust(w) if a == "l" else str(v).rjust(w)
            for v, w, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


@dataclass(frozen=True, slots=True)
class Column:
    """One column of :func:`print_rows`: its header, ``l``/``r`` alignment, and its cell."""

    header: str
    align: str
    cell: Callable[[Any], str]


def key_col(header: str, key: str, align: str = "l") -> Column:
    """A column showing ``row[key]``."""
    return Column(header, align, lambda r: str(r[key]))


def stat_col(header: str, attr: str, digits: int = 1) -> Column:
    """A column showing an attribute of the row's :class:`Stats` (``row["stats"]``)."""
    return Column(header, "r", lambda r: fmt(getattr(r["stats"], attr), digits))


def timing_cols(rate: str = "writes/s") -> list[Column]:
    """Rate, p50 and p99 latency, how the mean moved from the first to the last tenth of the
    run (``*`` marks a measurement cut short by its time cap), and the process's CPU time as
    a share of the wall time (about 100% for a CPU-bound loop with a core to itself; less
    when it waits on a disk, or when other processes take the CPU)."""
    cpu = Column(
        "cpu%", "r", lambda r: f"{100 * r['stats'].cpu_ns / max(1, r['stats'].wall_ns):.0f}"
    )
    trend = Column(
        "1st→last 10% µs",
        "r",
        lambda r: (
            f"{fmt(r['stats'].first_tenth_us)}→{fmt(r['stats'].last_tenth_us)}"
            + ("*" if r["stats"].truncated else "")
        ),
    )
    timing = [stat_col(rate, "rate"), stat_col("p50 µs", "p50_us"), stat_col("p99 µs", "p99_us")]
    return [*timing, trend, cpu]


def print_rows(title: str, rows: Sequence[Any], columns: Sequence[Column]) -> None:
    """A titled table with one line per row, its cells given by ``columns``."""
    print_table(
        title,
        [c.header for c in columns],
        [[c.cell(r) for c in columns] for r in rows],
        "".join(c.align for c in columns),
    )


def print_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = ""
) -> None:
    print(f"\n{title}\n")
    print(format_table(headers, rows, align), flush=True)


def jsonable(value: Any) -> Any:
    """``value`` with every :class:`Stats` (with its rate) and other dataclass expanded."""
    if isinstance(value, Stats):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` (see :func:`jsonable`) as indented, strict JSON, creating the folder;
    returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(jsonable(payload)), indent=2, default=str, allow_nan=False)
    out.write_text(text + "\n", encoding="utf-8")
    return out


_STARTED = perf_counter_ns()


def progress(message: str) -> None:
    """A progress line on stderr, with the seconds since start (the results go to stdout)."""
    print(f"[{(perf_counter_ns() - _STARTED) / 1e9:6.1f}s] {message}", file=sys.stderr, flush=True)


# -- the machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def filesystem_of(path: str | os.PathLike[str]) -> str | None:
    """The type of the filesystem holding ``path`` (ext4, tmpfs, ...), from /proc/mounts."""
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mount, fstype, *_ = line.split()
            if (target == mount or target.startswith(mount.rstrip("/") + "/")) and (
                best is None or len(mount) > best[0]
            ):
                best = (len(mount), fstype)
    except OSError:
        return None
    return best[1] if best else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(cwd: Path, *args: str) -> str | None:
    """The output of a read-only git command, or ``None``."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (other processes competing for the CPU)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(tmpdir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """CPU, cores, load, Python, key package versions, date, git commit; and the filesystem of
    ``tmpdir``."""
    import sqlite3

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "pycrdt": _version("pycrdt"),
        "orjson": _version("orjson"),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
    }
    here = Path(__file__).resolve().parent
    changes = _git(here, "status", "--porcelain", "--untracked-files=no")
    info["git_commit"] = _git(here, "rev-parse", "HEAD")
    info["git_uncommitted_changes"] = None if changes is None else bool(changes)
    if tmpdir is not None:
        info["tmpdir"] = str(tmpdir)
        info["tmpdir_filesystem"] = filesystem_of(tmpdir)
    return info
