"""JSON paths, leaf diffs and conflict detection: the three-way view every strategy shares.

A path is a tuple of object keys and list indices; on the wire it is dotted (``site.address``,
``items.2``). A diff lists the *leaf* changes from one JSON object to another: objects are
compared member by member, lists of equal length element by element, and anything else
(scalars, text fields, lists whose length changed, a change of type) is one leaf.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

Path = tuple[str | int, ...]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: The value at a path that does not exist (a deleted or never-set member).
MISSING: Final = _Missing()


def dotted(path: Path) -> str:
    """The wire form of a path."""
    return ".".join(str(p) for p in path)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1`` and ``{} != []``."""
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta is dict:
        if tb is not dict or a.keys() != b.keys():
            return False
        return all(json_equal(v, b[k]) for k, v in a.items())
    if ta is list:
        return tb is list and len(a) == len(b) and all(map(json_equal, a, b))
    if tb is dict or tb is list:
        return False
    return bool(a == b)


def get_path(obj: Any, path: Path) -> Any:
    """The value at ``path`` or :data:`MISSING`."""
    for p in path:
        if isinstance(obj, dict) and isinstance(p, str):
            if p not in obj:
                return MISSING
            obj = obj[p]
        elif isinstance(obj, list) and isinstance(p, int) and 0 <= p < len(obj):
            obj = obj[p]
        else:
            return MISSING
    return obj


def set_path(obj: dict[str, Any], path: Path, value: Any) -> bool:
    """Set (or delete, for :data:`MISSING`) the value at ``path`` in place.

    Returns False, changing nothing, when the path's parent does not exist in ``obj``.
    """
    parent: Any = obj
    for p in path[:-1]:
        parent = get_path(parent, (p,))
        if parent is MISSING:
            return False
    last = path[-1]
    if isinstance(parent, dict) and isinstance(last, str):
        if value is MISSING:
            parent.pop(last, None)
        else:
            parent[last] = value
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        if value is MISSING:
            return False  # list lengths only change through whole-list leaves
        parent[last] = value
        return True
    return False


def diff(old: Any, new: Any, text_fields: Iterable[str] = (), path: Path = ()) -> dict[Path, Any]:
    """Leaf changes turning ``old`` into ``new``: ``{path: new value or MISSING}``."""
    out: dict[Path, Any] = {}
    _diff(old, new, frozenset(text_fields), path, out)
    return out


def _diff(old: Any, new: Any, text: frozenset[str], path: Path, out: dict[Path, Any]) -> None:
    if type(old) is dict and type(new) is dict:
        for k, ov in old.items():
            if k not in new:
                out[(*path, k)] = MISSING
            else:
                nv = new[k]
                if ov is not nv:
                    _diff(ov, nv, text, (*path, k), out)
        for k, nv in new.items():
            if k not in old:
                out[(*path, k)] = nv
        return
    if type(old) is list and type(new) is list and len(old) == len(new):
        for i, (ov, nv) in enumerate(zip(old, new, strict=True)):
            if ov is not nv:
                _diff(ov, nv, text, (*path, i), out)
        return
    if not json_equal(old, new):
        out[path] = new


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two overlapping changes that disagree.

    ``report`` is the deeper of the two paths (what ``conflictedFields`` lists); ``apply`` the
    shallower one, where a winner's whole value must be taken for the result to be coherent.
    """

    report: Path
    apply: Path


def conflicts(
    theirs: Mapping[Path, Any], mine: Mapping[Path, Any], current: Any, incoming: Any
) -> list[Conflict]:
    """Overlapping changes since a common base that do not end at the same value.

    ``theirs`` is the diff base→current, ``mine`` base→incoming. Two paths overlap when they
    are equal or one is a prefix of the other; they conflict when ``current`` and ``incoming``
    hold different values at the deeper of the two.
    """
    if not theirs or not mine:
        return []
    under: dict[Path, list[Path]] = {}
    for q in theirs:
        for i in range(len(q)):
            under.setdefault(q[:i], []).append(q)
    found: dict[Path, Conflict] = {}
    for p in mine:
        related: list[tuple[Path, Path]] = []  # (deeper, shallower)
        if p in theirs:
            related.append((p, p))
        for i in range(len(p)):
            if p[:i] in theirs:
                related.append((p, p[:i]))
        for q in under.get(p, ()):
            related.append((q, p))
        for deep, shallow in related:
            if deep not in found and not json_equal(
                get_path(current, deep), get_path(incoming, deep)
            ):
                found[deep] = Conflict(report=deep, apply=shallow)
    return sorted(found.values(), key=lambda c: (len(c.report), dotted(c.report)))


def related(p: Path, q: Path) -> bool:
    """Whether one path is a prefix of (or equal to) the other."""
    n = min(len(p), len(q))
    return p[:n] == q[:n]
