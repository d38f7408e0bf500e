"""The gateway against a stock python-socketio server and Node's socket.io, on the same fan-out
workload, in one run: ``.venv/bin/python -m benchmarks.compare [--quick] [--rounds N]``.

Not part of the test suite. The workload is ``benchmarks/fanout.py``'s (C sockets of one user
in the company room and in one document room; a fixed rate of 10 publishes/s, then
saturation with a bounded window; the same Node load generator), run against

- ``gateway``: ``python -m gateway`` (``--store memory://``, limits a benchmark trips off);
- ``stock``: ``benchmarks/baselines/stock_server.py``, python-socketio's ``AsyncServer`` on
  aiohttp with its defaults;
- ``node``: ``benchmarks/baselines/node_server/server.mjs``, socket.io 4 on Node.

Runs alternate (gateway, stock, node, gateway, stock, node, ...) over ``--rounds`` rounds per
room size, so a change in the machine's load falls on all three alike; every figure printed is
the median over the rounds, and the ratios are of those medians, all from this one run (the
per-round spread of each ratio is in the JSON). Absolute numbers are this machine's; the
ratios are the result.

Prints tables, writes ``benchmarks/results/compare.json`` and, with matplotlib installed,
``benchmarks/results/compare.png`` (deliveries/s by C, per server and room). A full run takes
about 8 minutes, ``--quick`` under 2.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from benchmarks.common import fmt, machine_info, print_table, progress
from benchmarks.fanout import (
    GATEWAY_FLAGS,
    TARGETS,
    Plan,
    drive,
    ms,
    plot_deliveries,
    prepare,
    run_fanout,
    shown,
    stop_on_signals,
    trouble,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "compare.json"
PLOT = HERE / "results" / "compare.png"

#: 10 s at 10 publishes/s: 100 events a round, so that p99 is not just the worst of a few
#: (at 3 s it was, in effect, the worst of 30 events: it moved more between rounds than the
#: servers differed).
FULL = Plan(rate_seconds=10.0, warmup=1.0, seconds=4.0, storm=False)
QUICK = Plan(rate_seconds=2.0, warmup=0.5, seconds=2.0, storm=False)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def figure(run: dict[str, Any], room: str, mode: str, key: str) -> float | None:
    phase = run["phases"].get(room, {}).get(mode)
    if phase is None:
        return None
    if key == "deliveries_per_s":
        return float(phase["deliveries_per_s"])
    value = phase["latency"].get(key)
    return None if value is None else float(value)


def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (C, room): each server's medians, the ratios of the medians, and each ratio's
    per-round range."""
    plan = results["plan"]
    rows = []
    for clients in plan["clients"]:
        for room in plan["rooms"]:
            runs = {
                t: [r for r in results["runs"] if r["target"] == t and r["clients"] == clients]
                for t in TARGETS
            }
            row: dict[str, Any] = {"clients": clients, "room": room}
            for key, mode in (
                ("deliveries_per_s", "saturate"),
                ("p99_ms", "rate"),
                ("p50_ms", "rate"),
                ("p99_ms_saturated", "saturate"),
            ):
                source = "p99_ms" if key == "p99_ms_saturated" else key
                per_target = {t: [figure(r, room, mode, source) for r in runs[t]] for t in TARGETS}
                med = {t: median(v) for t, v in per_target.items()}
                row[key] = med
                row[f"{key}_ratios"] = {
                    "gateway/node": ratio(med["gateway"], med["node"]),
                    "gateway/stock": ratio(med["gateway"], med["stock"]),
                    "stock/node": ratio(med["stock"], med["node"]),
                }
                rounds = list(
                    zip(
                        per_target["gateway"], per_target["stock"], per_target["node"], strict=False
                    )
                )
                row[f"{key}_ratio_range"] = {
                    "gateway/node": _range([ratio(g, n) for g, _, n in rounds]),
                    "gateway/stock": _range([ratio(g, s) for g, s, _ in rounds]),
                }
            row["server_cpu_pct"] = {
                t: median(
                    [(r["phases"][room]["saturate"]["cpu_summary"]["server_pct"]) for r in runs[t]]
                )
                for t in TARGETS
            }
            row["others_pct_max"] = max(
                (
                    r["phases"][room]["saturate"]["cpu_summary"]["others_pct"] or 0
                    for t in TARGETS
                    for r in runs[t]
                ),
                default=None,
            )
            row["bound_by"] = {
                t: [r["phases"][room]["saturate"]["bound_by"] for r in runs[t]] for t in TARGETS
            }
            rows.append(row)
    return rows


def _mode(verdicts: list[str | None]) -> str:
    """The most frequent verdict over the rounds."""
    counted = Counter(v or "-" for v in verdicts)
    return counted.most_common(1)[0][0] if counted else "-"


def _range(values: list[float | None]) -> list[float] | None:
    present = [v for v in values if v is not None]
    return [min(present), max(present)] if present else None


