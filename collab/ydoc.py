"""The Yjs view of a document, and JSON edits expressed as CRDT operations.

A document's canonical state is a pycrdt ``Doc`` with one root ``Y.Map`` named ``data``:
declared text fields are ``Y.Text``, nested objects ``Y.Map``, lists ``Y.Array``, everything
else a plain value (CONTRACT.md, "The Yjs view"). A JSON write becomes the smallest set of
CRDT operations that turns the old JSON into the new one: text by character, objects by key,
lists by element. Expressed that way, a stale write applied to a fork of the document at its
base version and merged into the current state keeps both sides' insertions.

pycrdt's ``Text`` indexes by UTF-8 byte offset; every position here is converted from Python
string indices (code points) accordingly.
"""

from __future__ import annotations

import random
from difflib import SequenceMatcher
from typing import Any

import orjson
from pycrdt import Array, Doc, Map, Text
from pycrdt._pycrdt import TextEvent

from collab.errors import invalid
from collab.limits import MAX_SAFE_INTEGER
from collab.paths import json_equal

ROOT = "data"

#: Text middles longer than this (after trimming the common prefix and suffix) are replaced
#: whole rather than diffed character by character: difflib is quadratic in the worst case.
TEXT_DIFF_LIMIT = 20_000


def new_doc(client_id: int | None = None) -> Doc[Any]:
    """A fresh document with the given client id, or one of its own
    (see :func:`fresh_client_id`)."""
    return Doc(client_id=client_id or fresh_client_id())


def fresh_client_id() -> int:
    """A random 52-bit client id, as pycrdt itself draws them.

    Two writers sharing a client id corrupt a document, and every fork that will be edited
    needs a new one. With 52 random bits the odds that a document holding even a million
    client ids meets a duplicate on the next fork are about 2e-10, so the id is not checked
    against the document's state vector (parsing it on every fork made stale merges slow
    down as documents aged).
    """
    return random.getrandbits(52) or 1


def root_of(doc: Doc[Any]) -> Map[Any]:
    root: Map[Any] = doc.get(ROOT, type=Map)
    return root


def create_state(data: dict[str, Any], text_fields: tuple[str, ...]) -> bytes:
    """The initial Yjs state of a new document, as an update from the empty document."""
    doc = new_doc()
    root = root_of(doc)
    with doc.transaction():
        for k, v in data.items():
            root[k] = to_y(v, k in text_fields)
    return doc.get_update()


def to_y(value: Any, is_text: bool = False) -> Any:
    """A JSON value as a CRDT value to insert."""
    if is_text and isinstance(value, str):
        return Text(value)
    if isinstance(value, dict):
        return Map({k: to_y(v) for k, v in value.items()})
    if isinstance(value, list):
        return Array([to_y(v) for v in value])
    return value


def to_json(root: Map[Any]) -> dict[str, Any]:
    """The JSON view of the ``data`` map; integral floats come back as ints.

    Raises ``invalid_payload`` for content JSON cannot hold (binary, sub-documents, XML),
    which only a Yjs client can put there.
    """
    return _map_json(root)


def _map_json(m: Map[Any]) -> dict[str, Any]:
    return {k: _value_json(v) for k, v in m.items()}


def _value_json(v: Any) -> Any:
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() and abs(v) <= MAX_SAFE_INTEGER else v
    if isinstance(v, int):
        return v
    if isinstance(v, Text):
        return str(v)
    if isinstance(v, Map):
        return _map_json(v)
    if isinstance(v, Array):
        return [_value_json(x) for x in v]
    if isinstance(v, dict):  # plain JSON objects inserted as values by a Yjs client
        return {str(k): _value_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_value_json(x) for x in v]
    raise invalid(f"document holds a {type(v).__name__}, which has no JSON form")


class FieldWatch:
    """Which top-level fields of a document's root map its transactions touch, and which of
    them changed only as a text directly under the root.

    One deep observer for the document's lifetime (registering one per update cost more than
    applying the update). It is registered on the root's integrated (Rust) type, whose
    events give ``path`` and ``keys`` directly: pycrdt's ``observe_deep`` would first wrap
    every event, converting its whole delta, for nothing here. The callback holds only plain
    containers, never the document nor this object (the Rust side owns the callback, out of
    the cycle collector's sight); the caller keeps the subscription.
    """

    __slots__ = ("others", "subscription", "texts", "touched")

    def __init__(self, root: Map[Any]) -> None:
        touched: set[str] = set()
        texts: set[str] = set()
        others: set[str] = set()
        self.touched = touched
        #: Fields whose only change was an edit of the text that is their value.
        self.texts = texts
        #: Fields set, deleted or changed inside (a nested object, list or text).
        self.others = others

        def on_deep(events: list[Any]) -> None:
            for event in events:
                path = event.path
                if path:
                    key = str(path[0])
                    touched.add(key)
                    (texts if len(path) == 1 and type(event) is TextEvent else others).add(key)
                else:
                    for k in event.keys:
                        key = str(k)
                        touched.add(key)
                        others.add(key)

        self.subscription = root.integrated.observe_deep(on_deep)

    def clear(self) -> None:
        self.touched.clear()
        self.texts.clear()
        self.others.clear()


