"""The engine's plain data: what a document is, what a write asks, what the engine answers,
and what a store keeps.

These are frozen dataclasses with no behaviour beyond small conveniences, so that the engine,
the stores and the gateway share one vocabulary without importing each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Strategy = Literal["last-write-wins", "merge", "manual"]
STRATEGIES: tuple[Strategy, ...] = ("last-write-wins", "merge", "manual")

Kind = Literal["document", "resource"]
KINDS: tuple[Kind, ...] = ("document", "resource")

Status = Literal["applied", "merged", "conflict", "duplicate"]

JSONObject = dict[str, Any]

#: Default strategy per kind (CONTRACT.md: resources are last-write-wins by timestamp).
DEFAULT_STRATEGY: dict[Kind, Strategy] = {"document": "merge", "resource": "last-write-wins"}


def now_ms() -> float:
    """Wall-clock milliseconds since the epoch (what JS ``Date.now()`` gives)."""
    return time.time() * 1000.0


def iso(ms: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, exactly as JS ``toISOString()`` writes it."""
    # isoformat truncates to milliseconds as toISOString does, and is C (strftime is not).
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def doc_key(kind: Kind, doc_id: str) -> str:
    """The store key of a document or resource: the two live in separate namespaces."""
    return f"{kind}:{doc_id}"


@dataclass(frozen=True, slots=True)
class DocumentMeta:
    """What never changes about a document after it is created."""

    id: str
    kind: Kind
    company_id: str
    strategy: Strategy
    text_fields: tuple[str, ...] = ()
    created_at: float = field(default_factory=now_ms)
    created_by: str = ""

    @property
    def key(self) -> str:
        return doc_key(self.kind, self.id)

    def to_json(self) -> JSONObject:
        return {
            "id": self.id,
            "kind": self.kind,
            "companyId": self.company_id,
            "strategy": self.strategy,
            "textFields": list(self.text_fields),
            "createdAt": self.created_at,
            "createdBy": self.created_by,
        }

    @classmethod
    def from_json(cls, obj: JSONObject) -> DocumentMeta:
        return cls(
            id=obj["id"],
            kind=obj["kind"],
            company_id=obj["companyId"],
            strategy=obj["strategy"],
            text_fields=tuple(obj.get("textFields", ())),
            created_at=float(obj.get("createdAt", 0.0)),
            created_by=obj.get("createdBy", ""),
        )


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote: always taken from the verified token, never from the payload."""

    user_id: str
    name: str = ""
    company_id: str = ""


@dataclass(frozen=True, slots=True)
class Write:
    """A JSON write: the whole new object, edited from ``base_version``."""

    base_version: int
    data: JSONObject
    author: Author
    op_id: str | None = None
    #: Client timestamp in ms (resources order last-write-wins by it); ``None`` = arrival time.
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a write, a resolution or a Yjs update did; everything the gateway needs to emit the
    seed's ``document:updated``, ``document:conflict`` and ``conflict:resolved`` events."""

    status: Status
    key: str
    doc_id: str
    kind: Kind
    strategy: Strategy
    version: int
    #: The document after the write (:meth:`view`). For a Yjs update, a function computing
    #: it when first asked for: reading a long ``Y.Text`` back costs time linear in its CRDT,
    #: and most keystrokes' views are never read (nobody but Yjs replicas in the room).
    data: JSONObject | Callable[[], JSONObject]
    author: Author
    at: float
    conflicted_fields: tuple[str, ...] = ()
    #: The document as the writer's edit found it (current server state before this write).
    original_value: JSONObject | None = None
    #: The writer's own data, as sent.
    incoming_value: JSONObject | None = None
    #: The document after resolution (automatic strategies and ``conflict:resolve``).
    resolved_value: JSONObject | None = None
    conflict_id: str | None = None
    #: The Yjs update this write applied (broadcast to Yjs replicas); empty when nothing changed.
    update: bytes = b""
    op_id: str | None = None
    #: True when the write came in as a Yjs update (``document:sync``).
    via_sync: bool = False

    def view(self) -> JSONObject:
        """The document after the write (what ``document:updated`` carries as ``data``)."""
        data = self.data
        return data() if callable(data) else data

    @property
    def changed(self) -> bool:
        """Whether the document's version moved."""
        return self.status in ("applied", "merged") or (
            self.status == "conflict" and self.resolved_value is not None
        )

    @property
    def timestamp(self) -> str:
        return iso(self.at)


@dataclass(frozen=True, slots=True)
class PendingConflict:
    """A manual-strategy write kept unapplied until a person resolves it."""

    conflict_id: str
    base_version: int
    at_version: int
    conflicted_fields: tuple[str, ...]
    original_value: JSONObject
    incoming_value: JSONObject
    author: Author
    at: float
    op_id: str | None = None

    def to_json(self) -> JSONObject:
        return {
            "conflictId": self.conflict_id,
            "baseVersion": self.base_version,
            "atVersion": self.at_version,
            "conflictedFields": list(self.conflicted_fields),
            "originalValue": self.original_value,
            "incomingValue": self.incoming_value,
            "author": {
                "userId": self.author.user_id,
                "name": self.author.name,
                "companyId": self.author.company_id,
            },
            "at": self.at,
            "opId": self.op_id,
        }

    @classmethod
    def from_json(cls, obj: JSONObject) -> PendingConflict:
        a = obj.get("author", {})
        return cls(
            conflict_id=obj["conflictId"],
            base_version=int(obj["baseVersion"]),
            at_version=int(obj["atVersion"]),
            conflicted_fields=tuple(obj.get("conflictedFields", ())),
            original_value=obj.get("originalValue") or {},
            incoming_value=obj.get("incomingValue") or {},
            author=Author(a.get("userId", ""), a.get("name", ""), a.get("companyId", "")),
            at=float(obj.get("at", 0.0)),
            op_id=obj.get("opId"),
        )


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One applied write, as the store keeps it: the Yjs update that moved the document from
    ``version - 1`` to ``version``, plus engine metadata the store does not interpret."""

    version: int
    update: bytes
    meta: JSONObject
    #: The id of a pending conflict this entry resolves (``conflict:resolve``); the store drops
    #: that conflict in the same atomic step as it appends the entry.
    resolves: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The full state of a document at ``version``: a Yjs update from the empty document, and
    the engine's own state (field clocks, remembered opIds) at that version."""

    version: int
    state: bytes
    meta: JSONObject


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """Everything a store returns for one document: enough to rebuild it exactly."""

    meta: DocumentMeta
    checkpoint: Checkpoint
    entries: tuple[LogEntry, ...]
    conflicts: tuple[PendingConflict, ...]

    @property
    def version(self) -> int:
        return self.entries[-1].version if self.entries else self.checkpoint.version
