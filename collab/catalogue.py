"""The catalogue of server → client events: names, payload types and routing.

Every event of the seed guide (``websocket-integration-guide.md``) is described here once, as
data: its payload fields with their types, the room it goes to (CONTRACT.md, "Server →
client") and whether an ERP service may publish it. The gateway's ``POST /api/events`` and the
Python publisher both go through this module, so an event that reaches a client always has the
shape the guide promised.

The usual sequence is :func:`prepare_publish`, or its three steps: :func:`check_publishable`
(refuse unknown and engine-only events), :func:`validate_event` (payload types, every error at
once) and :func:`route_event` (which room).

Payload rules, beyond the guide's TypeScript types:

- ``number`` is an int or float, never a bool, finite, and an int stays within JavaScript's
  safe integer range (beyond it ``JSON.parse`` silently rounds);
- timestamps are what JS ``toISOString()`` writes: an ISO-8601 date-time with a UTC offset
  (``2024-01-15T10:30:00.000Z``); ``dueDate`` may also be a date (``2024-01-15``). A naive
  date-time is refused: each client would read it in its own time zone;
- an optional field sent as ``null`` is treated as absent (and left out of the payload), so
  clients see the guide's ``field?: type``;
- fields the guide does not name are kept (forward compatible) but must be JSON values.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from typing import Any, Final, Literal

from collab.errors import CollabError, invalid
from collab.limits import json_type
from collab.model import STRATEGIES
from collab.rooms import company_room, user_room

FieldType = Literal["id", "string", "number", "boolean", "any", "timestamp", "date", "string[]"]
"""What a field holds. ``id`` is a non-empty string; ``date`` a date or a timestamp."""

RouteKind = Literal["company", "user", "document"]
"""Where an event goes: its company's room, one user's room, or a joined document's room."""

MAX_SAFE_INTEGER: Final = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: larger ints do not survive ``JSON.parse``."""

MAX_DEPTH: Final = 100
"""Deepest nesting accepted in a payload (a guard against runaway or cyclic values)."""

_MAX_ERRORS_IN_MESSAGE: Final = 5

_TIMESTAMP_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_DATE_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

_TIMESTAMP_REASON: Final = (
    "must be an ISO-8601 date-time with a UTC offset, like 2024-01-15T10:30:00.000Z"
)
_DATE_REASON: Final = (
    "must be an ISO-8601 date (2024-01-15) or date-time with a UTC offset "
    "(2024-01-15T10:30:00.000Z)"
)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field: its type, whether it must be present, and its allowed values.

    ``enum`` (strings only) lists the literal values of a TypeScript union such as
    ``'approved'`` or ``'planning' | 'in_progress' | …``; empty means any value of the type.
    """

    type: FieldType
    required: bool = True
    enum: tuple[str, ...] = ()

    def describe(self) -> str:
        """The type as the Markdown table shows it."""
        if self.enum:
            return " or ".join(f"`{value}`" for value in self.enum)
        return self.type


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One server → client event.

    ``route`` is where it goes; for ``"user"`` events ``target_field`` names the payload field
    holding the user id. ``publishable`` is false for events only the engine emits (presence,
    typing, document collaboration): ``POST /api/events`` refuses them. ``one_of`` names
    optional fields of which at least one must be present (conflict events carry
    ``documentId`` or, for resources, ``resourceId``).
    """

    name: str
    fields: Mapping[str, FieldSpec]
    route: RouteKind
    target_field: str | None
    publishable: bool
    description: str
    one_of: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """Where one published event goes: a company room, or one user's room in that company."""

    room_kind: Literal["company", "user"]
    company_id: str
    user_id: str | None = None

    def __post_init__(self) -> None:
        if (self.room_kind == "user") != (self.user_id is not None):
            raise ValueError("a user route needs a user id, and only a user route has one")

    @property
    def room(self) -> str:
        """The Socket.IO room name (see :mod:`collab.rooms`)."""
        if self.user_id is not None:
            return user_room(self.company_id, self.user_id)
        return company_room(self.company_id)


# --------------------------------------------------------------------------------------------
# The catalogue itself


