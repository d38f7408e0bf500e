"""How a write lands on a live document: the fast path, and the stale path per strategy.

Every function here runs with the document's lock held and mutates the live CRDT; it returns
what the engine needs to log and answer. If one raises after mutating, the engine evicts the
live document (it is rebuilt from the store, which never saw the failed write).

- ``last-write-wins``: a three-way merge in JSON: changes made on one side only are all kept;
  on each conflicted field the winner's whole value is taken. Documents: the later arrival
  wins. Resources: the greater (timestamp, tie-break key) wins, compared against the field
  clocks of the writes made since the stale write's base, so the same set of concurrent
  writes gives the same state in any arrival order.
- ``merge``: the incoming JSON is turned into CRDT operations against a fork of the document
  at the write's base version, and that fork's update is merged into the current state. Text
  merges by character, objects by key, lists by element; a scalar changed on both sides is
  then set to the winner's value (as above).
- ``manual``: handled by the engine (nothing is applied); disjoint stale writes take the
  merge path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collab import ydoc
from collab.document import LiveDocument
from collab.paths import MISSING, Conflict, Path, diff, dotted, get_path, related, set_path

#: (timestamp ms, tie-break key): the order of last-write-wins among resource writes.
WriteClock = tuple[float, str]


@dataclass(slots=True)
class Landing:
    """What applying a write did to the live document."""

    update: bytes
    data: dict[str, Any]
    conflicted: list[str] = field(default_factory=list)
    clocks: dict[str, list[Any]] = field(default_factory=dict)


def fast_path(live: LiveDocument, incoming: dict[str, Any], clock: WriteClock | None) -> Landing:
    """A write from the current version: applied as is."""
    clocks: dict[str, list[Any]] = {}
    if clock is not None:
        for p in diff(live.data, incoming, live.meta.text_fields):
            clocks[dotted(p)] = [clock[0], clock[1]]
    live.begin()
    with live.doc.transaction(origin="json"):
        ydoc.patch(live.root, live.data, incoming, live.meta.text_fields)
    return Landing(update=live.take_update(), data=incoming, clocks=clocks)


def detect(
    live: LiveDocument, base_json: dict[str, Any], incoming: dict[str, Any]
) -> tuple[dict[Path, Any], dict[Path, Any], list[Conflict]]:
    """The two diffs since the base and the conflicts between them."""
    from collab.paths import conflicts

    tf = live.meta.text_fields
    theirs = diff(base_json, live.data, tf)
    mine = diff(base_json, incoming, tf)
    return theirs, mine, conflicts(theirs, mine, live.data, incoming)


def winner(
    live: LiveDocument, base_version: int, clock: WriteClock | None
) -> Callable[[Conflict], bool]:
    """Whether the incoming write wins a conflict: by arrival for documents (it is the later
    write), by clock for resources (against writes made since its base)."""
    if clock is None:
        return lambda c: True

    def wins(c: Conflict) -> bool:
        best: WriteClock | None = None
        for path, (ts, key, version) in live.clocks.items():
            if version > base_version and _related_dotted(path, c):
                if best is None or (ts, key) > best:
                    best = (ts, key)
        return best is None or clock > best

    return wins


def _related_dotted(path: str, c: Conflict) -> bool:
    return _related_str(path, dotted(c.apply)) or _related_str(path, dotted(c.report))


def _related_str(a: str, b: str) -> bool:
    if len(a) > len(b):
        a, b = b, a
    return b == a or b.startswith(a + ".")


def lww(
    live: LiveDocument, base_version: int, incoming: dict[str, Any], clock: WriteClock | None
) -> Landing:
    """Stale write, last-write-wins: a three-way merge in JSON, then applied as a patch."""
    base_json = live.json_at(base_version)
    theirs, mine, found = detect(live, base_json, incoming)
    wins = winner(live, base_version, clock)
    result = copy.deepcopy(live.data)
    taken: list[Path] = []
    for p, value in sorted(mine.items(), key=lambda kv: len(kv[0])):
        if not any(related(p, q) for q in theirs):
            set_path(result, p, value)
            taken.append(p)
    for c in found:
        if wins(c) and c.apply not in taken:
            set_path(result, c.apply, get_path(incoming, c.apply))
            taken.append(c.apply)
    landing = fast_path(live, result, None)
    landing.conflicted = [dotted(c.report) for c in found]
    landing.clocks = _clocks(clock, taken, _agreed(mine, theirs, found, wins))
    return landing


def _agreed(
    mine: dict[Path, Any],
    theirs: dict[Path, Any],
    found: list[Conflict],
    wins: Callable[[Conflict], bool],
) -> list[Path]:
    """Paths both sides changed to the same value where the incoming write is the later one:
    its clock must still move forward there, or a third write ordered between the two would
    win in one arrival order and lose in another."""
    reported = {c.report for c in found} | {c.apply for c in found}
    return [
        p
        for p in mine
        if p not in reported
        and any(related(p, q) for q in theirs)
        and wins(Conflict(report=p, apply=p))
    ]


def _clocks(clock: WriteClock | None, *groups: list[Path]) -> dict[str, list[Any]]:
    if clock is None:
        return {}
    return {dotted(p): [clock[0], clock[1]] for g in groups for p in g}


def merge(
    live: LiveDocument,
    base_version: int,
    incoming: dict[str, Any],
    clock: WriteClock | None,
    author: str = "",
) -> Landing:
    """Stale write, merge: the incoming edit replayed as CRDT operations on a fork at its base
    and merged; then scalars changed on both sides settled by last-write-wins."""
    fork_client = live.fork_client(author, base_version)
    fork = ydoc.doc_from_state(live.state_at(base_version), fork_client)
    base_json = live.json_at(base_version, view=fork)
    theirs, mine, found = detect(live, base_json, incoming)
    tf = live.meta.text_fields
    current = live.data
    sv = live.doc.get_state()
    fork_sv = fork.get_state()
    with fork.transaction(origin="fork"):
        ydoc.patch(ydoc.root_of(fork), base_json, incoming, tf)
    live.doc.apply_update(fork.get_update(fork_sv))
    live.fork_used(author, fork_client, live.version + 1)
    merged = ydoc.to_json(live.root)

    wins = winner(live, base_version, clock)
    settled = merged
    for c in found:
        if _crdt_merges(c, base_json, current, incoming, tf):
            continue
        want = get_path(incoming if wins(c) else current, c.apply)
        if settled is merged:
            settled = copy.deepcopy(merged)
        if want is MISSING and not c.apply:
            continue
        set_path(settled, c.apply, want)
    if settled is not merged:
        with live.doc.transaction(origin="json"):
            ydoc.patch(live.root, merged, settled, tf)
    clocks = _clocks(
        clock,
        [p for p in mine if not any(related(p, q) for q in theirs)],
        [c.apply for c in found if wins(c)],
        _agreed(mine, theirs, found, wins),
    )
    return Landing(
        update=live.doc.get_update(sv),
        data=settled,
        conflicted=[dotted(c.report) for c in found],
        clocks=clocks,
    )


def _crdt_merges(
    c: Conflict, base: Any, current: Any, incoming: Any, text_fields: tuple[str, ...]
) -> bool:
    """Whether the CRDT's own merge is the answer for this conflict: text fields, and
    objects or lists on every side (merged by key / by element). List elements are merged by
    element too: concurrent replacements of one element both survive."""
    p = c.apply
    b, cur, inc = get_path(base, p), get_path(current, p), get_path(incoming, p)
    if len(p) == 1 and p[0] in text_fields:
        return isinstance(b, str) and isinstance(cur, str) and isinstance(inc, str)
    for t in (dict, list):
        if type(b) is t and type(cur) is t and type(inc) is t:
            return True
    if p and isinstance(p[-1], int):
        return True
    return False
