"""The SQLite store: the embedded, durable single-node default.

One dedicated writer thread owns the only connection. Every call — appends, but also reads,
creates, compactions — is a job on one FIFO queue, so call order is execution order and a
``load`` issued after an ``append`` sees it. The thread drains whatever is queued and runs it
as ONE transaction (group commit: one fsync for the whole batch), each job inside its own
SAVEPOINT so that a failing job (a compare-and-set miss, an unknown key) is rolled back alone.
Futures are resolved only after the COMMIT, in one ``call_soon_threadsafe`` per batch.

The file is in WAL mode with ``synchronous=FULL``: an append whose future resolved survives a
SIGKILL or a power cut. The compare-and-set reads the head inside the write transaction, so it
also holds if several processes share the file.

If a batch's own BEGIN or COMMIT fails (I/O error, disk full, lock timeout), whether the file
holds that batch is unknown: the batch's futures fail, the writer stops, every later call
raises ``RuntimeError`` and ``health()`` reports the error until the store is restarted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from collab.errors import StoreConflict
from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument
from collab.store.base import AsyncLifecycle

T = TypeVar("T")

#: Bumped (with a migration) whenever the schema below changes.
SCHEMA_VERSION = 1

_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS documents (
    key TEXT PRIMARY KEY,
    company_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    checkpoint_version INTEGER NOT NULL,
    checkpoint_state BLOB NOT NULL,
    checkpoint_meta_json TEXT NOT NULL,
    head INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_by_company ON documents (company_id, kind);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    "update" BLOB NOT NULL,
    meta_json TEXT NOT NULL,
    resolves TEXT,
    PRIMARY KEY (key, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    key TEXT NOT NULL,
    conflict_id TEXT NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (key, conflict_id)
);
PRAGMA user_version = 1;
COMMIT;
"""

#: How long ``health()`` waits for the writer to answer a probe.
HEALTH_TIMEOUT = 5.0


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(eq=False, slots=True)
class _Job:
    """A function to run on the writer's connection and the future awaiting its result."""

    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


#: A job, its result, and the exception it raised instead (if any).
_Outcome = tuple[_Job, Any, BaseException | None]


