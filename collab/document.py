"""One document held live in memory: its CRDT, its JSON view and its retained history.

A :class:`LiveDocument` is rebuilt from what a store returns (checkpoint + log) and advanced
one applied entry at a time. It keeps a pycrdt ``Snapshot`` (state vector + delete set, tens of
bytes) per retained version rather than a copy of the document, and rebuilds the document as
it was at any retained version on demand, to diff against and fork from.

It is not thread- or task-safe by itself: the engine holds the document's lock around every use.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from pycrdt import Doc, Map, Snapshot

from collab import ydoc
from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument

#: A field clock: (timestamp ms, tie-break key, version at which it was set).
Clock = tuple[float, str, int]


class LiveDocument:
    """The engine's working copy of one document."""

    def __init__(
        self, meta: DocumentMeta, checkpoint: Checkpoint, *, history_limit: int, opid_limit: int
    ) -> None:
        self.meta = meta
        self.history_limit = history_limit
        self.opid_limit = opid_limit
        self.doc: Doc = ydoc.doc_from_state(checkpoint.state)
        self.root: Map = ydoc.root_of(self.doc)
        self.version = checkpoint.version
        self.checkpoint_version = checkpoint.version
        self.data: dict[str, Any] = ydoc.to_json(self.root)
        self.snapshots: dict[int, Snapshot] = {self.version: Snapshot.from_doc(self.doc)}
        self.floor = self.version
        #: opId → version at which it was applied (bounded, oldest forgotten first).
        self.op_ids: OrderedDict[str, int] = OrderedDict(
            (k, int(v)) for k, v in checkpoint.meta.get("opIds", {}).items()
        )
        self.clocks: dict[str, Clock] = {
            k: (float(v[0]), str(v[1]), int(v[2]))
            for k, v in checkpoint.meta.get("clocks", {}).items()
        }
        self.conflicts: dict[str, PendingConflict] = {}
        self._json_cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._state_cache: OrderedDict[int, bytes] = OrderedDict()
        #: Appends accepted by the store but not yet durable; the document is not evictable
        #: while any is pending.
        self.pending = 0

    @classmethod
    def from_stored(
        cls, stored: StoredDocument, *, history_limit: int, opid_limit: int
    ) -> LiveDocument:
        live = cls(
            stored.meta, stored.checkpoint, history_limit=history_limit, opid_limit=opid_limit
        )
        for entry in stored.entries:
            live.replay(entry)
        live.data = ydoc.to_json(live.root)
        live.conflicts = {c.conflict_id: c for c in stored.conflicts}
        return live

    @property
    def key(self) -> str:
        return self.meta.key

    # -- history -------------------------------------------------------------------------

    def replay(self, entry: LogEntry) -> None:
        """Apply a stored entry (on load, or from another node)."""
        if entry.update:
            self.doc.apply_update(entry.update)
        self.record(entry.version, entry.meta)

    def record(self, version: int, meta: dict[str, Any]) -> None:
        """Book-keeping after the CRDT has moved to ``version``."""
        self.version = version
        self.snapshots[version] = Snapshot.from_doc(self.doc)
        op_id = meta.get("opId")
        if op_id:
            self.op_ids[op_id] = version
            while len(self.op_ids) > self.opid_limit:
                self.op_ids.popitem(last=False)
        for path, c in meta.get("clocks", {}).items():
            self.clocks[path] = (float(c[0]), str(c[1]), version)
        new_floor = max(self.checkpoint_version, version - self.history_limit)
        while self.floor < new_floor:
            self.snapshots.pop(self.floor, None)
            self._json_cache.pop(self.floor, None)
            self._state_cache.pop(self.floor, None)
            self.floor += 1

    def retained(self, version: int) -> bool:
        return self.floor <= version <= self.version

    def state_at(self, version: int) -> bytes:
        """The document at a retained version, as a Yjs update from the empty document."""
        cached = self._state_cache.get(version)
        if cached is None:
            cached = ydoc.fork_state(self.doc, self.snapshots[version])
            self._cache(self._state_cache, version, cached)
        return cached

    def json_at(self, version: int) -> dict[str, Any]:
        """The JSON view at a retained version (not to be mutated)."""
        if version == self.version:
            return self.data
        cached = self._json_cache.get(version)
        if cached is None:
            view = Doc.from_snapshot(self.snapshots[version], self.doc)
            cached = ydoc.to_json(ydoc.root_of(view))
            self._cache(self._json_cache, version, cached)
        return cached

    @staticmethod
    def _cache(cache: OrderedDict[int, Any], version: int, value: Any) -> None:
        cache[version] = value
        if len(cache) > 8:
            cache.popitem(last=False)

    # -- compaction ----------------------------------------------------------------------

    def checkpoint_due(self) -> bool:
        """A new checkpoint is written once the log holds twice the history bound."""
        return self.version - self.checkpoint_version >= 2 * self.history_limit

    def make_checkpoint(self) -> Checkpoint:
        """The state at the history floor, with deleted content before it dropped."""
        v = self.floor
        state = ydoc.compact_state(self.state_at(v))
        clocks = {p: list(c) for p, c in self.clocks.items() if c[2] <= v}
        op_ids = {k: ver for k, ver in self.op_ids.items() if ver <= v}
        return Checkpoint(version=v, state=state, meta={"clocks": clocks, "opIds": op_ids})

    def checkpoint_written(self, version: int) -> None:
        self.checkpoint_version = max(self.checkpoint_version, version)