def apply_client_update(
    root: Map[Any], watch: FieldWatch, update: bytes, data: dict[str, Any]
) -> tuple[dict[str, Any], frozenset[str]]:
    """Apply a Yjs update from a client to ``root``'s document: the new JSON view, and the
    text fields it leaves out of date.

    Only the fields the update touched (``watch`` names them) are converted again, so a
    keystroke in a 1,000-field document converts one field; a text field that only changed
    as a text is not converted at all but returned as stale: reading a ``Y.Text`` back costs
    time linear in its CRDT (tombstones included), the largest cost of ingesting a keystroke
    into a long text, and most keystrokes' JSON view is never read (the caller converts it
    when it is: :class:`collab.document.LiveDocument`). Whether the update changed anything,
    and what, is the caller's transaction observer's to say."""
    watch.clear()
    try:
        root.doc.apply_update(update)
    except Exception:
        raise invalid("malformed Yjs update") from None
    touched = watch.touched
    if not touched:
        return data, frozenset()
    stale = frozenset(watch.texts - watch.others)
    out = dict(data)
    for key in touched - stale:
        if key in root:
            out[key] = _value_json(root[key])
        else:
            out.pop(key, None)
    return out, stale


def patch(
    root: Map[Any], old: dict[str, Any], new: dict[str, Any], text_fields: tuple[str, ...]
) -> None:
    """Apply to ``root`` (inside the caller's transaction) the operations turning ``old`` into
    ``new``. ``old`` must be the JSON view of ``root``."""
    for k in old.keys() - new.keys():
        del root[k]
    for k, nv in new.items():
        if k not in old:
            root[k] = to_y(nv, k in text_fields)
            continue
        ov = old[k]
        if ov is nv or json_equal(ov, nv):
            continue
        if k in text_fields and isinstance(ov, str) and isinstance(nv, str):
            cur = root[k]
            if isinstance(cur, Text):
                patch_text(cur, ov, nv)
                continue
        _patch_member(root, k, ov, nv)


def _patch_member(container: Map[Any] | Array[Any], key: Any, ov: Any, nv: Any) -> None:
    cur = container[key]
    if type(ov) is dict and type(nv) is dict and isinstance(cur, Map):
        _patch_map(cur, ov, nv)
    elif type(ov) is list and type(nv) is list and isinstance(cur, Array):
        _patch_array(cur, ov, nv)
    elif isinstance(container, Map):
        container[key] = to_y(nv)
    else:
        del container[key]
        container.insert(key, to_y(nv))


def _patch_map(m: Map[Any], old: dict[str, Any], new: dict[str, Any]) -> None:
    for k in old.keys() - new.keys():
        del m[k]
    for k, nv in new.items():
        if k not in old:
            m[k] = to_y(nv)
        elif not json_equal(old[k], nv):
            _patch_member(m, k, old[k], nv)


def _patch_array(arr: Array[Any], old: list[Any], new: list[Any]) -> None:
    a = [_key(x) for x in old]
    b = [_key(x) for x in new]
    ops = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    # Right to left, so that earlier indices stay valid.
    for tag, i1, i2, j1, j2 in reversed(ops):
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for off in range(i2 - i1 - 1, -1, -1):
                ov, nv = old[i1 + off], new[j1 + off]
                if type(ov) is type(nv) and type(ov) in (dict, list):
                    _patch_member(arr, i1 + off, ov, nv)
                else:
                    del arr[i1 + off]
                    arr.insert(i1 + off, to_y(nv))
            continue
        if i2 > i1:
            del arr[i1:i2]
        for off, nv in enumerate(new[j1:j2]):
            arr.insert(i1 + off, to_y(nv))


def _key(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def patch_text(text: Text, old: str, new: str) -> None:
    """Character-level edits turning ``old`` into ``new`` (``old`` must be ``str(text)``).

    The common prefix and suffix are trimmed first (one keystroke costs O(n) string compares
    and one CRDT op); the middle is diffed with difflib so that several separate insertions
    stay insertions and do not replace the text between them.
    """
    p = common_prefix(old, new)
    s = common_suffix(old, new, p)
    a, b = old[p : len(old) - s], new[p : len(new) - s]
    if len(a) + len(b) <= TEXT_DIFF_LIMIT and a and b:
        ops = [
            op
            for op in SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            if op[0] != "equal"
        ]
    else:
        ops = [("replace", 0, len(a), 0, len(b))]
    ascii_text = old.isascii()
    for _tag, i1, i2, j1, j2 in reversed(ops):
        start = p + i1
        if ascii_text:
            lo, hi = start, p + i2
        else:
            lo = len(old[:start].encode("utf-8"))
            hi = lo + len(old[start : p + i2].encode("utf-8"))
        if hi > lo:
            del text[lo:hi]
        if j2 > j1:
            text.insert(lo, b[j1:j2])


def common_prefix(a: str, b: str) -> int:
    """Length of the common prefix, by bisection on slice compares (memcmp speed, not a
    Python-level loop over a 100 KB text on every keystroke)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: str, b: str, prefix: int) -> int:
    """Length of the common suffix not overlapping a common prefix of length ``prefix``."""
    la, lb = len(a), len(b)
    lo, hi = 0, min(la, lb) - prefix
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def doc_from_state(state: bytes, client_id: int | None = None) -> Doc[Any]:
    """A new editable document holding ``state``, editing as ``client_id`` (which must have
    no operation beyond those in ``state``) or as a client of its own."""
    doc = new_doc(client_id)
    doc.apply_update(state)
    return doc


def compact_state(state: bytes) -> bytes:
    """``state`` re-encoded without the content of deleted items (tombstones keep only their
    ids), so that a checkpoint does not carry every deleted character forever."""
    gc_doc: Doc[Any] = Doc(skip_gc=False)
    gc_doc.apply_update(state)
    return gc_doc.get_update()