class SQLiteStore(AsyncLifecycle):
    """A :class:`collab.store.base.Store` in one SQLite file, group-committed by one thread."""

    name: str = "sqlite"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path: str = os.fspath(path)
        #: Transactions committed by the writer (one per batch); observability and tests.
        self.commits: int = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        # Guards "accepting + enqueue" against the writer shutting down between the two.
        self._lock = threading.Lock()
        self._accepting = False
        self._error: BaseException | None = None
        #: Keys whose last compare-and-set failed (writer thread only; see the Protocol).
        self._poisoned: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer thread, open the file and create the schema.

        ``RuntimeError`` if already started; an error opening the file is raised here.
        """
        if self._thread is not None:
            raise RuntimeError(f"SQLiteStore({self.path!r}) already started")
        self._queue = queue.SimpleQueue()
        self._error = None
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._writer, args=(ready,), name="collab-sqlite-writer", daemon=True
        )
        self._thread = thread
        thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            self._queue.put(None)  # if it did open after all (we were cancelled), let it go
            await asyncio.to_thread(thread.join)
            self._thread = None
            raise
        with self._lock:
            self._accepting = True

    async def stop(self) -> None:
        """Stop accepting calls, let the writer commit everything queued, join it. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._queue.put(None)
        await asyncio.to_thread(thread.join)
        if self._thread is thread:
            self._thread = None

    # -- the Protocol ------------------------------------------------------------------------

    async def load(self, key: str) -> StoredDocument | None:
        """The stored document, including every append queued before this call."""

        def run(conn: sqlite3.Connection) -> StoredDocument | None:
            self._poisoned.discard(key)  # writer thread only
            return _load(conn, key)

        return await self._submit(run)

    async def head(self, key: str) -> int | None:
        """The stored head version, ``None`` if absent."""

        def run(conn: sqlite3.Connection) -> int | None:
            try:
                return _head(conn, key)
            except KeyError:
                return None

        return await self._submit(run)

    async def create(self, meta: DocumentMeta, checkpoint: Checkpoint) -> StoredDocument:
        """Insert the document unless the key exists; return the stored one either way."""
        row = (
            meta.key,
            meta.company_id,
            meta.kind,
            _dumps(meta.to_json()),
            checkpoint.version,
            bytes(checkpoint.state),
            _dumps(checkpoint.meta),
            checkpoint.version,
        )
        return await self._submit(lambda conn: _create(conn, row))

    def append(self, key: str, entry: LogEntry) -> asyncio.Future[None]:
        """Queue ``entry`` (serialized now, so later mutation by the caller cannot leak in);
        the future resolves after the batch holding it is committed. See the Protocol."""
        row = (key, entry.version, bytes(entry.update), _dumps(entry.meta), entry.resolves)

        def run(conn: sqlite3.Connection) -> None:
            # Runs on the writer thread, in call order: poisoning needs no lock.
            if key in self._poisoned:
                raise StoreConflict(key, entry.version - 1, None)
            try:
                _append(conn, row)
            except StoreConflict:
                self._poisoned.add(key)
                raise

        return self._submit(run)

    async def add_conflict(self, key: str, conflict: PendingConflict) -> None:
        """Keep ``conflict`` (replacing one with the same id); ``KeyError`` if no document."""
        row = (key, conflict.conflict_id, _dumps(conflict.to_json()))
        await self._submit(lambda conn: _add_conflict(conn, row))

    async def compact(self, key: str, checkpoint: Checkpoint) -> None:
        """Install a newer checkpoint and drop the entries it covers, in one transaction.

        Not newer than the stored one: ignored. Beyond the head: ``ValueError``. No document:
        ``KeyError``.
        """
        row = (checkpoint.version, bytes(checkpoint.state), _dumps(checkpoint.meta), key)
        await self._submit(lambda conn: _compact(conn, row))

    async def list_documents(self, company_id: str, kind: str | None = None) -> list[DocumentMeta]:
        """The company's documents (of ``kind`` if given), oldest first, then by key."""
        return await self._submit(lambda conn: _list(conn, company_id, kind))

    async def health(self) -> dict[str, Any]:
        """Probe the writer through the queue; never raises.

        ``queue`` is the number of jobs waiting for the writer when the probe was sent.
        """
        report: dict[str, Any] = {
            "ok": False,
            "backend": self.name,
            "path": self.path,
            "queue": self._queue.qsize(),
        }
        try:
            probe = self._submit(lambda conn: conn.execute("SELECT 1").fetchone())
            await asyncio.wait_for(probe, HEALTH_TIMEOUT)
        except Exception as exc:
            report["error"] = str(exc) or type(exc).__name__
        else:
            report["ok"] = True
        return report

    # -- the queue ---------------------------------------------------------------------------

    def _submit(self, run: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if not self._accepting:
                if self._error is not None:
                    raise RuntimeError(f"SQLiteStore writer died: {self._error!r}")
                raise RuntimeError("SQLiteStore is not started")
            self._queue.put(_Job(run, future, loop))
        return future

    # -- the writer thread -------------------------------------------------------------------

    def _writer(self, ready: concurrent.futures.Future[None]) -> None:
        """Thread body: open, then run batches until the stop sentinel or a fatal error."""
        try:
            conn = _connect(self.path)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                batch = [self._queue.get()]
                while True:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                jobs: list[_Job] = []
                for job in batch:
                    if job is None:
                        stopping = True  # anything after it is failed by _shut_down
                    elif not stopping:
                        jobs.append(job)
                    else:
                        self._queue.put(job)
                if jobs:
                    self._run_batch(conn, jobs)
        except BaseException as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._shut_down()
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        """Run ``jobs`` in one transaction, each in a savepoint; settle futures after COMMIT."""
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    value = job.run(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    outcomes.append((job, None, exc))
                else:
                    outcomes.append((job, value, None))
                conn.execute("RELEASE job")
            self._commit(conn)
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            # Refuse new calls before the failures are seen, so health() is already accurate.
            with self._lock:
                self._error = exc
                self._accepting = False
            _settle_threadsafe([(job, None, exc) for job in jobs])
            raise
        self.commits += 1
        _settle_threadsafe(outcomes)

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    def _shut_down(self) -> None:
        """Stop accepting and fail whatever is still queued (only after a fatal error)."""
        with self._lock:
            self._accepting = False
            left: list[_Job] = []
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    left.append(job)
        if left:
            why = "SQLiteStore stopped" if self._error is None else f"writer died: {self._error!r}"
            _settle_threadsafe([(job, None, RuntimeError(why)) for job in left])


def _settle_threadsafe(outcomes: list[_Outcome]) -> None:
    """Hand outcomes to the loops their futures belong to: one ``call_soon_threadsafe`` per
    loop per batch rather than one per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            pass  # the loop is closed: nobody is awaiting these any more


def _settle(outcomes: list[_Outcome]) -> None:
    for job, value, exc in outcomes:
        if job.future.done():  # cancelled by its awaiter (a timeout, say)
            continue
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(value)


# -- jobs: run on the writer thread, inside the batch transaction ------------------------------


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: the writer issues BEGIN / SAVEPOINT / COMMIT itself.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"{path}: cannot enable WAL (journal_mode is {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{path}: schema version {version} is newer than this code")
        conn.executescript(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _load(conn: sqlite3.Connection, key: str) -> StoredDocument | None:
    doc = conn.execute(
        "SELECT meta_json, checkpoint_version, checkpoint_state, checkpoint_meta_json"
        " FROM documents WHERE key = ?",
        (key,),
    ).fetchone()
    if doc is None:
        return None
    entries = conn.execute(
        'SELECT version, "update", meta_json, resolves FROM entries WHERE key = ? ORDER BY version',
        (key,),
    )
    conflicts = conn.execute(
        "SELECT json FROM conflicts WHERE key = ? ORDER BY rowid",
        (key,),
    )
    return StoredDocument(
        meta=DocumentMeta.from_json(orjson.loads(doc[0])),
        checkpoint=Checkpoint(doc[1], doc[2], orjson.loads(doc[3])),
        entries=tuple(LogEntry(v, u, orjson.loads(m), r) for v, u, m, r in entries),
        conflicts=tuple(PendingConflict.from_json(orjson.loads(c)) for (c,) in conflicts),
    )


def _create(conn: sqlite3.Connection, row: tuple[Any, ...]) -> StoredDocument:
    conn.execute(
        "INSERT INTO documents (key, company_id, kind, meta_json, checkpoint_version,"
        " checkpoint_state, checkpoint_meta_json, head) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO NOTHING",
        row,
    )
    stored = _load(conn, row[0])
    if stored is None:  # impossible: inserted or already there, in this transaction
        raise RuntimeError(f"{row[0]}: document vanished during create")
    return stored


def _head(conn: sqlite3.Connection, key: str) -> int:
    found = conn.execute("SELECT head FROM documents WHERE key = ?", (key,)).fetchone()
    if found is None:
        raise KeyError(key)
    head: int = found[0]
    return head


def _append(conn: sqlite3.Connection, row: tuple[str, int, bytes, str, str | None]) -> None:
    key, version, _update, _meta, resolves = row
    # The compare-and-set and the head's move in one statement; the head is read only to
    # explain a miss (KeyError for an unknown document).
    moved = conn.execute(
        "UPDATE documents SET head = ? WHERE key = ? AND head = ?", (version, key, version - 1)
    ).rowcount
    if moved != 1:
        raise StoreConflict(key, version - 1, _head(conn, key))
    conn.execute(
        'INSERT INTO entries (key, version, "update", meta_json, resolves) VALUES (?, ?, ?, ?, ?)',
        row,
    )
    if resolves is not None:
        conn.execute("DELETE FROM conflicts WHERE key = ? AND conflict_id = ?", (key, resolves))


def _add_conflict(conn: sqlite3.Connection, row: tuple[str, str, str]) -> None:
    _head(conn, row[0])  # KeyError if the document does not exist
    conn.execute(
        "INSERT INTO conflicts (key, conflict_id, json) VALUES (?, ?, ?)"
        " ON CONFLICT (key, conflict_id) DO UPDATE SET json = excluded.json",
        row,
    )


def _compact(conn: sqlite3.Connection, row: tuple[int, bytes, str, str]) -> None:
    version, _state, _meta, key = row
    found = conn.execute(
        "SELECT checkpoint_version, head FROM documents WHERE key = ?", (key,)
    ).fetchone()
    if found is None:
        raise KeyError(key)
    stored, head = found
    if version <= stored:
        return
    if version > head:
        raise ValueError(f"{key}: checkpoint version {version} is beyond head {head}")
    conn.execute(
        "UPDATE documents SET checkpoint_version = ?, checkpoint_state = ?,"
        " checkpoint_meta_json = ? WHERE key = ?",
        row,
    )
    conn.execute("DELETE FROM entries WHERE key = ? AND version <= ?", (key, version))


def _list(conn: sqlite3.Connection, company_id: str, kind: str | None) -> list[DocumentMeta]:
    if kind is None:
        rows = conn.execute("SELECT meta_json FROM documents WHERE company_id = ?", (company_id,))
    else:
        rows = conn.execute(
            "SELECT meta_json FROM documents WHERE company_id = ? AND kind = ?",
            (company_id, kind),
        )
    metas = [DocumentMeta.from_json(orjson.loads(m)) for (m,) in rows]
    return sorted(metas, key=lambda m: (m.created_at, m.key))
