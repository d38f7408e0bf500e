"""The engine: versioned writes to documents and resources, serialized per document, durable
before they are answered, resolved by each document's strategy.

One writer at a time per document (an ``asyncio.Lock`` per key), many documents in parallel.
A write is computed and applied to the live document under the lock, handed to the store in
order, and answered once the store says it is durable; the lock is released before that wait,
so the next write to the same document is computed while the previous one is being committed
(pipelining), and the store group-commits whatever is pending.

If the store refuses an append (another node wrote first: :class:`StoreConflict`) or fails,
the live document is evicted and rebuilt from the store, and the write is retried from the top
— the one retry loop of the engine, ending in ``internal`` when it runs out.

A live document unused for ``idle_seconds`` (and with nothing pending) is dropped from memory
by a background sweep and reloaded from the store on next use: everything a write's answer
depends on (state, version, retained history, opIds, clocks, pending conflicts) is in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from collab import strategies, ydoc, yjs
from collab.document import LiveDocument
from collab.errors import CollabError, ErrorCode, StoreConflict, invalid
from collab.limits import DEFAULT_LIMITS, Limits, validate_data, validate_text_fields
from collab.model import (
    DEFAULT_STRATEGY,
    KINDS,
    STRATEGIES,
    Author,
    Checkpoint,
    DocumentMeta,
    Kind,
    LogEntry,
    Outcome,
    PendingConflict,
    Status,
    Strategy,
    Write,
    doc_key,
    now_ms,
)
from collab.store.base import Store

log = logging.getLogger("collab.engine")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine settings (each one documented in docs/engine.md)."""

    #: Versions kept for stale writes: a write based on a version older than the last
    #: ``history_limit`` is answered ``history_gone``. Between 1x and 2x are actually kept.
    history_limit: int = 1000
    #: opIds remembered per document for idempotency (oldest forgotten first).
    opid_limit: int = 10_000
    #: Live documents kept in memory; idle ones beyond this are evicted (and reloaded).
    max_live_documents: int = 10_000
    #: Seconds a live document may go unused before it is dropped from memory (and reloaded
    #: from the store on next use); 0 keeps it until ``max_live_documents`` pushes it out.
    idle_seconds: float = 300.0
    #: Store compare-and-set retries before a write is answered ``internal``.
    store_retries: int = 16
    limits: Limits = DEFAULT_LIMITS


