"""The in-memory store: the reference implementation of :class:`collab.store.base.Store`.

It is the single-process default and what the engine's tests run on, so it is deliberately the
plainest possible reading of the Protocol: every other backend must behave exactly like it (the
shared contract suite in ``tests/store/test_contract.py`` checks that).

JSON values (entry, checkpoint and conflict metadata) are kept serialized with ``orjson``, the
way a real backend keeps them: a caller can mutate neither what it handed in nor what it got
back, and a value that a durable backend could not store fails here too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from collab.errors import StoreConflict
from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument
from collab.store.base import AsyncLifecycle


@dataclass(slots=True)
class _Entry:
    """One stored log entry, its metadata serialized."""

    version: int
    update: bytes
    meta_json: bytes
    resolves: str | None

    def thaw(self) -> LogEntry:
        return LogEntry(self.version, self.update, orjson.loads(self.meta_json), self.resolves)


@dataclass(slots=True)
class _Document:
    """Everything kept for one key; JSON values serialized, bytes as immutable ``bytes``."""

    meta: DocumentMeta
    checkpoint_version: int
    checkpoint_state: bytes
    checkpoint_meta_json: bytes
    entries: list[_Entry] = field(default_factory=list)
    #: Pending conflicts by id, in the order they were first added.
    conflicts: dict[str, bytes] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return self.entries[-1].version if self.entries else self.checkpoint_version

    def thaw(self) -> StoredDocument:
        """A fresh :class:`StoredDocument` that shares no mutable object with the store."""
        return StoredDocument(
            meta=self.meta,
            checkpoint=Checkpoint(
                self.checkpoint_version,
                self.checkpoint_state,
                orjson.loads(self.checkpoint_meta_json),
            ),
            entries=tuple(e.thaw() for e in self.entries),
            conflicts=tuple(
                PendingConflict.from_json(orjson.loads(c)) for c in self.conflicts.values()
            ),
        )


def _normalized_meta(meta: DocumentMeta) -> DocumentMeta:
    """``meta`` as a serializing backend would give it back (tuples, floats, plain strings)."""
    return DocumentMeta.from_json(orjson.loads(orjson.dumps(meta.to_json())))


class MemoryStore(AsyncLifecycle):
    """Documents in a dict, appends checked and applied synchronously at call time.

    ``append`` returns a future that is already resolved (or already failed with
    :class:`StoreConflict` / ``KeyError``), so call order is trivially commit order. Data
    survives ``stop()`` / ``start()`` within the process, and nothing survives the process.
    """

    name: str = "memory"

    def __init__(self) -> None:
        self._docs: dict[str, _Document] = {}
        #: Keys whose last compare-and-set failed: appends refused until ``load`` (Protocol).
        self._poisoned: set[str] = set()
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark the store running; ``RuntimeError`` if it already is."""
        if self._running:
            raise RuntimeError("MemoryStore already started")
        self._running = True

    async def stop(self) -> None:
        """Stop accepting calls (appends are already applied, nothing to flush). Idempotent."""
        self._running = False

    def _check_running(self) -> None:
        # The reference enforces the lifecycle so engine bugs show up here before on SQLite.
        if not self._running:
            raise RuntimeError("MemoryStore is not started")

    # -- the Protocol ------------------------------------------------------------------------

    async def load(self, key: str) -> StoredDocument | None:
        """The stored document, or ``None`` if ``key`` was never created."""
        self._check_running()
        self._poisoned.discard(key)
        doc = self._docs.get(key)
        return None if doc is None else doc.thaw()

    async def head(self, key: str) -> int | None:
        """The stored head version, ``None`` if absent."""
        self._check_running()
        doc = self._docs.get(key)
        return None if doc is None else doc.head

    async def create(self, meta: DocumentMeta, checkpoint: Checkpoint) -> StoredDocument:
        """Create the document unless it exists; return what is stored either way."""
        self._check_running()
        # Serialize first, so a bad value fails whether or not the document exists.
        fresh = _Document(
            meta=_normalized_meta(meta),
            checkpoint_version=checkpoint.version,
            checkpoint_state=bytes(checkpoint.state),
            checkpoint_meta_json=orjson.dumps(checkpoint.meta),
        )
        doc = self._docs.setdefault(meta.key, fresh)
        return doc.thaw()

    def append(self, key: str, entry: LogEntry) -> asyncio.Future[None]:
        """Apply ``entry`` now if ``entry.version`` is the head + 1; see the Protocol."""
        self._check_running()
        record = _Entry(
            entry.version, bytes(entry.update), orjson.dumps(entry.meta), entry.resolves
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        doc = self._docs.get(key)
        if doc is None:
            future.set_exception(KeyError(key))
        elif key in self._poisoned or entry.version != doc.head + 1:
            self._poisoned.add(key)
            future.set_exception(StoreConflict(key, entry.version - 1, doc.head))
        else:
            doc.entries.append(record)
            if entry.resolves is not None:
                doc.conflicts.pop(entry.resolves, None)
            future.set_result(None)
        return future

    async def add_conflict(self, key: str, conflict: PendingConflict) -> None:
        """Keep ``conflict`` (replacing one with the same id); ``KeyError`` if no document."""
        self._check_running()
        data = orjson.dumps(conflict.to_json())
        self._doc(key).conflicts[conflict.conflict_id] = data

    async def compact(self, key: str, checkpoint: Checkpoint) -> None:
        """Install a newer checkpoint and drop the entries it covers.

        A checkpoint not newer than the stored one is ignored; one beyond the head is a
        ``ValueError`` (it would claim versions that were never appended). ``KeyError`` if
        the document does not exist.
        """
        self._check_running()
        doc = self._doc(key)
        meta_json = orjson.dumps(checkpoint.meta)
        if checkpoint.version <= doc.checkpoint_version:
            return
        if checkpoint.version > doc.head:
            raise ValueError(
                f"{key}: checkpoint version {checkpoint.version} is beyond head {doc.head}"
            )
        doc.checkpoint_version = checkpoint.version
        doc.checkpoint_state = bytes(checkpoint.state)
        doc.checkpoint_meta_json = meta_json
        doc.entries = [e for e in doc.entries if e.version > checkpoint.version]

    async def list_documents(self, company_id: str, kind: str | None = None) -> list[DocumentMeta]:
        """The company's documents (of ``kind`` if given), oldest first, then by key."""
        self._check_running()
        found = [
            d.meta
            for d in self._docs.values()
            if d.meta.company_id == company_id and (kind is None or d.meta.kind == kind)
        ]
        return sorted(found, key=lambda m: (m.created_at, m.key))

    async def health(self) -> dict[str, Any]:
        """``ok`` while started, with the number of documents kept."""
        report: dict[str, Any] = {
            "ok": self._running,
            "backend": self.name,
            "documents": len(self._docs),
        }
        if not self._running:
            report["error"] = "not started"
        return report

    def _doc(self, key: str) -> _Document:
        doc = self._docs.get(key)
        if doc is None:
            raise KeyError(key)
        return doc