def x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def print_report(results: dict[str, Any]) -> None:
    summary = results["summary"]
    plan = results["plan"]
    rounds = results["rounds"]
    print_table(
        f"Deliveries/s at saturation (median of {rounds} round(s); {plan['bytes']}-byte events; "
        f"{plan['seconds']:g} s per phase)",
        [
            "C",
            "room",
            "gateway",
            "stock",
            "node",
            "gateway/node",
            "gateway/stock",
            "stock/node",
            "server CPU % g/s/n",
            "bound by (most rounds)",
            "others % max",
        ],
        [
            [
                fmt(r["clients"]),
                r["room"],
                *(fmt(r["deliveries_per_s"][t]) for t in TARGETS),
                *(
                    x(r["deliveries_per_s_ratios"][k])
                    for k in ("gateway/node", "gateway/stock", "stock/node")
                ),
                "/".join(fmt(r["server_cpu_pct"][t], 0) for t in TARGETS),
                "/".join(_mode(r["bound_by"][t]) for t in TARGETS),
                fmt(r["others_pct_max"], 0),
            ]
            for r in summary
        ],
    )
    print_table(
        f"Delivery latency at {plan['rate']:g} publishes/s (ms; median of {rounds} round(s))",
        [
            "C",
            "room",
            "p50 gateway",
            "p50 stock",
            "p50 node",
            "p99 gateway",
            "p99 stock",
            "p99 node",
            "p99 gateway/node",
            "p99 gateway/stock",
        ],
        [
            [
                fmt(r["clients"]),
                r["room"],
                *(ms(r["p50_ms"][t]) for t in TARGETS),
                *(ms(r["p99_ms"][t]) for t in TARGETS),
                x(r["p99_ms_ratios"]["gateway/node"]),
                x(r["p99_ms_ratios"]["gateway/stock"]),
            ]
            for r in summary
        ],
    )
    print_table(
        "p99 latency at saturation (ms; a bounded queue: window/C events in flight)",
        ["C", "room", "gateway", "stock", "node"],
        [
            [fmt(r["clients"]), r["room"], *(ms(r["p99_ms_saturated"][t]) for t in TARGETS)]
            for r in summary
        ],
    )
    deflate = {
        t: {r["connect"].get("deflate") for r in results["runs"] if r["target"] == t}
        for t in TARGETS
    }
    print(
        "\npermessage-deflate negotiated: "
        + ", ".join(f"{t} {'/'.join(str(v) for v in sorted(deflate[t], key=str))}" for t in TARGETS)
        + f". Machine busy before the run: {results['background_cpu_pct']:g} % of a core. "
        "others % max: the most CPU the rest of the machine (other processes, kernel "
        "networking) took during a saturation window of that row; where it is high, the "
        "servers were squeezed.",
        flush=True,
    )
    for line in trouble({"runs": results["runs"], "storms": []}):
        print(f"warning: {line}", flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="one round, short phases")
    parser.add_argument("--rounds", type=int, help="rounds per room size (default 3, quick 1)")
    parser.add_argument("--clients", help="room sizes, comma-separated (default 100,1000)")
    parser.add_argument("--seconds", type=float, help="measured seconds per saturation phase")
    parser.add_argument(
        "--rate-seconds", type=float, help="seconds of the fixed-rate phase (default 10)"
    )
    parser.add_argument("--procs", type=int, help="loadgen worker processes (default 1)")
    parser.add_argument("--rooms", help="company, document or both (default both)")
    parser.add_argument(
        "--no-deflate", action="store_true", help="clients do not offer permessage-deflate"
    )
    parser.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/)")
    parser.add_argument("--plot", type=Path, help="PNG file (default benchmarks/results/)")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    changes: dict[str, Any] = {}
    if args.clients:
        changes["clients"] = tuple(int(c) for c in args.clients.split(","))
    if args.seconds:
        changes["seconds"] = args.seconds
    if args.rate_seconds:
        changes["rate_seconds"] = args.rate_seconds
    if args.procs:
        changes["procs"] = args.procs
    if args.rooms:
        changes["rooms"] = tuple(r.strip() for r in args.rooms.split(","))
    if args.no_deflate:
        changes["deflate"] = False
    return replace(plan, **changes)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = plan_from(args)
    rounds = args.rounds or (1 if args.quick else 3)
    background = prepare(TARGETS)
    results: dict[str, Any] = {
        "benchmark": "compare",
        "machine": machine_info(),
        "background_cpu_pct": round(background, 1),
        "plan": asdict(plan) | {"windows": {c: plan.window(c) for c in plan.clients}},
        "rounds": rounds,
        "order": "for each room size: rounds x (gateway, stock, node)",
        "gateway_flags": list(GATEWAY_FLAGS),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        for clients in plan.clients:
            for r in range(rounds):
                for target in TARGETS:
                    progress(f"round {r + 1}/{rounds}")
                    run_ = await run_fanout(target, clients, plan, Path(tmp))
                    results["runs"].append(run_ | {"round": r})
    results["summary"] = summarize(results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    done = drive(run(args), print_report, args.output or RESULTS)
    if done is None:
        return 130
    results, out = done
    plot = plot_deliveries(
        results,
        args.plot or PLOT,
        f"Fan-out at saturation, {results['machine']['cores']} cores (median of "
        f"{results['rounds']} round(s))",
    )
    for path in (out, plot):
        if path is not None:
            print(f"wrote {shown(path)}")
    print(f"({results['elapsed_s']:g} s)", flush=True)
    return 0


if __name__ == "__main__":
    stop_on_signals()
    raise SystemExit(main())