def _req(type_: FieldType, *enum: str) -> FieldSpec:
    return FieldSpec(type_, True, enum)


def _opt(type_: FieldType, *enum: str) -> FieldSpec:
    return FieldSpec(type_, False, enum)


def _event(
    name: str,
    description: str,
    route: RouteKind,
    fields: dict[str, FieldSpec],
    *,
    target: str | None = None,
    publishable: bool = True,
    one_of: tuple[str, ...] = (),
) -> EventSpec:
    if (route == "user") != (target is not None):
        raise ValueError(f"{name}: a user-routed event, and only one, names its target field")
    if target is not None and fields[target] != _req("id"):
        raise ValueError(f"{name}: target field {target} must be a required id")
    if any(fields[f].required for f in one_of):
        raise ValueError(f"{name}: one_of fields must be optional")
    return EventSpec(
        name, MappingProxyType(dict(fields)), route, target, publishable, description, one_of
    )


PROJECT_STATUSES: Final = ("planning", "in_progress", "on_hold", "completed", "cancelled")
PAYMENT_STATUSES: Final = ("pending", "completed", "failed")
NOTIFICATION_TYPES: Final = ("info", "warning", "error", "success")

_CONFLICT_FIELDS: Final = {
    "documentId": _opt("id"),
    "resourceId": _opt("id"),
    "conflictId": _opt("string"),
    "strategy": _req("string", *STRATEGIES),
    "conflictedFields": _req("string[]"),
    "originalValue": _req("any"),
    "incomingValue": _req("any"),
}

