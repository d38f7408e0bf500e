"""The storage Protocol every backend implements.

A store keeps, per document key, the document's metadata, one checkpoint (the full state at
some version), the log of entries after it, and the pending manual conflicts. The engine owns
every semantic decision; a store only keeps bytes and JSON, in order, durably, and answers
"not current" (:class:`collab.errors.StoreConflict`) when a versioned append does not follow
the head it expected — the compare-and-set that lets several nodes share one store.

``collab.store.memory.MemoryStore`` is the reference implementation; every backend passes the
shared contract suite in ``tests/store/test_contract.py``.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument


class AsyncLifecycle:
    """``async with store:`` for any backend: ``start()`` on entry, ``stop()`` on exit."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


@runtime_checkable
class Store(Protocol):
    """A versioned document store. Keys are ``"document:<id>"`` / ``"resource:<id>"``."""

    #: Human-readable backend name for health reports ("memory", "sqlite", "redis").
    name: str

    async def start(self) -> None:
        """Open connections, create schema. Raises ``RuntimeError`` if already started."""

    async def stop(self) -> None:
        """Flush every accepted append, then close. Idempotent."""

    async def load(self, key: str) -> StoredDocument | None:
        """The document as stored, including every append already acknowledged; ``None`` if
        absent."""

    async def create(self, meta: DocumentMeta, checkpoint: Checkpoint) -> StoredDocument:
        """Create the document if absent (atomically: of two racing creators one wins) and
        return what is stored — the caller's document or the one that was already there."""

    def append(self, key: str, entry: LogEntry) -> asyncio.Future[None]:
        """Queue ``entry`` for ``key`` and return a future that resolves once it is durable.

        The entry is accepted in call order (the engine calls this while holding the
        document's lock, so order is the document's order), and group-committed with
        whatever else is pending. The future raises :class:`collab.errors.StoreConflict` if
        the stored head is not ``entry.version - 1`` (nothing is written then), and
        ``KeyError`` if the document does not exist. If ``entry.resolves`` names a pending
        conflict, that conflict is removed in the same atomic step.

        **Poisoning.** Once an append for ``key`` has failed its compare-and-set, every later
        append for ``key`` through this store object fails with ``StoreConflict`` too, until
        ``load(key)`` is called. Appends are pipelined: the writes queued behind a refused
        one were computed on top of it, and a bare version check could let one of them
        through against a state that never existed. The engine reloads before retrying.
        """
        ...

    async def head(self, key: str) -> int | None:
        """The stored head version (every acknowledged append included), ``None`` if
        absent: a cheap freshness check for a node's cached copy."""

    async def add_conflict(self, key: str, conflict: PendingConflict) -> None:
        """Durably keep a pending manual conflict (it does not move the version)."""

    async def compact(self, key: str, checkpoint: Checkpoint) -> None:
        """Replace the checkpoint by a newer one and drop the entries it covers
        (``version <= checkpoint.version``). A checkpoint older than the stored one is
        ignored."""

    async def list_documents(self, company_id: str, kind: str | None = None) -> list[DocumentMeta]:
        """Metadata of the documents a company owns (for listings and the demo page)."""

    async def health(self) -> dict[str, Any]:
        """``{"ok": bool, "backend": name, ...}`` without raising."""