@dataclass(frozen=True, slots=True)
class DocumentView:
    """A document as a reader sees it."""

    meta: DocumentMeta
    version: int
    data: dict[str, Any]
    conflicts: tuple[PendingConflict, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a Yjs sync message produced: a reply for the sender (step 2 answering step 1) and,
    when it changed the document, the outcome to broadcast."""

    reply: bytes | None
    outcome: Outcome | None


#: A step's answer asking the retry loop to wait for pending appends and run it again.
_AGAIN = object()

#: Awaited by a change that has its place in the document's order (``Engine._retrying``).
Ordered = Callable[[], Awaitable[None]]


def _view_at(live: LiveDocument, version: int) -> Callable[[], dict[str, Any]]:
    """The JSON view of ``live`` at ``version``, computed when called (``Outcome.data`` of a
    Yjs update): the current view while the document is still there, else rebuilt."""
    return lambda: live.json_at(version)


def _outcome(live: LiveDocument, **fields: Any) -> Outcome:
    """An :class:`Outcome` for ``live``, its identity filled in from the document."""
    m = live.meta
    return Outcome(key=live.key, doc_id=m.id, kind=m.kind, strategy=m.strategy, **fields)


class Engine:
    """The document engine. Use as ``async with Engine(store) as engine:``. ``clock`` gives
    the seconds the idle eviction of live documents counts in (tests pass their own)."""

    def __init__(
        self,
        store: Store,
        config: EngineConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        if self.config.idle_seconds < 0:
            raise ValueError("idle_seconds must not be negative (0 turns idle eviction off)")
        self._now = clock
        #: Live documents, least recently used first.
        self._docs: OrderedDict[str, LiveDocument] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise RuntimeError("engine already started")
        await self.store.start()
        self._started = True
        if self.config.idle_seconds > 0:
            self._sweeper = asyncio.create_task(self._sweep_idle(), name="collab-engine-idle")

    async def stop(self) -> None:
        if not self._started:
            return
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await self.drain()
        self._started = False
        await self.store.stop()
        self._docs.clear()

    @property
    def live_documents(self) -> int:
        """Documents held in memory now."""
        return len(self._docs)

    def evict_idle(self) -> int:
        """Drop the live documents unused for ``idle_seconds`` that have nothing pending (no
        append waiting to be durable, no compaction, nobody holding its lock);
        how many were dropped. The next use reloads them from the store. Run by a background
        sweep every quarter of ``idle_seconds`` (at most 30 s)."""
        idle = self.config.idle_seconds
        if idle <= 0:
            return 0
        cutoff = self._now() - idle
        dropped = 0
        for key, live in list(self._docs.items()):
            if live.last_used > cutoff:
                break  # least recently used first: the rest are newer
            lock = self._locks.get(key)
            if (
                live.pending == 0
                and not live.compacting
                and key not in self._tails
                and (lock is None or not lock.locked())
            ):
                del self._docs[key]
                dropped += 1
        return dropped

    async def _sweep_idle(self) -> None:
        period = max(1.0, min(self.config.idle_seconds / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            try:
                dropped = self.evict_idle()
            except Exception:  # never let the sweep die
                log.exception("idle eviction failed")
                continue
            if dropped:
                log.debug("evicted %d idle live documents", dropped)

    async def drain(self) -> None:
        """Wait until every accepted append is durable and background compaction is done."""
        while True:
            await asyncio.sleep(0)  # let done-callbacks of resolved appends run first
            waits = [*self._tasks, *(t for t in self._tails.values() if not t.done())]
            if not waits:
                return
            await asyncio.gather(*waits, return_exceptions=True)

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- reading and joining -------------------------------------------------------------

    async def open(
        self,
        kind: Kind,
        doc_id: str,
        *,
        company_id: str,
        author: Author | None = None,
        strategy: str | None = None,
        text_fields: Any = None,
    ) -> DocumentView:
        """The document, created empty at version 0 (owned by ``company_id``, with the given
        or default strategy and text fields) if it does not exist yet."""
        key = self._key(kind, doc_id)
        chosen = self._strategy(kind, strategy)  # refused even for an existing document
        declared = validate_text_fields(text_fields, self.config.limits)
        async with self._lock(key):
            live = await self._load_fresh(key)
            if live is None:
                meta = DocumentMeta(
                    id=doc_id,
                    kind=kind,
                    company_id=company_id,
                    strategy=chosen,
                    text_fields=declared,
                    created_by=author.user_id if author else "",
                )
                data = {f: "" for f in meta.text_fields}
                cp = Checkpoint(0, ydoc.create_state(data, meta.text_fields), {})
                stored = await self.store.create(meta, cp)
                live = self._adopt(
                    LiveDocument.from_stored(
                        stored,
                        history_limit=self.config.history_limit,
                        opid_limit=self.config.opid_limit,
                    )
                )
            self._authorize(live, company_id)
            return self._view(live)

    async def get(self, kind: Kind, doc_id: str, *, company_id: str) -> DocumentView:
        """The document; ``not_found`` if it does not exist, ``forbidden`` for another company."""
        key = self._key(kind, doc_id)
        async with self._lock(key):
            live = await self._load_fresh(key)
            if live is None:
                raise CollabError(ErrorCode.NOT_FOUND, f"no {kind} {doc_id!r}; join it first")
            self._authorize(live, company_id)
            return self._view(live)

    async def history(self, kind: Kind, doc_id: str) -> tuple[DocumentMeta, list[dict[str, Any]]]:
        """The retained log of a document (operators' merge inspector): one dict per version."""
        stored = await self.store.load(self._key(kind, doc_id))
        if stored is None:
            raise CollabError(ErrorCode.NOT_FOUND, f"no {kind} {doc_id!r}")
        rows = [{"version": e.version, **e.meta} for e in stored.entries]
        return stored.meta, rows

    async def changes_since(
        self, kind: Kind, doc_id: str, version: int, *, company_id: str
    ) -> list[dict[str, Any]]:
        """Who wrote each version after ``version`` (for a client catching up on rejoin)."""
        meta, rows = await self.history(kind, doc_id)
        if meta.company_id != company_id:
            raise CollabError(ErrorCode.FORBIDDEN, f"{kind} {doc_id!r} belongs to another company")
        return [r for r in rows if r["version"] > version]

    # -- writing -------------------------------------------------------------------------

    async def write(
        self,
        kind: Kind,
        doc_id: str,
        write: Write,
        *,
        company_id: str,
        ordered: Ordered | None = None,
    ) -> Outcome:
        """Apply a JSON write by the document's strategy; see the module docstring.

        ``ordered`` is awaited once the write has its place in the document's order and only
        its durability is awaited (see :meth:`_retrying`)."""
        key = self._key(kind, doc_id)
        if (
            not isinstance(write.base_version, int)
            or isinstance(write.base_version, bool)
            or write.base_version < 0
        ):
            raise invalid("version must be a non-negative integer")

        async def step(live: LiveDocument) -> tuple[Any, asyncio.Future[None] | None]:
            wait = self._pending_tail(key, write.op_id, live)
            if wait is not None:
                return _AGAIN, wait
            result = await self._write_locked(live, write)
            return (result, None) if isinstance(result, Outcome) else result

        outcome: Outcome = await self._retrying(key, company_id, step, ordered)
        return outcome

    def _pending_tail(
        self, key: str, op_id: str | None, live: LiveDocument
    ) -> asyncio.Future[None] | None:
        """A duplicate must not be answered before the original is durable: if ``op_id`` is
        known but appends are still pending, the caller waits for them and looks again."""
        if op_id and op_id in live.op_ids:
            tail = self._tails.get(key)
            if tail is not None and not tail.done():
                return tail
        return None

    async def _write_locked(
        self, live: LiveDocument, write: Write
    ) -> Outcome | tuple[Outcome, asyncio.Future[None]]:
        meta = live.meta
        incoming = validate_data(write.data, self.config.limits, meta.text_fields)
        if write.op_id:
            dup = self._duplicate(live, write)
            if dup is not None:
                return dup
        base = write.base_version
        if base > live.version:
            raise CollabError(
                ErrorCode.VERSION_AHEAD,
                f"version {base} is ahead of the document's {live.version}",
                version=live.version,
            )
        clock = self._clock(meta.kind, write, incoming)
        original = live.data
        at = now_ms()
        if base == live.version:
            landing = self._guarded(live, strategies.fast_path, live, incoming, clock)
            status: Status = "applied"
        else:
            if not live.retained(base):
                raise CollabError(
                    ErrorCode.HISTORY_GONE,
                    f"version {base} is older than the retained history (from {live.floor})",
                    version=live.version,
                )
            if meta.strategy == "manual":
                pending = await self._manual(live, write, incoming, at)
                if pending is not None:
                    return pending
            if meta.strategy == "last-write-wins":
                landing = self._guarded(live, strategies.lww, live, base, incoming, clock)
            else:
                landing = self._guarded(
                    live, strategies.merge, live, base, incoming, clock, write.author.user_id
                )
            status = "merged"
        version = live.version + 1
        entry_meta = {
            "opId": write.op_id,
            "by": write.author.user_id,
            "name": write.author.name,
            "at": at,
            "base": base,
            "status": status,
            "via": "json",
            "conflicted": landing.conflicted,
            "clocks": landing.clocks,
        }
        live.data = landing.data
        live.record(version, landing.update, entry_meta)
        fut = self._append(live, LogEntry(version, landing.update, entry_meta))
        stale = status == "merged"
        return _outcome(
            live,
            status=status,
            version=version,
            data=landing.data,
            author=write.author,
            at=at,
            conflicted_fields=tuple(landing.conflicted),
            original_value=original if stale else None,
            incoming_value=incoming if stale else None,
            resolved_value=landing.data if stale else None,
            update=landing.update,
            op_id=write.op_id,
        ), fut

    def _duplicate(self, live: LiveDocument, write: Write) -> Outcome | None:
        op_id = write.op_id
        applied_at = live.op_ids.get(op_id) if op_id else None
        conflict = next((c for c in live.conflicts.values() if c.op_id == op_id), None)
        if applied_at is None and conflict is None:
            return None
        return _outcome(
            live,
            status="duplicate",
            version=applied_at if applied_at is not None else live.version,
            data=live.data,
            author=write.author,
            at=now_ms(),
            op_id=op_id,
            conflict_id=conflict.conflict_id if conflict else None,
        )

    async def _manual(
        self, live: LiveDocument, write: Write, incoming: dict[str, Any], at: float
    ) -> Outcome | None:
        """A stale write to a manual document: kept unapplied if it conflicts (``None`` if it
        does not, and it then merges like any disjoint edit)."""
        _, _, found = strategies.detect(live, live.json_at(write.base_version), incoming)
        if not found:
            return None
        uid = write.author.user_id
        if any(c.author.user_id == uid for c in live.conflicts.values()):
            raise CollabError(
                ErrorCode.CONFLICT_PENDING,
                "you have an unresolved conflict on this document; resolve it first",
            )
        conflict = PendingConflict(
            conflict_id=uuid.uuid4().hex,
            base_version=write.base_version,
            at_version=live.version,
            conflicted_fields=tuple(".".join(str(x) for x in c.report) for c in found),
            original_value=live.data,
            incoming_value=incoming,
            author=write.author,
            at=at,
            op_id=write.op_id,
        )
        await self.store.add_conflict(live.key, conflict)
        live.conflicts[conflict.conflict_id] = conflict
        return _outcome(
            live,
            status="conflict",
            version=live.version,
            data=live.data,
            author=write.author,
            at=at,
            conflicted_fields=conflict.conflicted_fields,
            original_value=live.data,
            incoming_value=incoming,
            conflict_id=conflict.conflict_id,
            op_id=write.op_id,
        )

    async def resolve(
        self,
        kind: Kind,
        doc_id: str,
        conflict_id: str,
        resolved_value: Any,
        author: Author,
        *,
        company_id: str,
        ordered: Ordered | None = None,
    ) -> Outcome:
        """Settle a pending manual conflict with the whole resolved document (``ordered``: as
        for :meth:`write`)."""
        key = self._key(kind, doc_id)
        if not isinstance(conflict_id, str) or not conflict_id:
            raise invalid("conflictId must be a non-empty string")

        async def step(live: LiveDocument) -> tuple[Outcome, asyncio.Future[None]]:
            conflict = live.conflicts.get(conflict_id)
            if conflict is None:
                raise CollabError(
                    ErrorCode.NOT_FOUND,
                    f"no pending conflict {conflict_id!r} (unknown or resolved)",
                )
            value = validate_data(resolved_value, self.config.limits, live.meta.text_fields)
            landing = self._guarded(live, strategies.fast_path, live, value, None)
            at = now_ms()
            version = live.version + 1
            entry_meta: dict[str, Any] = {
                "opId": conflict.op_id,
                "by": author.user_id,
                "name": author.name,
                "at": at,
                "base": live.version,
                "status": "resolved",
                "via": "resolve",
                "conflictId": conflict_id,
                "conflicted": list(conflict.conflicted_fields),
                "clocks": {},
            }
            live.data = landing.data
            live.record(version, landing.update, entry_meta)
            del live.conflicts[conflict_id]
            fut = self._append(
                live, LogEntry(version, landing.update, entry_meta, resolves=conflict_id)
            )
            outcome = _outcome(
                live,
                status="applied",
                version=version,
                data=landing.data,
                author=author,
                at=at,
                conflicted_fields=conflict.conflicted_fields,
                original_value=conflict.original_value,
                incoming_value=conflict.incoming_value,
                resolved_value=landing.data,
                conflict_id=conflict_id,
                update=landing.update,
            )
            return outcome, fut

        outcome: Outcome = await self._retrying(key, company_id, step, ordered)
        return outcome

    async def sync(
        self,
        kind: Kind,
        doc_id: str,
        message: Any,
        author: Author,
        *,
        company_id: str,
        ordered: Ordered | None = None,
    ) -> SyncResult:
        """Handle one y-protocols sync message from a Yjs replica of the document
        (``ordered``: as for :meth:`write`)."""
        msg = yjs.parse(message)
        key = self._key(kind, doc_id)

        async def step(live: LiveDocument) -> tuple[SyncResult, asyncio.Future[None] | None]:
            if msg.type == yjs.SyncType.STEP1:
                try:
                    update = live.doc.get_update(msg.payload)
                except Exception:
                    raise invalid("malformed state vector") from None
                return SyncResult(yjs.create_sync_step2_message(update), None), None
            result = self._apply_yjs(live, msg.payload, author)
            if result is None:
                return SyncResult(None, None), None
            outcome, fut = result
            return SyncResult(None, outcome), fut

        done: SyncResult = await self._retrying(key, company_id, step, ordered)
        return done

    async def _retrying(
        self, key: str, company_id: str, step: Any, ordered: Ordered | None = None
    ) -> Any:
        """The one retry loop: under the document's lock, load and authorize it and run
        ``step``, which returns its answer and the append future to wait for (or ``None``);
        outside the lock, wait until durable. A store that refuses the append (another node
        wrote first) makes the live copy stale: it is dropped and the step runs again, on a
        reload, until ``store_retries`` attempts end in ``internal``. A step may instead ask
        to wait for pending appends and look again (``_AGAIN``).

        ``ordered`` is awaited (once) when a step has applied its change and only durability
        is left: the caller may then start its next change, which the document's lock orders
        after this one, so one writer's changes share a commit. A caller that finishes its
        changes in order (``gateway.sessions.Turn``) keeps a retry first too: the next
        change's append, on the same stale copy, is refused as well and retried after."""
        for _ in range(self.config.store_retries):
            async with self._lock(key):
                live = await self._require(key)
                self._authorize(live, company_id)
                answer, fut = await step(live)
            if fut is None:
                return answer
            if answer is _AGAIN:
                with contextlib.suppress(Exception):
                    await fut
                continue
            if ordered is not None:
                await ordered()
                ordered = None
            try:
                await fut
            except StoreConflict:
                self._evict(live)  # now: the done-callback may not have run yet
                continue
            return answer
        raise CollabError(ErrorCode.INTERNAL, "the document is too contended; try again")

    def _apply_yjs(
        self, live: LiveDocument, update: bytes, author: Author
    ) -> tuple[Outcome, asyncio.Future[None]] | None:
        data, stale, applied = self._guarded(live, live.apply_client_update, update)
        if applied is None:
            return None  # nothing new (already seen, or waiting for missing dependencies)
        live.set_view(data, stale)  # stale texts are converted when the view is read
        if not (stale and self._texts_within_limits(live, data, stale)):
            live.data = self._guarded(
                live, validate_data, live.data, self.config.limits, live.meta.text_fields
            )
        at = now_ms()
        version = live.version + 1
        entry_meta: dict[str, Any] = {
            "opId": None,
            "by": author.user_id,
            "name": author.name,
            "at": at,
            "base": live.version,
            "status": "applied",
            "via": "yjs",
            "conflicted": [],
            "clocks": {},
        }
        live.record(version, applied, entry_meta)
        fut = self._append(live, LogEntry(version, applied, entry_meta))
        return _outcome(
            live,
            status="applied",
            version=version,
            data=_view_at(live, version),
            author=author,
            at=at,
            update=applied,
            via_sync=True,
        ), fut

    # -- internals -----------------------------------------------------------------------

    def _key(self, kind: str, doc_id: Any) -> str:
        if kind not in KINDS:
            raise invalid(f"unknown kind {kind!r}")
        if not isinstance(doc_id, str) or not doc_id or len(doc_id) > 256:
            raise invalid(f"{kind} id must be a non-empty string of at most 256 characters")
        try:
            doc_id.encode("utf-8")
        except UnicodeEncodeError:
            raise invalid(f"{kind} id is not valid Unicode") from None
        return doc_key(kind, doc_id)

    @staticmethod
    def _strategy(kind: Kind, strategy: Any) -> Strategy:
        if strategy is None:
            return DEFAULT_STRATEGY[kind]
        if strategy not in STRATEGIES:
            raise invalid(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        return strategy  # type: ignore[no-any-return]

    @staticmethod
    def _clock(kind: Kind, write: Write, incoming: dict[str, Any]) -> strategies.WriteClock | None:
        """Resources order last-write-wins by the write's timestamp, ties broken by a key
        derived from the write itself so every node orders the same set the same way."""
        if kind != "resource":
            return None
        ts = write.timestamp if write.timestamp is not None else now_ms()
        digest = hashlib.blake2b(
            orjson.dumps(incoming, option=orjson.OPT_SORT_KEYS), digest_size=8
        ).hexdigest()
        return (ts, f"{write.author.user_id}\x00{write.op_id or ''}\x00{digest}")

    def _lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def _load(self, key: str) -> LiveDocument | None:
        live = self._docs.get(key)
        if live is not None:
            self._docs.move_to_end(key)
            live.last_used = self._now()
            return live
        stored = await self.store.load(key)
        if stored is None:
            return None
        return self._adopt(
            LiveDocument.from_stored(
                stored, history_limit=self.config.history_limit, opid_limit=self.config.opid_limit
            )
        )

    async def _load_fresh(self, key: str) -> LiveDocument | None:
        """The live document, reloaded first if the store holds versions it lacks (another
        node wrote): what a reader is given must not be older than what was acknowledged."""
        live = self._docs.get(key)
        if live is not None:
            head = await self.store.head(key)
            if head is not None and head > live.version:
                self._evict(live)
        return await self._load(key)

    async def _require(self, key: str) -> LiveDocument:
        live = await self._load(key)
        if live is None:
            kind, _, doc_id = key.partition(":")
            raise CollabError(ErrorCode.NOT_FOUND, f"no {kind} {doc_id!r}; join it first")
        return live

    def _adopt(self, live: LiveDocument) -> LiveDocument:
        live.last_used = self._now()
        self._docs[live.key] = live
        self._docs.move_to_end(live.key)
        if len(self._docs) > self.config.max_live_documents:
            for key in list(self._docs)[: len(self._docs) - self.config.max_live_documents]:
                other = self._docs[key]
                lock = self._locks.get(key)
                if other.pending == 0 and (lock is None or not lock.locked()):
                    del self._docs[key]
        return live

    @staticmethod
    def _authorize(live: LiveDocument, company_id: str) -> None:
        if live.meta.company_id != company_id:
            raise CollabError(
                ErrorCode.FORBIDDEN, f"{live.meta.kind} {live.meta.id!r} belongs to another company"
            )

    def _texts_within_limits(
        self, live: LiveDocument, data: dict[str, Any], texts: frozenset[str]
    ) -> bool:
        """Whether a view whose text fields ``texts`` are out of date certainly keeps within
        the limits, counted without converting them: each text's UTF-8 length bounds its
        characters, and 6 bytes of JSON a byte (``\\u00XX``) bounds its serialized size. When
        unsure (a text or the document near its limit), the caller converts and checks."""
        limits = self.config.limits
        size = 0
        for key in texts:
            n = live.text_bytes(key)
            if n > limits.max_string:
                return False
            size += 6 * n + len(key) + 6
        rest = {k: v for k, v in data.items() if k not in texts}
        return size + len(orjson.dumps(rest)) <= limits.max_bytes

    def _guarded(self, live: LiveDocument, fn: Any, *args: Any) -> Any:
        """Run a mutation of the live document; if it fails half-way, forget the live copy
        (the store has none of it) so the next use rebuilds it."""
        try:
            return fn(*args)
        except Exception:
            self._evict(live)
            raise

    def _evict(self, live: LiveDocument) -> None:
        if self._docs.get(live.key) is live:
            del self._docs[live.key]

    def _append(self, live: LiveDocument, entry: LogEntry) -> asyncio.Future[None]:
        fut = self.store.append(live.key, entry)
        live.pending += 1
        self._tails[live.key] = fut

        def done(f: asyncio.Future[None]) -> None:
            live.pending -= 1
            if self._tails.get(live.key) is f:
                del self._tails[live.key]
            exc = f.exception() if not f.cancelled() else None
            if exc is not None or f.cancelled():
                if not isinstance(exc, StoreConflict):
                    log.error("store append failed for %s v%s: %r", live.key, entry.version, exc)
                self._evict(live)
            elif not live.compacting and live.checkpoint_due() and self._started:
                live.compacting = True
                self._spawn(self._compact(live))

        fut.add_done_callback(done)
        return fut

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _compact(self, live: LiveDocument) -> None:
        """Write a checkpoint at the history floor and drop the history before it, here and
        in the store."""
        try:
            await self._compact_locked(live)
        except Exception:
            # The history stays (bounded only by the next attempt): logged, not lost.
            log.exception("compaction failed for %s", live.key)
        finally:
            live.compacting = False

    async def _compact_locked(self, live: LiveDocument) -> None:
        async with self._lock(live.key):
            if self._docs.get(live.key) is not live or not live.checkpoint_due():
                return
            cp = live.make_checkpoint()
            try:
                await self.store.compact(live.key, cp)
            except Exception:
                log.exception("compaction failed for %s", live.key)
                return
            live.checkpoint_written(cp)

    def _view(self, live: LiveDocument) -> DocumentView:
        return DocumentView(live.meta, live.version, live.data, tuple(live.conflicts.values()))

    @contextlib.asynccontextmanager
    async def locked(self, kind: Kind, doc_id: str) -> AsyncIterator[None]:
        """Hold a document's write lock (tests and tools)."""
        async with self._lock(self._key(kind, doc_id)):
            yield
