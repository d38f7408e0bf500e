"""The JSON module of the Socket.IO server (``AsyncServer(json=...)``): depth-limited decoding,
orjson for speed, the standard module's values.

Why: python-socketio decodes a packet before any handler runs. With the standard ``json``
module, a payload nested ~1,000 deep raises ``RecursionError`` inside python-socketio, the
packet is dropped and the client never gets its ack (python-engineio's default module also
raises ``ValueError`` on an integer of more than 100 digits: dropped as well). A decode error
cannot carry the ack: the ack id is read before the JSON, but an exception ends the packet.

So :meth:`JsonCodec.loads` never fails on valid JSON. When a text is nested deeper than
``max_depth`` (the whole packet counts: the event's argument array is level 1, its payload
object level 2), or holds an integer literal of more than 100 digits, it returns the event
name with an :class:`Oversized` marker in place of the arguments
(``["document:update", Oversized(...)]``); the handler's validation (``gateway.wire``) answers
``invalid_payload`` in the ack, or as an ``error`` event, like any other bad input. Text that is
not JSON at all still raises ``ValueError`` (python-engineio relies on it to tell JSON from
plain strings such as the ``probe`` of a websocket upgrade); no Socket.IO client writes it.

Values are exactly the standard module's (NaN and Infinity literals, lone-surrogate escapes,
big integers included): orjson decodes when it gives the same value, which is every text
without a run of 19 digits (orjson turns integers beyond 64 bits into floats) and without the
literals or escapes it refuses; the standard module decodes the rest. Encoding uses orjson,
falling back to the standard module for what orjson refuses (lone surrogates, integers beyond
64 bits); one difference: NaN and ±Infinity are written ``null``, as ``JSON.stringify`` does
(the standard module writes ``NaN``, which no JavaScript client can parse; the engine never
stores them).

python-socketio and python-engineio keep the module in a class attribute of their packet
classes: it is process-wide, clients of the same process included (the last server created
sets it).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

#: Integer literals longer than this are refused (python-engineio's own bound; Python's int
#: parsing is quadratic in the number of digits).
MAX_INT_DIGITS = 100
#: orjson's own nesting limit: texts deeper than this are decoded by the standard module.
ORJSON_MAX_DEPTH = 1024

# Every digit becomes "0": a run of 19 zeros in the translation is a run of 19 digits.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
# The event name at the start of a Socket.IO event's argument array.
_HEAD = re.compile(r'\s*\[\s*("(?:[^"\\]|\\.)*")\s*[,\]]')


class Oversized:
    """Stands for an event's arguments that were not decoded (too deep, number too long).

    Never a JSON value: every handler's validation refuses it (``invalid_payload``).
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Oversized({self.reason!r})"


class JsonCodec:
    """A ``json``-like object (``loads`` / ``dumps``) refusing texts deeper than ``max_depth``."""

    def __init__(self, max_depth: int = 64) -> None:
        if not 1 <= max_depth <= ORJSON_MAX_DEPTH // 2:
            raise ValueError(f"max_depth must be between 1 and {ORJSON_MAX_DEPTH // 2}")
        self.max_depth = max_depth

    # -- decoding -------------------------------------------------------------------------

    def loads(self, s: str | bytes | bytearray, **kwargs: Any) -> Any:
        """The value of the JSON text ``s``, as ``json.loads`` gives it, or the event name and
        an :class:`Oversized` marker (see the module docstring). ``ValueError`` if ``s`` is not
        JSON."""
        if kwargs:
            return self._standard(s, **kwargs)
        raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else bytes(s)
        if _LONG_RUN in raw.translate(_DIGITS):
            return self._standard(s)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # NaN / Infinity literals, lone surrogates, 1e400, deeper than orjson goes, or not
            # JSON at all: the standard module decides.
            return self._standard(s)
        return self._checked(raw.count(b"[") + raw.count(b"{"), value)

    def _standard(self, s: str | bytes | bytearray, **kwargs: Any) -> Any:
        too_long = False

        def parse_int(digits: str) -> int:
            nonlocal too_long
            if len(digits.lstrip("-")) > MAX_INT_DIGITS:
                too_long = True
                return 0
            return int(digits)

        kwargs.setdefault("parse_int", parse_int)
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            return self._refuse(s, None, f"nested deeper than {self.max_depth} levels")
        if too_long:
            return self._refuse(s, value, f"holds a number longer than {MAX_INT_DIGITS} digits")
        text = s if isinstance(s, str) else bytes(s).decode("utf-8", "replace")
        return self._checked(text.count("[") + text.count("{"), value)

    def _checked(self, brackets: int, value: Any) -> Any:
        # A text with no more brackets than the limit cannot nest deeper: skip the walk.
        if brackets <= self.max_depth or depth_at_most(value, self.max_depth):
            return value
        return self._refuse(None, value, f"nested deeper than {self.max_depth} levels")

    @staticmethod
    def _refuse(s: str | bytes | bytearray | None, value: Any, reason: str) -> Any:
        marker = Oversized(reason)
        if isinstance(value, list):
            head = value[0] if value else None
        else:
            head = _head(s) if s is not None else None
        return [head, marker] if isinstance(head, str) else marker

    # -- encoding -------------------------------------------------------------------------

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``obj`` as compact JSON text (orjson), or as ``json.dumps(obj, **kwargs)`` writes it
        when orjson refuses it or options other than ``separators`` are given."""
        if kwargs.keys() <= {"separators"}:
            try:
                return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()
            except (orjson.JSONEncodeError, TypeError):
                pass
        return json.dumps(obj, **kwargs)


def depth_at_most(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` levels of arrays and objects (iterative)."""
    level = [value] if isinstance(value, list | dict) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return False
        below: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            below.extend(c for c in children if isinstance(c, list | dict))
        level = below
    return True


def _head(s: str | bytes | bytearray) -> str | None:
    """The event name of a Socket.IO event's argument array, read without decoding the rest."""
    text = s if isinstance(s, str) else bytes(s[:4096]).decode("utf-8", "replace")
    match = _HEAD.match(text)
    if match is None:
        return None
    try:
        name = json.loads(match.group(1))
    except ValueError:
        return None
    return name if isinstance(name, str) else None
