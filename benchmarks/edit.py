"""Editors typing into one document through the gateway: acknowledged writes per second and
how long each ack takes. ``.venv/bin/python -m benchmarks.edit [--quick] [--editors 1,10,100]``.

Not part of the test suite. One gateway (``python -m gateway``, ``--store memory://``, event
rate limits off: an editor here types as fast as its acks come back), and the Node load
generator (``benchmarks/loadgen/clients.mjs``) holding N editors, each a socket of its own
user of one company. For every N and mode, a fresh document (strategy ``merge``, ``notes`` a
text field) holds one line per editor (``e<i>: `` and 24 characters); each editor types into
its own line, one character per write (``document:update`` with an ack, carrying the whole
document as the editor holds it). Every write is broadcast as ``document:updated`` to the
other editors.

- ``current`` (the fast path): the editors take turns; each writes as soon as it learns of the
  version it follows (the previous editor's broadcast, or its own ack with one editor), so
  every write is based on the current version and is ``applied`` as is. One write is in
  flight at a time: writes/s is 1 / (ack + broadcast to the next editor);
- ``stale`` (merges): every editor writes again as soon as its ack arrives, based on the
  version *before* the newest it knows, so every write is at least one version behind and
  takes the merge path (the text diffed against its base, merged character by character into
  the current state);
- ``concurrent``: as ``stale`` but based on the newest version the editor knows, what N
  uncoordinated typists do; with more than one editor, writes crossing in flight arrive stale
  and are merged (the ``applied %`` column).

The editors offer permessage-deflate, as browsers do (see ``fanout``). Reported over the
measured window (after a warm-up): acknowledged writes/s, the ack latency
(send to ack, in the editor's process), the share applied on the fast path, the broadcasts
received per second, and the CPU of the gateway and of the generator (as in ``fanout``).

Prints a table and writes ``benchmarks/results/edit.json``. ``--quick``: under 2 minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import fmt, machine_info, print_table, progress
from benchmarks.fanout import (
    GATEWAY_FLAGS,
    LOADGEN,
    Loadgen,
    Server,
    digest,
    ensure_node,
    machine_busy_pct,
    ms,
    run_benchmark,
    stop_on_signals,
    verdict,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "edit.json"
MODES = ("current", "stale", "concurrent")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short phases (< 2 minutes)")
    parser.add_argument("--editors", default="1,10,100", help="editor counts (default 1,10,100)")
    parser.add_argument("--modes", default=",".join(MODES), help="current, stale or both")
    parser.add_argument("--seconds", type=float, help="measured seconds per case (default 5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per case (default 1)")
    parser.add_argument("--procs", type=int, default=1, help="loadgen worker processes")
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/)")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    editors = [int(n) for n in args.editors.split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in MODES for m in modes):
        raise SystemExit(f"modes: {', '.join(MODES)}")
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    ensure_node(LOADGEN)
    background = machine_busy_pct()
    if background > 20:
        progress(f"warning: the machine is already busy ({background:.0f} % of a core in use)")
    results: dict[str, Any] = {
        "benchmark": "edit",
        "machine": machine_info(),
        "background_cpu_pct": round(background, 1),
        "config": {
            "editors": editors,
            "modes": modes,
            "seconds": seconds,
            "warmup": warmup,
            "procs": args.procs,
        },
        "gateway_flags": list(GATEWAY_FLAGS),
        "cases": [],
    }
    with tempfile.TemporaryDirectory(prefix="edit-") as tmp:
        server = Server("gateway", Path(tmp))
        try:
            await server.start()
            for n in editors:
                loadgen = Loadgen(server.url, procs=args.procs, server_pid=server.pid, deflate=True)
                try:
                    await loadgen.start()
                    connect = await loadgen.command(
                        cmd="connect", clients=n, users="distinct", concurrency=100, within=120
                    )
                    if connect["connected"] < n:
                        raise RuntimeError(
                            f"{connect['connected']}/{n} editors connected: {connect['errors']}"
                        )
                    for mode in modes:
                        progress(f"{n} editor(s), {mode}: {seconds:g} s")
                        case = await loadgen.command(
                            cmd="edit",
                            mode=mode,
                            documentId=f"edit-{n}-{mode}-{time.time_ns()}",
                            warmup=warmup,
                            seconds=seconds,
                            within=warmup + seconds + 120,
                        )
                        case = digest(case)
                        case["bound_by"] = verdict(case)  # closed loop: a saturation phase
                        results["cases"].append(case)
                finally:
                    await loadgen.close()
            results["rss_mib"] = {"end": server.rss_mib(), "peak": server.peak_mib()}
        finally:
            await server.stop()
    return results


def print_report(results: dict[str, Any]) -> None:
    cfg = results["config"]
    rows = []
    for c in results["cases"]:
        statuses = c["statuses"]
        total = sum(statuses.values()) or 1
        cpu = c["cpu_summary"]
        errors = sum(c["errors"].values())
        rows.append(
            [
                fmt(c["editors"]),
                c["mode"],
                fmt(c["writes_per_s"]),
                fmt(100 * statuses.get("applied", 0) / total),
                ms(c["ack_latency"]["p50_ms"]),
                ms(c["ack_latency"]["p99_ms"]),
                ms(c["ack_latency"]["max_ms"]),
                fmt(c["deliveries_per_s"]),
                fmt(c["document_bytes"]),
                fmt(errors),
                fmt(cpu["server_pct"]),
                fmt(cpu["loadgen_pct"]),
                fmt(cpu["others_pct"]),
                c["bound_by"],
            ]
        )
    print_table(
        f"Editors typing into one document through the gateway (acked writes; current: turns, "
        f"stale and concurrent: each editor closed loop; "
        f"{cfg['seconds']:g} s after {cfg['warmup']:g} s warm-up)",
        [
            "editors",
            "mode",
            "acked writes/s",
            "applied %",
            "p50 ms",
            "p99 ms",
            "max ms",
            "broadcasts recv/s",
            "doc bytes",
            "errors",
            "server CPU %",
            "loadgen CPU %",
            "others %",
            "bound by",
        ],
        rows,
    )
    print(
        "\napplied: fast path (the write's version was current); the rest were merged. "
        "CPU % is of one core (see benchmarks/fanout.py).",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_benchmark(run(args), print_report, args.output or RESULTS)


if __name__ == "__main__":
    stop_on_signals()
    raise SystemExit(main())