_SPECS: Final = (
    # Project events
    _event(
        "project:created",
        "A new project was created.",
        "company",
        {
            "id": _req("id"),
            "name": _req("string"),
            "companyId": _req("id"),
            "status": _req("string", *PROJECT_STATUSES),
            "createdAt": _req("timestamp"),
        },
    ),
    _event(
        "project:updated",
        "A project was updated.",
        "company",
        {
            "id": _req("id"),
            "name": _req("string"),
            "companyId": _req("id"),
            "status": _req("string", *PROJECT_STATUSES),
            "updatedAt": _req("timestamp"),
        },
    ),
    _event(
        "project:deleted",
        "A project was deleted.",
        "company",
        {"id": _req("id"), "companyId": _req("id")},
    ),
    _event(
        "task:assigned",
        "A task was assigned to a user.",
        "user",
        {
            "taskId": _req("id"),
            "taskName": _req("string"),
            "assignedTo": _req("id"),
            "assignedBy": _req("string"),
            "projectId": _req("id"),
            "dueDate": _opt("date"),
        },
        target="assignedTo",
    ),
    # Financial events
    _event(
        "invoice:paid",
        "An invoice was paid.",
        "company",
        {
            "id": _req("id"),
            "invoiceNumber": _req("string"),
            "amount": _req("number"),
            "paidAt": _req("timestamp"),
            "paidBy": _req("string"),
        },
    ),
    _event(
        "expense:approved",
        "An expense was approved.",
        "company",
        {
            "id": _req("id"),
            "amount": _req("number"),
            "status": _req("string", "approved"),
            "approvedAt": _req("timestamp"),
        },
    ),
    _event(
        "expense:rejected",
        "An expense was rejected.",
        "company",
        {
            "id": _req("id"),
            "amount": _req("number"),
            "status": _req("string", "rejected"),
            "rejectedAt": _req("timestamp"),
            "reason": _opt("string"),
        },
    ),
    _event(
        "payment:processed",
        "A payment was processed.",
        "company",
        {
            "id": _req("id"),
            "amount": _req("number"),
            "method": _req("string"),
            "status": _req("string", *PAYMENT_STATUSES),
            "processedAt": _req("timestamp"),
        },
    ),
    # Inventory events
    _event(
        "stock:updated",
        "Inventory levels changed.",
        "company",
        {
            "id": _req("id"),
            "itemName": _req("string"),
            "quantity": _req("number"),
            "location": _opt("string"),
            "updatedAt": _req("timestamp"),
        },
    ),
    _event(
        "item:added",
        "A new inventory item was added.",
        "company",
        {
            "id": _req("id"),
            "itemName": _req("string"),
            "quantity": _req("number"),
            "location": _opt("string"),
            "addedAt": _req("timestamp"),
        },
    ),
    _event(
        "reorder:triggered",
        "Inventory dropped below its reorder level.",
        "company",
        {
            "itemId": _req("id"),
            "itemName": _req("string"),
            "currentStock": _req("number"),
            "reorderLevel": _req("number"),
            "suggestedQuantity": _req("number"),
        },
    ),
    # User presence events (emitted by the gateway)
    _event(
        "user:online",
        "A user came online (first connection anywhere).",
        "company",
        {
            "userId": _req("id"),
            "status": _req("string", "online"),
            "timestamp": _req("timestamp"),
        },
        publishable=False,
    ),
    _event(
        "user:offline",
        "A user went offline (last connection closed).",
        "company",
        {
            "userId": _req("id"),
            "status": _req("string", "offline"),
            "timestamp": _req("timestamp"),
        },
        publishable=False,
    ),
    _event(
        "user:typing",
        "A user is typing in a shared document.",
        "document",
        {
            "userId": _req("id"),
            "userName": _req("string"),
            "resourceId": _req("id"),
            "resourceType": _req("string"),
        },
        publishable=False,
    ),
    # Document collaboration events (emitted by the engine)
    _event(
        "document:updated",
        "A shared document was updated.",
        "document",
        {
            "documentId": _req("id"),
            "version": _req("number"),
            "data": _req("any"),
            "updatedBy": _req("string"),
            "updatedAt": _req("timestamp"),
        },
        publishable=False,
    ),
    _event(
        "resource:updated",
        "A shared resource was updated (CONTRACT.md; the resource twin of document:updated).",
        "document",
        {
            "resourceId": _req("id"),
            "version": _req("number"),
            "data": _req("any"),
            "updatedBy": _req("string"),
            "updatedAt": _req("timestamp"),
        },
        publishable=False,
    ),
    _event(
        "document:conflict",
        "A version conflict was detected.",
        "document",
        {**_CONFLICT_FIELDS, "timestamp": _req("timestamp")},
        publishable=False,
        one_of=("documentId", "resourceId"),
    ),
    _event(
        "conflict:resolved",
        "A conflict was resolved.",
        "document",
        {
            **_CONFLICT_FIELDS,
            "resolvedValue": _req("any"),
            "version": _opt("number"),
            "timestamp": _req("timestamp"),
        },
        publishable=False,
        one_of=("documentId", "resourceId"),
    ),
    # Notification events
    _event(
        "notification:new",
        "A new notification was created for a user.",
        "user",
        {
            "id": _req("id"),
            "title": _req("string"),
            "message": _req("string"),
            "type": _req("string", *NOTIFICATION_TYPES),
            "userId": _req("id"),
            "createdAt": _req("timestamp"),
            "actionUrl": _opt("string"),
        },
        target="userId",
    ),
)

