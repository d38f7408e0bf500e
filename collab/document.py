"""One document held live in memory: its CRDT, its JSON view and its retained history.

A :class:`LiveDocument` is rebuilt from what a store returns (checkpoint + log) and advanced
one applied entry at a time. History is the checkpoint's state plus the Yjs update of every
version since; the document as it was at any retained version is those updates merged
(``pycrdt.merge_updates``, in Rust), from the nearest cached anchor state. Updates are what
the store keeps anyway, so history costs no copy of the document per version.

(pycrdt's ``Snapshot``/``Doc.from_snapshot`` looked like the natural tool, but it returns
content past the snapshot when one client's consecutive insertions were squashed into one
block, so it is not used.)

It is not thread- or task-safe by itself: the engine holds the document's lock around every use.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

from pycrdt import Doc, Map, Subscription, merge_updates

from collab import ydoc
from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument

#: A field clock: (timestamp ms, tie-break key, version at which it was set).
Clock = tuple[float, str, int]

#: Full states are cached at versions that are multiples of this, so rebuilding any retained
#: version merges at most this many updates onto a cached state.
ANCHOR_EVERY = 32
#: A Yjs update that changes nothing.
EMPTY_UPDATE = b"\x00\x00"

#: Anchors kept per document (the newest).
KEEP_ANCHORS = 4


def _unobserve(doc: Doc[Any], subscription: Subscription) -> None:
    doc.unobserve(subscription)


class LiveDocument:
    """The engine's working copy of one document."""

    def __init__(
        self, meta: DocumentMeta, checkpoint: Checkpoint, *, history_limit: int, opid_limit: int
    ) -> None:
        self.meta = meta
        self.key = meta.key
        #: A compaction is scheduled or running (at most one at a time).
        self.compacting = False
        self.history_limit = history_limit
        self.opid_limit = opid_limit
        self.doc: Doc[Any] = ydoc.doc_from_state(checkpoint.state)
        self.root: Map[Any] = ydoc.root_of(self.doc)
        #: Updates of the transactions since the last :meth:`take_update` (pycrdt's
        #: transaction observer hands over exactly what each one changed; asking the doc for
        #: ``get_update(state_vector)`` instead grows with every overwritten entry).
        #: The observer holds this list, never ``self``: the callback is owned by the Rust
        #: document, where Python's cycle collector cannot see it, so a callback referring to
        #: ``self`` kept every dropped LiveDocument alive (found by the soak: each eviction
        #: leaked a whole document). The list is therefore only ever cleared, never replaced.
        captured: list[bytes] = []
        self._captured = captured
        subscription = self.doc.observe(lambda event: captured.append(event.update))
        #: pycrdt's ``Doc.observe`` wraps the callback with the ``Doc`` itself
        #: (``partial(observe_callback, callback, doc)``), handed to the Rust document: the
        #: Python ``Doc`` then keeps itself alive through Rust, where the cycle collector
        #: cannot see, and every dropped LiveDocument still leaked its CRDT (found by the
        #: soak: the 200 documents evicted after each cycle stayed, ~10 MiB of Rust heap and
        #: CPython objects pinning arenas). The subscription is dropped when this object goes,
        #: however it goes (idle eviction, a failed mutation, the live-document cap, stop).
        weakref.finalize(self, _unobserve, self.doc, subscription)
        #: The top-level fields a client's Yjs update touched (:meth:`apply_client_update`).
        self._watch = ydoc.FieldWatch(self.root)
        self.version = checkpoint.version
        self.checkpoint_version = checkpoint.version
        self._data: dict[str, Any] = ydoc.to_json(self.root)
        #: Text fields whose value in ``_data`` lags the CRDT (:meth:`apply_client_update`):
        #: converted when :attr:`data` is next read.
        self._stale: frozenset[str] = frozenset()
        #: version → the update that produced it, for every version after the checkpoint.
        self.updates: dict[int, bytes] = {}
        #: version → full state (the checkpoint's, anchors, recently asked-for bases).
        self._states: dict[int, bytes] = {self.version: checkpoint.state}
        self._recent: OrderedDict[int, None] = OrderedDict()
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
        #: author → (fork client id, version at which its last operations were merged).
        self._fork_clients: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: Appends accepted by the store but not yet durable; the document is not evictable
        #: while any is pending.
        self.pending = 0
        #: When the engine last used it (its clock's seconds), for idle eviction.
        self.last_used = 0.0

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

    # -- history -------------------------------------------------------------------------

    def replay(self, entry: LogEntry) -> None:
        """Apply a stored entry (on load, or from another node)."""
        if entry.update:
            self.doc.apply_update(entry.update)
        self._captured.clear()
        self.record(entry.version, entry.update, entry.meta)

    @property
    def data(self) -> dict[str, Any]:
        """The JSON view at :attr:`version` (not to be mutated)."""
        if self._stale:
            data = dict(self._data)
            for key in self._stale:
                data[key] = str(self.root[key])
            self._data, self._stale = data, frozenset()
        return self._data

    @data.setter
    def data(self, value: dict[str, Any]) -> None:
        self._data, self._stale = value, frozenset()

    def apply_client_update(
        self, update: bytes
    ) -> tuple[dict[str, Any], frozenset[str], bytes | None]:
        """Apply a client's Yjs update: the new JSON view but for the text fields it leaves
        out of date (:func:`collab.ydoc.apply_client_update`; those of earlier updates
        included), those fields, and the update as integrated (``None`` if it changed nothing:
        already seen, or waiting for missing dependencies). The caller sets the view
        (:meth:`set_view`) and records the new version (:meth:`record`)."""
        self._captured.clear()
        data, stale = ydoc.apply_client_update(self.root, self._watch, update, self._data)
        return data, stale | self._stale, self.take_update() if self._captured else None

    def set_view(self, data: dict[str, Any], stale: frozenset[str]) -> None:
        """The JSON view, but for the text fields ``stale``, whose values lag the CRDT."""
        self._data, self._stale = data, stale

    def text_bytes(self, key: str) -> int:
        """The UTF-8 length of the top-level text field ``key`` (without converting it)."""
        return len(self.root[key])

    def begin(self) -> None:
        """Start capturing the updates of the transactions about to run."""
        self._captured.clear()

    def take_update(self) -> bytes:
        """What the transactions since :meth:`begin` changed, as one Yjs update (the empty
        update if nothing changed)."""
        captured = self._captured[:]
        self._captured.clear()
        if not captured:
            return EMPTY_UPDATE
        return captured[0] if len(captured) == 1 else merge_updates(*captured)

    @property
    def floor(self) -> int:
        """The oldest version a stale write may be based on."""
        return max(self.checkpoint_version, self.version - self.history_limit)

    def record(self, version: int, update: bytes, meta: dict[str, Any]) -> None:
        """Book-keeping after the CRDT has moved to ``version`` by ``update``."""
        self.version = version
        self.updates[version] = update
        self._captured.clear()  # merges and Yjs updates fire the observer too
        op_id = meta.get("opId")
        if op_id:
            self.op_ids[op_id] = version
            while len(self.op_ids) > self.opid_limit:
                self.op_ids.popitem(last=False)
        for path, c in meta.get("clocks", {}).items():
            self.clocks[path] = (float(c[0]), str(c[1]), version)

    def retained(self, version: int) -> bool:
        return self.floor <= version <= self.version

    def state_at(self, version: int) -> bytes:
        """The document at a retained version, as a Yjs update from the empty document."""
        state = self._states.get(version)
        if state is not None:
            self._touch(version)
            return state
        anchor = max(v for v in self._states if v <= version)
        a = (version // ANCHOR_EVERY) * ANCHOR_EVERY
        if anchor < a:  # build (and keep) the anchor on the way
            self._states[a] = merge_updates(
                self._states[anchor], *(self.updates[v] for v in range(anchor + 1, a + 1))
            )
            anchor = a
        if anchor == version:
            state = self._states[anchor]
        else:
            state = merge_updates(
                self._states[anchor], *(self.updates[v] for v in range(anchor + 1, version + 1))
            )
            self._states[version] = state
            self._touch(version)
        # Only now: the anchor just built may be older than the ones kept (the history floor,
        # for a checkpoint), and pruning it before its use failed every compaction.
        self._prune_anchors()
        return state

    def _prune_anchors(self) -> None:
        """Keep the checkpoint's state and the newest few anchors: stale writes are almost
        always based on recent versions, and a full state per 32 versions of a long history
        adds up over thousands of live documents (older bases rebuild from the checkpoint)."""
        anchors = sorted(
            v
            for v in self._states
            if v % ANCHOR_EVERY == 0 and v != self.checkpoint_version and v not in self._recent
        )
        for v in anchors[:-KEEP_ANCHORS]:
            del self._states[v]

    def _touch(self, version: int) -> None:
        """Keep only a few non-anchor states (the bases stale writes asked for lately)."""
        if version % ANCHOR_EVERY == 0 or version == self.checkpoint_version:
            return
        self._recent[version] = None
        self._recent.move_to_end(version)
        while len(self._recent) > 8:
            old, _ = self._recent.popitem(last=False)
            self._states.pop(old, None)

    def json_at(self, version: int, view: Doc[Any] | None = None) -> dict[str, Any]:
        """The JSON view at a retained version (not to be mutated). ``view``, if given, is a
        document already holding that version (saves rebuilding one)."""
        if version == self.version:
            return self.data
        cached = self._json_cache.get(version)
        if cached is None:
            if view is None:
                view = Doc()
                view.apply_update(self.state_at(version))
            cached = ydoc.to_json(ydoc.root_of(view))
            self._cache(self._json_cache, version, cached)
        return cached

    def fork_client(self, author: str, base_version: int) -> int:
        """The client id a stale write's fork edits as.

        Each fork needs a client id whose operations all lie within the fork's base, or the
        fork's new operations would reuse clocks already taken. An author's previous fork id
        qualifies once the write's base includes the version its operations were merged at —
        the usual case, since an author has seen its own write acknowledged. Reusing it keeps
        the number of Yjs clients per document proportional to authors, not to stale writes
        (each client fragments the document's blocks and grows its state vector).
        """
        known = self._fork_clients.get(author)
        if known is not None and base_version >= known[1]:
            return known[0]
        return ydoc.fresh_client_id()

    def fork_used(self, author: str, client_id: int, version: int) -> None:
        """Record that ``author``'s fork operations were merged at ``version``."""
        self._fork_clients[author] = (client_id, version)
        self._fork_clients.move_to_end(author)
        while len(self._fork_clients) > 256:
            self._fork_clients.popitem(last=False)

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

    def checkpoint_written(self, checkpoint: Checkpoint) -> None:
        """Forget the history the store no longer keeps either."""
        if checkpoint.version <= self.checkpoint_version:
            return
        self.checkpoint_version = checkpoint.version
        self._states = {v: st for v, st in self._states.items() if v > checkpoint.version}
        self._states[checkpoint.version] = checkpoint.state
        for v in [v for v in self.updates if v <= checkpoint.version]:
            del self.updates[v]
        for v in [v for v in self._json_cache if v < checkpoint.version]:
            del self._json_cache[v]
