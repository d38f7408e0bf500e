"""The engine's write and merge paths, measured: ``python -m benchmarks.merge [--quick]``.

Scenarios (each prints a table; everything measured goes to the JSON file):

1. ``paths``: sequential writes for each strategy through the JSON fast path (one field, or
   one keystroke, changed at the current version), stale JSON writes (two editors writing in
   turn, each from the version its own last write produced, so one version behind: ``merge``
   types into the text, ``last-write-wins`` sets scalar fields and every other write
   conflicts, ``manual`` sets disjoint fields, which merge) and the CRDT-native path (a pycrdt
   replica typing and sending Yjs update messages to ``Engine.sync``; the engine does not
   consult the strategy there, so it runs once); on small documents (10 fields, one of them
   a ~200-character text) and large ones (1,000 fields, one of them a 100 KB text), with the
   memory store and the SQLite store (a file in ``--tmpdir``).
2. ``raw``: the same operations done directly with pycrdt on a Doc of the same size (the
   floor), and the engine/raw ratio of mean times.
3. ``concurrent``: 1, 8 and 64 asyncio writers on SQLite, fast path, each on its own document
   or all on one; writes/s and acknowledgement latency.
4. ``stale10k``: stale text merges (``merge``, one or two versions behind) on a 10 KB text.
5. ``replay``: the automerge-paper trace keystroke by keystroke (memory store), through the
   JSON fast path and the CRDT-native path, ending at the trace's text.

Each sequential scenario makes a fixed number of writes (see ``QUICK`` and ``FULL``) on a
fresh document: some costs grow with a document's history, so counts, not durations, keep runs
comparable (the ``1st→last 10%`` column shows the growth). A sequential figure times the
engine call plus one event-loop turn (``await asyncio.sleep(0)``, which runs the
acknowledgement callbacks and any compaction they spawn, as a server's loop would); preparing
the next input is not timed, and writes/s = writes / timed sum. Concurrent figures are per
wall time. Typing edits type 31 characters forward, then delete them in one edit, so a text
keeps its nominal size. The machine may be shared: the run ends with a contention check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import sys
import tempfile
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text, TransactionEvent

from benchmarks.common import (
    Budget,
    Column,
    Stats,
    Worker,
    fmt,
    key_col,
    load_average,
    machine_info,
    print_rows,
    progress,
    run_async,
    run_concurrent,
    run_sync,
    stat_col,
    timing_cols,
    write_json,
)
from collab import traces, ydoc, yjs
from collab.engine import Engine
from collab.model import Author, Outcome, Write
from collab.store import MemoryStore, SQLiteStore

COMPANY = "acme"
AUTHORS = [Author(f"u-{n}", n.title(), COMPANY) for n in ("ann", "bob", "cid")]
TEXT = "notes"
BURST = 32
WORDS = "site crew pour slab rebar inspect beam crane order invoice permit delay".split()
STRATEGY_NAMES = ("last-write-wins", "merge", "manual")
SCENARIOS = ("raw", "paths", "concurrent", "stale10k", "replay")
# The targets: the rows the fast-path ones are judged on, and their names.
FAST_TARGET = ("memory", "small", "fast")
FAST_NAME = "JSON fast path, memory store, small doc"
RATIO_NAME = "engine/raw pycrdt, fast path (memory, small doc)"
DURABLE_NAME = "durable writes, concurrent writers (SQLite)"
STALE_NAME = "stale text merge, 10 KB text (memory)"

TRACE = "automerge-paper"


@dataclass(frozen=True, slots=True)
class Size:
    name: str
    fields: int  # top-level fields, the text field included
    text_chars: int


SMALL = Size("small", 10, 200)
LARGE = Size("large", 1000, 100_000)
TEXT_10K = Size("10KB", 10, 10_000)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much each kind of scenario measures (a stale write costs far more than a fast one;
    a large document far more than a small one)."""

    fast: Budget  # fast-path and CRDT-native writes, and their raw floors
    fast_large: Budget
    stale: Budget  # stale writes, and the fork floors
    stale_large: Budget
    concurrent_seconds: float
    concurrent_warmup: float
    replay_txns: int | None  # None: the whole trace

    def budget(self, stale: bool, size: Size) -> Budget:
        if stale:
            return self.stale_large if size is LARGE else self.stale
        return self.fast_large if size is LARGE else self.fast