EVENTS: Final[Mapping[str, EventSpec]] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every server → client event, by name."""


# --------------------------------------------------------------------------------------------
# Looking up, validating and routing


def check_publishable(name: str) -> EventSpec:
    """The spec of ``name`` if an ERP service may publish it.

    Raises ``invalid_payload`` for an unknown event and for one only the gateway emits.
    """
    spec = _spec(name)
    if not spec.publishable:
        raise invalid(
            f"event {name!r} is emitted by the gateway itself and cannot be published",
        )
    return spec


def validate_event(name: str, data: object) -> dict[str, Any]:
    """A validated copy of the payload ``data`` of event ``name``.

    Raises ``invalid_payload`` with ``fields={path: reason}`` naming every bad field at once
    (paths are dotted, list items by index: ``conflictedFields.2``; ``""`` is the payload
    itself), or, for an unknown event, with its message alone. Fields the guide does not name
    are kept; optional fields sent as ``null`` are left out.
    """
    spec = _spec(name)
    if not isinstance(data, Mapping):
        reason = f"must be a JSON object, got {json_type(data)}"
        raise invalid(f"invalid {name} payload: {reason}", fields={"": reason})

    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, field in spec.fields.items():
        if key not in data or (data[key] is None and not field.required):
            if field.required:
                errors[key] = "is required"
            continue
        out[key] = _check_field(field, data[key], key, errors)
    present = [key for key in spec.one_of if key in out]
    if spec.one_of and not present:
        for key in spec.one_of:
            others = " or ".join(k for k in spec.one_of if k != key)
            errors[key] = f"is required unless {others} is given"
    for key, value in data.items():
        if not isinstance(key, str):
            errors[repr(key)] = "is not a string key"
        elif key not in spec.fields:
            out[key] = _json_copy(value, key, errors, 1)

    if errors:
        raise _payload_error(name, errors)
    return out


def route_event(
    name: str, company_id: str, data: Mapping[str, Any], user_id: str | None = None
) -> Route:
    """Where event ``name`` of company ``company_id`` goes (CONTRACT.md, "Server → client").

    An explicit ``user_id`` sends any event to that user's room only. Otherwise a user-routed
    event goes to the user named by its target field (``assignedTo``, ``userId``) and any
    other to the company room. ``data`` should already be validated. Raises
    ``invalid_payload`` for an unknown or document-room event, a missing target, or a payload
    ``companyId`` naming another company (which would leak across tenants).
    """
    spec = _spec(name)
    if not _is_id(company_id):
        raise invalid("company id must be a non-empty string")
    if user_id is not None and not _is_id(user_id):
        raise invalid("target user id must be a non-empty string when given")
    if spec.route == "document":
        raise invalid(f"event {name!r} goes to a document's room; only the engine emits it")
    payload_company = data.get("companyId")
    if payload_company is not None and payload_company != company_id:
        reason = "must be the company the event is published for"
        raise invalid(f"invalid {name} payload: companyId {reason}", fields={"companyId": reason})
    if user_id is not None:
        return Route("user", company_id, user_id)
    if spec.target_field is not None:
        target = data.get(spec.target_field)
        if not _is_id(target):
            reason = "must be a non-empty string: it names the user the event goes to"
            raise invalid(
                f"invalid {name} payload: {spec.target_field} {reason}",
                fields={spec.target_field: reason},
            )
        return Route("user", company_id, target)
    return Route("company", company_id)


def prepare_publish(
    name: str, company_id: str, data: object, user_id: str | None = None
) -> tuple[dict[str, Any], Route]:
    """Everything ``POST /api/events`` and the publisher do before emitting, in order.

    :func:`check_publishable`, :func:`validate_event`, then :func:`route_event`; returns the
    validated payload and its route.
    """
    check_publishable(name)
    payload = validate_event(name, data)
    return payload, route_event(name, company_id, payload, user_id)


def payload_schema_markdown() -> str:
    """A Markdown table of every event: route, publishability and payload fields."""
    lines = [
        "| Event | Route | Publishable | Payload |",
        "|---|---|---|---|",
    ]
    for spec in EVENTS.values():
        route = f"user (`{spec.target_field}`)" if spec.target_field else spec.route
        fields = ", ".join(
            f"`{key}{'' if field.required else '?'}`: {field.describe()}"
            for key, field in spec.fields.items()
        )
        if spec.one_of:
            fields += f" (at least one of {', '.join(f'`{k}`' for k in spec.one_of)})"
        source = "yes" if spec.publishable else "no (gateway only)"
        lines.append(f"| `{spec.name}` | {route} | {source} | {fields} |")
    lines += [
        "",
        "Routes: *company* is the company's room; *user (`field`)* is the room of the user that",
        "field names, within the company; *document* is the room of the joined document or",
        "resource. A published event given an explicit `userId` goes to that user's room only.",
        "",
        "Types: *id* is a non-empty string; *number* is finite (integers within ±(2^53 - 1));",
        "*timestamp* is an ISO-8601 date-time with a UTC offset, as JS `toISOString()` writes",
        "it; *date* is `YYYY-MM-DD` or a timestamp; *any* is any JSON value. `?` marks an",
        "optional field (`null` counts as absent). Extra fields are kept; they must be JSON.",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Helpers


def _spec(name: object) -> EventSpec:
    spec = EVENTS.get(name) if isinstance(name, str) else None
    if spec is None:
        message = f"unknown event {name!r}"
        if isinstance(name, str):
            close = difflib.get_close_matches(name, list(EVENTS), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        raise invalid(message)
    return spec


def _payload_error(name: str, errors: dict[str, str]) -> CollabError:
    shown = [f"{path or 'payload'} {reason}" for path, reason in errors.items()]
    extra = len(shown) - _MAX_ERRORS_IN_MESSAGE
    summary = "; ".join(shown[:_MAX_ERRORS_IN_MESSAGE])
    if extra > 0:
        summary += f"; and {extra} more"
    return invalid(f"invalid {name} payload: {summary}", fields=errors)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and value != "" and _is_text(value)


def _is_text(value: str) -> bool:
    """False for a string holding lone surrogates, which no UTF-8 serializer can write."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable JSON number, or None if it is one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {json_type(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
        return "must be an integer within ±(2^53 - 1), JavaScript's safe range"
    return None


