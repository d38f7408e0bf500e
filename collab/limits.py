"""What a document may contain, and the one walk that checks it.

Every JSON value that reaches the engine (a write's ``data``, a resolution's value, the JSON
view of a Yjs update) passes :func:`validate_data` before anything is stored. The walk also
normalises the value to what the CRDT gives back (integral floats become ints), so that the
JSON a writer sees acknowledged is byte for byte what a later reader gets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from collab.errors import CollabError, ErrorCode, invalid

#: JavaScript's Number.MAX_SAFE_INTEGER: larger integers do not survive a JS client.
MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one document; every one is a documented, configurable setting."""

    #: Serialized size of the whole document (UTF-8 JSON bytes).
    max_bytes: int = 1_048_576
    #: Nesting depth of objects and lists (the document object itself is depth 1).
    max_depth: int = 32
    #: Object members plus list elements, over the whole document.
    max_fields: int = 10_000
    #: Characters in any one string (text fields included).
    max_string: int = 1_000_000
    #: Characters in an object key.
    max_key: int = 256
    #: Declared text fields per document.
    max_text_fields: int = 64


DEFAULT_LIMITS = Limits()


def validate_data(
    data: Any, limits: Limits = DEFAULT_LIMITS, text_fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Check ``data`` against ``limits`` and return a normalised copy.

    Raises :class:`CollabError` with ``invalid_payload`` (wrong shape, non-finite number,
    unsafe integer, lone surrogate, over-deep) or ``payload_too_large`` (size, fields, string
    length). Declared text fields must be strings when present; when absent they are kept as
    empty strings, because the document's ``Y.Text`` for them always exists.
    """
    if not isinstance(data, dict):
        raise invalid(f"data must be a JSON object, got {json_type(data)}")
    counter = [0]
    out: dict[str, Any] = _walk(data, limits, 1, counter, "data")
    for name in text_fields:
        value = out.get(name)
        if value is None and name not in out:
            out[name] = ""
        elif not isinstance(value, str):
            raise invalid(f"text field {name!r} must be a string, got {json_type(value)}")
    try:
        size = len(orjson.dumps(out))
    except orjson.JSONEncodeError as exc:  # lone surrogates and the like
        raise invalid(f"data is not valid JSON text: {exc}") from None
    if size > limits.max_bytes:
        raise CollabError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"document is {size} bytes, over the limit of {limits.max_bytes}",
        )
    return out


def validate_text_fields(text_fields: Any, limits: Limits = DEFAULT_LIMITS) -> tuple[str, ...]:
    """Check a ``textFields`` declaration: a list of distinct top-level field names."""
    if text_fields is None:
        return ()
    if not isinstance(text_fields, list | tuple) or not all(
        isinstance(f, str) and f for f in text_fields
    ):
        raise invalid("textFields must be a list of non-empty field names")
    if len(text_fields) > limits.max_text_fields:
        raise CollabError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"{len(text_fields)} text fields, over the limit of {limits.max_text_fields}",
        )
    for f in text_fields:
        if len(f) > limits.max_key:
            raise invalid(f"text field name longer than {limits.max_key} characters")
        _check_str(f, "textFields")
    return tuple(dict.fromkeys(text_fields))


#: Where a value sits, built only when an error needs it: ``(parent, key)`` pairs down from
#: the root's name (formatting a path string for every field cost more than the checks).
Where = tuple[Any, str | int] | str


def _at(where: Where) -> str:
    parts: list[str] = []
    while isinstance(where, tuple):
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return where + "".join(reversed(parts))


def _walk(value: Any, limits: Limits, depth: int, counter: list[int], where: Where) -> Any:
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        if len(value) > limits.max_string:
            raise CollabError(
                ErrorCode.PAYLOAD_TOO_LARGE,
                f"{_at(where)}: string of {len(value)} characters, over {limits.max_string}",
            )
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise invalid(f"{_at(where)}: integer {value} is outside the JSON-safe range ±(2^53-1)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise invalid(f"{_at(where)}: number must be finite, got {value}")
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if depth > limits.max_depth:
        raise invalid(f"{_at(where)}: nested deeper than {limits.max_depth} levels")
    if isinstance(value, dict):
        counter[0] += len(value)
        _check_fields(counter[0], limits)
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise invalid(f"{_at(where)}: object keys must be strings")
            if len(k) > limits.max_key:
                raise invalid(f"{_at(where)}: key longer than {limits.max_key} characters")
            out[k] = _walk(v, limits, depth + 1, counter, (where, k))
        return out
    if isinstance(value, list | tuple):
        counter[0] += len(value)
        _check_fields(counter[0], limits)
        return [_walk(v, limits, depth + 1, counter, (where, i)) for i, v in enumerate(value)]
    raise invalid(f"{_at(where)}: {json_type(value)} is not a JSON value")


def _check_fields(count: int, limits: Limits) -> None:
    if count > limits.max_fields:
        raise CollabError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"more than {limits.max_fields} fields and elements"
        )


def _check_str(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"{where}: string is not valid Unicode (lone surrogate)") from None


def json_type(value: object) -> str:
    """A value's type as a JavaScript developer names it, for error messages (the one place
    the engine, the catalogue and the gateway name types)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes | bytearray | memoryview):
        return "binary"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