QUICK = Plan(
    fast=Budget(500, warmup=50, max_seconds=2),
    fast_large=Budget(200, warmup=20, max_seconds=2),
    stale=Budget(100, warmup=20, max_seconds=2),
    stale_large=Budget(30, warmup=5, max_seconds=2),
    concurrent_seconds=1.0,
    concurrent_warmup=0.2,
    replay_txns=20_000,
)
FULL = Plan(
    fast=Budget(5_000, warmup=500, max_seconds=30),
    fast_large=Budget(2_000, warmup=200, max_seconds=30),
    stale=Budget(1_000, warmup=100, max_seconds=30),
    stale_large=Budget(300, warmup=30, max_seconds=30),
    concurrent_seconds=3.0,
    concurrent_warmup=0.5,
    replay_txns=None,
)


def field_name(i: int) -> str:
    return f"f{i:04d}"


def scalar(i: int, gen: int) -> Any:
    """Field ``i``'s value in generation ``gen``: ints, strings, floats and booleans."""
    kind = i % 4
    if kind == 0:
        return gen * 1000 + i
    if kind == 1:
        return f"item-{i}-{gen}"
    if kind == 2:
        return i + gen + 0.25
    return (i + gen) % 2 == 0


def make_data(size: Size) -> dict[str, Any]:
    data = {field_name(i): scalar(i, 0) for i in range(size.fields - 1)}
    words = itertools.cycle(WORDS)
    text = ""
    while len(text) < size.text_chars:
        text += next(words) + " "
    data[TEXT] = text[: size.text_chars]
    return data


# -- edits -----------------------------------------------------------------------------------


class Typist:
    """Types BURST-1 characters forward from an anchor (its slot's share of the text), then
    deletes them in one edit. ``next`` gives (position, deleted, inserted) in characters."""

    def __init__(self, slot: int = 0, slots: int = 1) -> None:
        self.slot, self.slots, self.step, self.anchor = slot, slots, 0, 0

    def next(self, length: int) -> tuple[int, int, str]:
        n = self.step % BURST
        self.step += 1
        if n == 0:
            self.anchor = length * (self.slot + 1) // (self.slots + 1)
        if n == BURST - 1:
            return self.anchor, min(BURST - 1, length - self.anchor), ""
        return self.anchor + n, 0, chr(ord("a") + n % 26)


def splice(text: str, pos: int, delete: int, insert: str) -> str:
    return text[:pos] + insert + text[pos + delete :]


def edit_ytext(text: Text, pos: int, delete: int, insert: str) -> None:
    """A typing edit on a Y.Text (ASCII content: character offsets are byte offsets)."""
    if delete:
        del text[pos : pos + delete]
    if insert:
        text.insert(pos, insert)


Edit = Callable[[int, int, dict[str, Any]], dict[str, Any]]  # (editor, i, data) -> new data


def set_field(pick: Callable[[int], int]) -> Edit:
    def edit(_editor: int, i: int, data: dict[str, Any]) -> dict[str, Any]:
        new = dict(data)
        f = pick(i)
        new[field_name(f)] = scalar(f, i + 1)
        return new

    return edit


def type_text(editors: int) -> Edit:
    typists = [Typist(e, editors) for e in range(editors)]

    def edit(editor: int, _i: int, data: dict[str, Any]) -> dict[str, Any]:
        new = dict(data)
        new[TEXT] = splice(data[TEXT], *typists[editor].next(len(data[TEXT])))
        return new

    return edit


# -- the engine side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    path: str  # "fast", "stale" or "crdt"
    strategy: str  # a strategy, or "any" where the engine does not consult it
    edit: str  # "field", "same-field" (both editors of a round set one field), "text"
    editors: int
    raw: str  # the raw pycrdt operation it is compared with