def _timestamp_ok(value: str, date_only_ok: bool) -> bool:
    try:
        if date_only_ok and _DATE_RE.fullmatch(value):
            date.fromisoformat(value)
            return True
        if _TIMESTAMP_RE.fullmatch(value):
            datetime.fromisoformat(value)
            return True
    except ValueError:  # well-formed but out of range: month 13, February 30, hour 24
        pass
    return False


def _check_field(field: FieldSpec, value: object, path: str, errors: dict[str, str]) -> Any:
    """``value`` (copied if a container) when it fits ``field``; records the error otherwise."""
    kind = field.type
    if kind == "any":
        return _json_copy(value, path, errors, 1)
    if kind == "number":
        problem = _number_problem(value)
        if problem:
            errors[path] = problem
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            errors[path] = f"must be a boolean, got {json_type(value)}"
        return value
    if kind == "string[]":
        if not isinstance(value, list | tuple):
            errors[path] = f"must be an array of strings, got {json_type(value)}"
            return value
        for index, item in enumerate(value):
            if not isinstance(item, str) or not _is_text(item):
                errors[f"{path}.{index}"] = f"must be a string, got {json_type(item)}"
        return list(value)

    # What remains are strings: id, string, timestamp, date.
    if not isinstance(value, str):
        noun = "an ISO-8601 string" if kind in ("timestamp", "date") else "a string"
        errors[path] = f"must be {noun}, got {json_type(value)}"
    elif not _is_text(value):
        errors[path] = "must be valid Unicode text (it holds a lone surrogate)"
    elif kind == "id" and not value:
        errors[path] = "must be a non-empty string"
    elif kind == "timestamp" and not _timestamp_ok(value, date_only_ok=False):
        errors[path] = _TIMESTAMP_REASON
    elif kind == "date" and not _timestamp_ok(value, date_only_ok=True):
        errors[path] = _DATE_REASON
    elif field.enum and value not in field.enum:
        allowed = ", ".join(repr(v) for v in field.enum)
        errors[path] = f"must be one of {allowed}, got {value!r}"
    return value


def _json_copy(value: object, path: str, errors: dict[str, str], depth: int) -> Any:
    """A copy of ``value`` as plain JSON data (tuples become lists); records what is not."""
    if depth > MAX_DEPTH:
        errors[path] = f"is nested deeper than {MAX_DEPTH} levels"
        return None
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not _is_text(value):
            errors[path] = "must be valid Unicode text (it holds a lone surrogate)"
        return value
    if isinstance(value, int | float):
        problem = _number_problem(value)
        if problem:
            errors[path] = problem
        return value
    if isinstance(value, list | tuple):
        return [_json_copy(item, f"{path}.{i}", errors, depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _is_text(key):
                errors[f"{path}.{key!r}"] = "is not a string key"
                continue
            out[key] = _json_copy(item, f"{path}.{key}", errors, depth + 1)
        return out
    errors[path] = f"is not a JSON value (got {type(value).__name__})"
    return None