def path_cases() -> list[Case]:
    cases: list[Case] = []
    for s in STRATEGY_NAMES:
        cases += [Case("fast", s, "field", 1, "field"), Case("fast", s, "text", 1, "text")]
        if s == "merge":
            cases.append(Case("stale", s, "text", 2, "fork+text"))
        elif s == "last-write-wins":
            cases.append(Case("stale", s, "same-field", 2, "field"))
        else:
            cases.append(Case("stale", s, "field", 2, "fork+field"))
    cases.append(Case("crdt", "any", "text", 1, "apply"))
    return cases


def edit_for(case: Case, size: Size) -> Edit:
    scalars = size.fields - 1
    if case.edit == "text":
        return type_text(case.editors)
    if case.edit == "same-field":
        return set_field(lambda i: (i // 2) % scalars)
    return set_field(lambda i: i % scalars)


@contextlib.asynccontextmanager
async def running_engine(store: str, tmpdir: Path) -> AsyncIterator[Engine]:
    if store == "memory":
        backend: MemoryStore | SQLiteStore = MemoryStore()
    else:
        backend = SQLiteStore(tmpdir / f"bench-{uuid.uuid4().hex}.db")
    async with Engine(backend) as engine:
        yield engine


async def create_doc(engine: Engine, doc_id: str, strategy: str, data: dict[str, Any]) -> Outcome:
    s = "merge" if strategy == "any" else strategy
    await engine.open("document", doc_id, company_id=COMPANY, strategy=s, text_fields=[TEXT])
    return await engine.write("document", doc_id, Write(0, data, AUTHORS[0]), company_id=COMPANY)


class JsonEditors:
    """``k`` editors writing one document in turn, each from the version (and data) its own
    last write produced: k=1 is the fast path, k=2 one version behind, k=3 two."""

    def __init__(self, engine: Engine, doc_id: str, first: Outcome, k: int, edit: Edit) -> None:
        self.engine, self.doc_id, self.edit = engine, doc_id, edit
        self.views = [(first.version, first.data)] * k
        self.statuses: Counter[str] = Counter()

    def prepare(self, i: int) -> tuple[int, Write]:
        e = i % len(self.views)
        base, data = self.views[e]
        return e, Write(base, self.edit(e, i, data), AUTHORS[e])

    async def op(self, arg: tuple[int, Write]) -> None:
        e, write = arg
        out = await self.engine.write("document", self.doc_id, write, company_id=COMPANY)
        await asyncio.sleep(0)
        self.views[e] = (out.version, out.data)
        self.statuses[out.status + ("/conflicted" if out.conflicted_fields else "")] += 1


class SyncClient:
    """A pycrdt replica of a document, typing into its text and sending each change to the
    engine as a y-protocols update message.

    Like a Yjs client (``doc.on("update")``), it sends the update its transaction produced,
    taken from the document's observer: ``get_update(state_vector)`` would also carry the
    document's whole delete set in every message, which no real client sends.
    """

    def __init__(self, engine: Engine, doc_id: str, field: str = TEXT) -> None:
        self.engine, self.doc_id, self.field = engine, doc_id, field
        self.doc: Doc[Any] = Doc()
        self.typist = Typist()
        self.statuses: Counter[str] = Counter()
        self.length = 0
        self.initial = b""
        self.last_update = b""
        self.subscription = self.doc.observe(self.on_update)

    def on_update(self, event: TransactionEvent) -> None:
        self.last_update = event.update

    async def connect(self) -> None:
        step1 = yjs.create_sync_step1_message(self.doc.get_state())
        res = await self.engine.sync("document", self.doc_id, step1, AUTHORS[0], company_id=COMPANY)
        assert res.reply is not None
        self.initial = yjs.parse(res.reply).payload
        self.doc.apply_update(self.initial)
        self.length = len(str(self.text))

    @property
    def text(self) -> Text:
        t: Text = self.doc.get(ydoc.ROOT, type=Map)[self.field]
        return t

    def prepare(self, _i: int) -> bytes:
        pos, delete, insert = self.typist.next(self.length)
        self.length += len(insert) - delete
        return self.change(lambda: edit_ytext(self.text, pos, delete, insert))

    def change(self, fn: Callable[[], None]) -> bytes:
        """Run ``fn`` in a transaction; the update message it makes."""
        self.last_update = b""
        with self.doc.transaction():
            fn()
        return yjs.create_update_message(self.last_update)

    async def op(self, message: bytes) -> None:
        res = await self.engine.sync(
            "document", self.doc_id, message, AUTHORS[0], company_id=COMPANY
        )
        await asyncio.sleep(0)
        self.statuses["applied" if res.outcome is not None else "no-op"] += 1


async def engine_case(
    store: str, size: Size, case: Case, budget: Budget, tmp: Path
) -> tuple[Stats, dict[str, int]]:
    """One sequential write scenario on a fresh engine and document: its stats and what the
    measured writes did (statuses). Fails if a write took another path than the one meant."""
    async with running_engine(store, tmp) as engine:
        first = await create_doc(engine, "bench", case.strategy, make_data(size))
        if case.path == "crdt":
            client = SyncClient(engine, "bench")
            await client.connect()
            statuses = client.statuses
            stats = await run_async(client.prepare, client.op, budget, statuses.clear)
        else:
            editors = JsonEditors(engine, "bench", first, case.editors, edit_for(case, size))
            statuses = editors.statuses
            stats = await run_async(editors.prepare, editors.op, budget, statuses.clear)
        await engine.drain()
        view = await engine.get("document", "bench", company_id=COMPANY)
    expected = {"fast": "applied", "stale": "merged", "crdt": "applied"}[case.path]
    if any(s.split("/")[0] != expected for s in statuses):
        raise AssertionError(f"{case}: unexpected outcomes {dict(statuses)}")
    if abs(len(view.data[TEXT]) - size.text_chars) > 2 * BURST * case.editors:
        raise AssertionError(f"{case}: the text drifted to {len(view.data[TEXT])} characters")
    return stats, dict(statuses)


# -- the raw pycrdt floor --------------------------------------------------------------------

RawEdit = tuple[str, Any] | tuple[int, int, str]  # (field, value) or (pos, deleted, inserted)


def apply_edit(root: Map[Any], edit: RawEdit) -> None:
    if len(edit) == 2:
        root[edit[0]] = edit[1]
    else:
        edit_ytext(root[TEXT], *edit)


def raw_case(size: Size, op: str, budget: Budget) -> Stats:
    """The pycrdt work a write needs, without the engine, on a Doc of the same size:

    - ``field`` / ``text``: a transaction setting a map field / typing, then ``get_update``;
    - ``fork+field`` / ``fork+text``: a Doc forked from the state one write back (as one of
      two editors' client ids, like the engine's per-author fork ids), the edit there, and
      the fork's update applied to the main Doc (what a stale merge needs);
    - ``apply``: ``apply_update`` of a typing replica's update, as its observer gives it
      (the CRDT-native path).
    """
    state = ydoc.create_state(make_data(size), (TEXT,))
    main: Doc[Any] = Doc()
    main.apply_update(state)
    root: Map[Any] = main.get(ydoc.ROOT, type=Map)
    typist = Typist()
    length = [size.text_chars]

    def next_edit(i: int) -> RawEdit:
        if op.endswith("field"):
            f = i % (size.fields - 1)
            return field_name(f), scalar(f, i + 1)
        pos, delete, insert = typist.next(length[0])
        length[0] += len(insert) - delete
        return pos, delete, insert

    if op in ("field", "text"):

        def local(edit: RawEdit) -> None:
            sv = main.get_state()
            with main.transaction():
                apply_edit(root, edit)
            main.get_update(sv)

        return run_sync(next_edit, local, budget)

    if op.startswith("fork+"):
        states: deque[bytes] = deque(maxlen=2)
        # Two editors in turn, each forking as its own client id: a fork's base (one write
        # behind) always holds that editor's previous operations, so its id can be reused.
        editors = (ydoc.fresh_client_id(), ydoc.fresh_client_id())

        def prepare_fork(i: int) -> tuple[int, bytes, RawEdit]:
            states.append(main.get_update())
            return editors[i % 2], states[0], next_edit(i)  # states[0]: one write behind

        def fork(arg: tuple[int, bytes, RawEdit]) -> None:
            client_id, base, edit = arg
            f: Doc[Any] = Doc(client_id=client_id)
            f.apply_update(base)
            fsv = f.get_state()
            with f.transaction():
                apply_edit(f.get(ydoc.ROOT, type=Map), edit)
            main.apply_update(f.get_update(fsv))

        return run_sync(prepare_fork, fork, budget)

    client: Doc[Any] = Doc()
    client.apply_update(state)
    croot: Map[Any] = client.get(ydoc.ROOT, type=Map)

    sent: list[bytes] = []
    subscription = client.observe(lambda event: sent.append(event.update))

    def prepare_update(i: int) -> bytes:
        with client.transaction():
            apply_edit(croot, next_edit(i))
        return sent.pop()

    stats = run_sync(prepare_update, main.apply_update, budget)
    client.unobserve(subscription)
    return stats


# -- concurrent durable writers --------------------------------------------------------------


async def concurrent_case(n: int, shared: bool, plan: Plan, tmp: Path) -> dict[str, Any]:
    """``n`` writer tasks on SQLite, fast path, each on its own document or all on one.

    Each document has a mirror of its state, advanced when a write is sent: the engine applies
    a document's writes in the order they are sent (one lock, first come first served), so a
    write based on the mirror is at the current version when it is applied, even while the
    writes before it wait for their group commit."""
    statuses: Counter[str] = Counter()
    async with running_engine("sqlite", tmp) as engine:
        ids = [f"c{w}" for w in range(1 if shared else n)]
        firsts = [await create_doc(engine, d, "merge", make_data(SMALL)) for d in ids]
        mirrors: list[dict[str, Any]] = [{"version": o.version, "data": o.data} for o in firsts]
        store = engine.store
        assert isinstance(store, SQLiteStore)
        commits0 = store.commits

        def worker(w: int) -> Worker[Write]:
            doc_id, mirror = (ids[0], mirrors[0]) if shared else (ids[w], mirrors[w])
            f = w % (SMALL.fields - 1)
            gen = itertools.count(1)

            async def prepare() -> Write:
                data = dict(mirror["data"])
                data[field_name(f)] = scalar(f, next(gen))
                write = Write(mirror["version"], data, AUTHORS[w % len(AUTHORS)])
                mirror.update(version=write.base_version + 1, data=data)
                return write

            async def op(write: Write) -> None:
                out = await engine.write("document", doc_id, write, company_id=COMPANY)
                statuses[out.status] += 1

            return prepare, op

        workers = [worker(w) for w in range(n)]
        stats = await run_concurrent(workers, plan.concurrent_seconds, plan.concurrent_warmup)
        commits = store.commits - commits0
    if set(statuses) != {"applied"}:
        raise AssertionError(f"concurrent writers: unexpected outcomes {dict(statuses)}")
    docs = "one shared" if shared else "one each"
    writes = sum(statuses.values())
    return dict(writers=n, documents=docs, stats=stats, writes=writes, commits=commits) | {
        "statuses": dict(statuses)
    }


# -- trace replay ----------------------------------------------------------------------------


async def replay(trace: dict[str, Any], n: int, expected: str, via: str) -> dict[str, Any]:
    """The first ``n`` transactions of a sequential trace through the engine (memory store),
    one JSON write or one Yjs update each; fails unless the text ends as ``expected``."""
    everything = Budget(n)
    updates: list[bytes] = []
    initial = b""
    async with running_engine("memory", Path()) as engine:
        await engine.open("document", "trace", company_id=COMPANY, text_fields=["content"])
        if via == "json":
            texts: Iterator[str] = traces.sequential_texts(trace)
            version = [0]

            def prepare(_i: int) -> Write:
                return Write(version[0], {"content": next(texts)}, AUTHORS[0])

            async def write(w: Write) -> None:
                out = await engine.write("document", "trace", w, company_id=COMPANY)
                await asyncio.sleep(0)
                version[0] = out.version

            stats = await run_async(prepare, write, everything)
        else:
            client = SyncClient(engine, "trace", "content")
            await client.connect()
            initial = client.initial
            text = client.text
            txns = trace["txns"]

            def prepare_sync(i: int) -> bytes:
                message = client.change(lambda: traces.edit_text(text, txns[i]["patches"]))
                updates.append(yjs.parse(message).payload)
                return message

            stats = await run_async(prepare_sync, client.op, everything)
        await engine.drain()
        view = await engine.get("document", "trace", company_id=COMPANY)
    if view.data["content"] != expected:
        raise AssertionError(f"{TRACE} via {via}: the final text is not the trace's")
    result: dict[str, Any] = {"via": via, "txns": n, "stats": stats, "text_matches": True}
    if updates:  # the floor: the same updates applied to a bare Doc
        floor: Doc[Any] = Doc()
        floor.apply_update(initial)
        result["raw"] = run_sync(lambda i: updates[i], floor.apply_update, everything)
    return result


def trace_reference(trace: dict[str, Any], n: int) -> str:
    if n == len(trace["txns"]):
        return str(trace["endContent"])
    text: str = trace.get("startContent", "")
    for txn in trace["txns"][:n]:
        text = traces.apply_patches(text, txn["patches"])
    return text


# -- scenarios -------------------------------------------------------------------------------


def ratio(engine: Stats, raw: Stats | None) -> float | None:
    return engine.mean_us / raw.mean_us if raw is not None and raw.mean_us else None


RAW_MEAN = Column("raw µs", "r", lambda r: fmt(r["raw"].mean_us) if r.get("raw") else "-")
RATIO = Column("engine/raw", "r", lambda r: f"{r['ratio']:.1f}x" if r.get("ratio") else "-")
OUTCOMES = Column("outcomes", "l", lambda r: " ".join(f"{k}:{v}" for k, v in r["statuses"].items()))
PER_COMMIT = Column("writes/commit", "r", lambda r: fmt(r["writes"] / max(1, r["commits"])))
TIMED = Column("timed s", "r", lambda r: fmt(r["stats"].busy_ns / 1e9, 2))
TEXT_OK = Column("final text", "l", lambda r: "matches" if r["text_matches"] else "DIFFERS")
MEASURED = Column("measured", "r", lambda t: f"{fmt(t['measured'])} {t['unit']}")
RESULT = Column("result", "l", lambda t: "PASS" if t["pass_"] else "MISS")
RAW_COLUMNS = [key_col("size", "size"), key_col("operation", "op"), *timing_cols("ops/s")]
RAW_COLUMNS.insert(5, stat_col("mean µs", "mean_us"))
PATH_COLUMNS = [key_col(h, h) for h in ("store", "size", "strategy", "path", "edit")]
PATH_COLUMNS += [*timing_cols(), key_col("raw op", "raw_op"), RAW_MEAN, RATIO, OUTCOMES]
CONCURRENT_COLUMNS = [key_col("documents", "documents"), key_col("writers", "writers", "r")]
CONCURRENT_COLUMNS += [*timing_cols()[:3], PER_COMMIT, timing_cols()[4], OUTCOMES]
STALE_COLUMNS = [key_col("store", "store"), key_col("versions behind", "behind", "r")]
STALE_COLUMNS += [*timing_cols(), RATIO, OUTCOMES]
REPLAY_COLUMNS = [key_col("path", "via"), *timing_cols(), TIMED, RAW_MEAN, RATIO, TEXT_OK]
TARGET_COLUMNS = [key_col("target", "target"), key_col("figure", "which"), MEASURED]
TARGET_COLUMNS += [key_col("threshold", "threshold", "r"), RESULT]


def scenario_raw(plan: Plan) -> dict[tuple[str, str], Stats]:
    ops = ("field", "text", "fork+field", "fork+text", "apply")
    todo = [(size, op) for size in (SMALL, LARGE) for op in ops] + [(TEXT_10K, "fork+text")]
    raw: dict[tuple[str, str], Stats] = {}
    for size, op in todo:
        progress(f"raw pycrdt: {size.name} {op}")
        raw[size.name, op] = raw_case(size, op, plan.budget(op.startswith("fork"), size))
    rows = [{"size": s, "op": op, "stats": st} for (s, op), st in raw.items()]
    title = "2. Raw pycrdt floor: the same operations on a bare Doc of the same size"
    print_rows(title, rows, RAW_COLUMNS)
    return raw


async def scenario_paths(
    plan: Plan, raw: dict[tuple[str, str], Stats], tmp: Path
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for store in ("memory", "sqlite"):
        for size in (SMALL, LARGE):
            for case in path_cases():
                progress(f"paths: {store} {size.name} {case.strategy} {case.path} {case.edit}")
                budget = plan.budget(case.path == "stale", size)
                st, statuses = await engine_case(store, size, case, budget, tmp)
                floor = raw.get((size.name, case.raw))
                row = {"store": store, "size": size.name, **dataclasses.asdict(case)}
                row["raw_op"] = row.pop("raw")
                row |= {"stats": st, "raw": floor, "ratio": ratio(st, floor), "statuses": statuses}
                rows.append(row)
    title = "1. Write paths, sequential (per write, including one loop turn; ratio of means)"
    print_rows(title, rows, PATH_COLUMNS)
    return rows


async def scenario_concurrent(plan: Plan, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for shared in (False, True):
        for n in (1, 8, 64):
            progress(f"concurrent: {n} writers, shared={shared}")
            rows.append(await concurrent_case(n, shared, plan, tmp))
    title = "3. Concurrent durable writers (SQLite, fast path, small docs; writes/s per wall time)"
    print_rows(title, rows, CONCURRENT_COLUMNS)
    return rows


async def scenario_stale10k(
    plan: Plan, raw: dict[tuple[str, str], Stats], tmp: Path
) -> list[dict[str, Any]]:
    rows = []
    floor = raw.get((TEXT_10K.name, "fork+text"))
    for store in ("memory", "sqlite"):
        for editors in (2, 3):
            progress(f"stale 10 KB text: {store}, {editors} editors")
            case = Case("stale", "merge", "text", editors, "fork+text")
            st, statuses = await engine_case(store, TEXT_10K, case, plan.stale, tmp)
            row = dict(store=store, behind=editors - 1, stats=st, statuses=statuses)
            rows.append(row | {"ratio": ratio(st, floor)})
    print_rows(
        "4. Stale text merges on a 10 KB text (merge strategy, sequential)", rows, STALE_COLUMNS
    )
    return rows


async def scenario_replay(plan: Plan) -> dict[str, Any]:
    if not traces.trace_path(TRACE).exists():
        message = (
            f"5. {TRACE} replay SKIPPED: {traces.trace_path(TRACE)} not found (set "
            "COLLAB_TRACES to the editing-traces folder)"
        )
        print(f"\n{message}")
        return {"skipped": message}
    trace = traces.load_trace(TRACE)
    n = min(plan.replay_txns or len(trace["txns"]), len(trace["txns"]))
    expected = trace_reference(trace, n)
    rows = []
    for via in ("json", "crdt"):
        progress(f"replay: {TRACE}, {n:,} transactions via {via}")
        row = await replay(trace, n, expected, via)
        row["ratio"] = ratio(row["stats"], row.get("raw"))
        rows.append(row)
    title = (
        f"5. {TRACE} replay, keystroke by keystroke (memory store, {n:,} transactions, "
        f"{len(expected):,} characters at the end)"
    )
    print_rows(title, rows, REPLAY_COLUMNS)
    return {"trace": TRACE, "txns": n, "rows": rows}


def target(name: str, which: str, value: float, op: str, threshold: float, unit: str) -> Any:
    ok = value >= threshold if op == ">=" else value <= threshold
    limit = f"{op} {fmt(threshold)}"
    return dict(target=name, which=which, measured=value, unit=unit, threshold=limit, pass_=ok)


def scenario_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each judged on the figure named (the slowest or best of its rows)."""
    out = []
    fast = [r for r in res.get("paths", []) if (r["store"], r["size"], r["path"]) == FAST_TARGET]
    if fast:
        w = min(fast, key=lambda r: r["stats"].rate)
        which = f"slowest of {len(fast)}: {w['strategy']}, {w['edit']}"
        out.append(target(FAST_NAME, which, w["stats"].rate, ">=", 20_000, "writes/s"))
        w = max(fast, key=lambda r: r["ratio"] or 0.0)
        which = f"worst of {len(fast)}: {w['strategy']}, {w['edit']}"
        out.append(target(RATIO_NAME, which, w["ratio"], "<=", 5, "x"))
    if res.get("concurrent"):
        b = max(res["concurrent"], key=lambda r: r["stats"].rate)
        which = f"best: {b['writers']} writers, {b['documents']} document"
        out.append(target(DURABLE_NAME, which, b["stats"].rate, ">=", 5_000, "writes/s"))
    mem = [r for r in res.get("stale10k", []) if r["store"] == "memory"]
    if mem:
        w = min(mem, key=lambda r: r["stats"].rate)
        which = f"slowest: {w['behind']} version(s) behind"
        out.append(target(STALE_NAME, which, w["stats"].rate, ">=", 2_000, "writes/s"))
    if out:
        print_rows("6. Targets", out, TARGET_COLUMNS)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = QUICK if args.quick else FULL
    chosen = set(args.only.split(",")) if args.only else set(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="collab-bench-", dir=args.tmpdir) as tmp_name:
        tmp = Path(tmp_name)
        machine = machine_info(tmp)
        turn = await run_async(lambda _i: None, lambda _x: asyncio.sleep(0), plan.fast)
        print(
            f"{machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}, "
            f"pycrdt {machine['pycrdt']}, SQLite {machine['sqlite']} files on "
            f"{machine['tmpdir_filesystem']}; one loop turn (await asyncio.sleep(0)): "
            f"p50 {fmt(turn.p50_us, 2)} µs; load average {machine['load_average']}; "
            f"{'quick' if args.quick else 'full'} run"
        )
        res: dict[str, Any] = {
            "benchmark": "merge",
            "command": " ".join(["python -m benchmarks.merge", *sys.argv[1:]]),
            "quick": args.quick,
            "machine": machine,
            "plan": plan,
            "loop_turn": turn,
        }
        raw: dict[tuple[str, str], Stats] = {}
        if chosen & {"raw", "paths", "stale10k"}:
            raw = scenario_raw(plan)
            res["raw"] = [{"size": s, "op": op, "stats": st} for (s, op), st in raw.items()]
        if "paths" in chosen:
            res["paths"] = await scenario_paths(plan, raw, tmp)
        if "concurrent" in chosen:
            res["concurrent"] = await scenario_concurrent(plan, tmp)
        if "stale10k" in chosen:
            res["stale10k"] = await scenario_stale10k(plan, raw, tmp)
        if "replay" in chosen:
            res["replay"] = await scenario_replay(plan)
    res["targets"] = scenario_targets(res)
    res["contention"] = contention(res)
    return res


def contention(res: dict[str, Any]) -> dict[str, Any]:
    """Whether other processes took the CPU during the run (this machine is shared): the
    load average at the end, and the lowest share of a core this process got during a
    memory-store scenario (about 1.0 when it had a core to itself; SQLite ones wait on disk)."""
    memory = [r for r in res.get("paths", []) + res.get("stale10k", []) if r["store"] == "memory"]
    memory += res.get("replay", {}).get("rows", [])
    shares = [r["stats"].cpu_ns / r["stats"].wall_ns for r in memory if r["stats"].wall_ns]
    out = {"load_average_end": load_average(), "min_cpu_share": min(shares, default=None)}
    share = "-" if out["min_cpu_share"] is None else f"{out['min_cpu_share']:.2f}"
    print(
        f"\ncontention check: load average at start {res['machine']['load_average']}, at end "
        f"{out['load_average_end']}; lowest CPU share in a memory-store scenario {share} "
        "(about 1.0 when uncontended; lower means other processes took the CPU)"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.merge", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (under a minute)")
    parser.add_argument("--out", default="benchmarks/results/merge.json", help="JSON results")
    parser.add_argument(
        "--tmpdir", default=None, help="where the SQLite files go (default: TMPDIR)"
    )
    parser.add_argument(
        "--only", default=None, help=f"comma-separated subset of: {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(SCENARIOS):
        parser.error(f"--only takes a subset of {', '.join(SCENARIOS)}")
    res = asyncio.run(run(args))
    path = write_json(args.out, res)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
