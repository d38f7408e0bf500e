"""The wire side of every client event: payload schemas, the one error mapping, and the one
handler decorator.

A handler is declared with :func:`on`, naming its event and its payload schema (a frozen
dataclass whose snake_case fields are the payload's camelCase members)::

    @on("document:leave", DocumentRef)
    async def leave(gw: Gateway, call: Call, p: DocumentRef) -> Ack:
        ...
        return {}

:func:`dispatch` (bound to the Socket.IO server by ``gateway.handlers``) then does, for every
event: serialize per socket, validate the payload, run the handler, and answer. The answer
goes where the contract says (CONTRACT.md, "Client → server"): in the ack
``{ok: true, ...}`` / ``{ok: false, error: {code, message}}`` when the client asked for one,
otherwise failures as an ``error`` event ``{code, message, event}`` to that socket. Whether an
ack was asked for is :data:`ACK_REQUESTED`, set by ``gateway.sio.GatewayServer``.
"""

from __future__ import annotations

import logging
import time
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from collab.engine import Ordered
from collab.errors import CollabError, ErrorCode, invalid
from collab.limits import json_type
from gateway.auth import Identity
from gateway.jsoncodec import Oversized
from gateway.sessions import Turn

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger("gateway.wire")

#: Whether the event being handled carries an ack id (the client passed a callback).
ACK_REQUESTED: ContextVar[bool] = ContextVar("ack_requested", default=False)

#: The event name ``gateway.sio.GatewayServer`` gives a packet that names no event (its first
#: member is not a string) or a lifecycle event (``connect``, ``disconnect``): such packets
#: reach :func:`dispatch`'s catch-all and are answered ``invalid_payload``.
MALFORMED_EVENT = ""
#: Characters of an event name repeated in an answer (an unknown name may be megabytes).
SHOWN_NAME = 256

Ack = dict[str, Any]
P = TypeVar("P")

# -- errors -------------------------------------------------------------------------------

_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.INVALID_PAYLOAD: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.VERSION_AHEAD: 409,
    ErrorCode.HISTORY_GONE: 410,
    ErrorCode.CONFLICT_PENDING: 409,
    ErrorCode.INTERNAL: 500,
}


def to_wire_error(exc: BaseException, *, context: str = "") -> dict[str, Any]:
    """The ``error`` member of a failed answer: the one place an exception meets the wire.

    A :class:`CollabError` gives its code, message and details; anything else is ``internal``
    with a generic message, the trace going to the log only.
    """
    if isinstance(exc, CollabError):
        return exc.to_wire()
    log.error("internal error%s", f" in {context}" if context else "", exc_info=exc)
    return {"code": ErrorCode.INTERNAL.value, "message": "internal error"}


def http_status(error: Mapping[str, Any]) -> int:
    """The HTTP status of a wire error (``to_wire_error``'s result)."""
    try:
        return _HTTP_STATUS[ErrorCode(error["code"])]
    except (KeyError, ValueError):
        return 500


# -- payload schemas ------------------------------------------------------------------------


def wire_name(attr: str) -> str:
    """``document_id`` -> ``documentId``: a schema field's name in the payload."""
    head, *rest = attr.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _is_str(v: object) -> bool:
    return isinstance(v, str) and v != ""


def is_unicode(s: str) -> bool:
    """Whether ``s`` is valid Unicode text (no lone surrogate: JSON escapes can spell one)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


#: The payload types a schema may use: what each must be, and its check.
_CHECKS: dict[object, tuple[str, Callable[[object], bool]]] = {
    str: ("a non-empty string", _is_str),
    int: ("an integer", _is_int),
    float: ("a number", _is_number),
    bool: ("a boolean", lambda v: isinstance(v, bool)),
    bytes: ("binary (a Socket.IO attachment)", lambda v: isinstance(v, bytes | bytearray)),
    dict[str, Any]: ("an object", lambda v: isinstance(v, dict)),
    list[str]: ("an array of strings", _is_str_list),
    Any: ("present", lambda v: True),
}


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    name: str
    types: tuple[object, ...]
    required: bool


_SCHEMAS: dict[type[Any], tuple[_Field, ...]] = {}


def _schema(cls: type[Any]) -> tuple[_Field, ...]:
    """The fields of a payload schema (computed once per class)."""
    cached = _SCHEMAS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp) if isinstance(tp, types.UnionType) else (tp,)
        kinds = tuple(a for a in args if a is not type(None))
        for kind in kinds:
            if kind not in _CHECKS:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported payload type {kind!r}")
        required = f.default is MISSING and f.default_factory is MISSING
        out.append(_Field(f.name, wire_name(f.name), kinds, required))
    _SCHEMAS[cls] = tuple(out)
    return _SCHEMAS[cls]


def parse_payload(cls: type[P], raw: object) -> P:
    """``raw`` as an instance of the schema ``cls``, or ``invalid_payload`` naming the field.

    Members the schema does not name are ignored (identity fields such as ``userId`` among
    them: identity comes from the token); ``null`` counts as absent. Arguments the JSON
    decoder refused (``gateway.jsoncodec.Oversized``: nested too deep, a number too long)
    are refused here.
    """
    if isinstance(raw, Oversized):
        raise invalid(f"payload {raw.reason}")
    if not isinstance(raw, Mapping):
        raise invalid(f"payload must be an object, got {json_type(raw)}")
    values: dict[str, Any] = {}
    for f in _schema(cls):
        value = raw.get(f.name)
        if value is None:
            if f.required:
                raise invalid(f"{f.name} is required", field=f.name)
            continue
        if not any(_CHECKS[kind][1](value) for kind in f.types):
            wanted = " or ".join(_CHECKS[kind][0] for kind in f.types)
            raise invalid(f"{f.name} must be {wanted}, got {json_type(value)}", field=f.name)
        if isinstance(value, str) and not is_unicode(value):
            raise invalid(f"{f.name} is not valid Unicode (lone surrogate)", field=f.name)
        values[f.attr] = bytes(value) if isinstance(value, bytearray) else value
    return cls(**values)


# -- the handler decorator --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One client event being handled: who sent it, on which socket, and how it wants its
    answer."""

    sid: str
    identity: Identity
    event: str
    #: The client passed an ack callback: the outcome goes there, not to the room's events.
    acked: bool
    #: ``time.perf_counter()`` when the event arrived (delivery latency starts here).
    received_at: float
    #: Awaited once the event's change has its place in the engine's order and only waits
    #: for durability: the socket's next event may start (``gateway.sessions.Turn``).
    ordered: Ordered


HandlerFn = Callable[["Gateway", Call, P], Awaitable[Ack]]


@dataclass(frozen=True, slots=True)
class Handler(Generic[P]):
    """A client event's handler, with the schema of its payload."""

    event: str
    schema: type[P]
    fn: HandlerFn[P]


def on(event: str, schema: type[P]) -> Callable[[HandlerFn[P]], Handler[P]]:
    """Declare the handler of ``event``, whose payload is validated against ``schema``. The
    handler returns the ack's members beyond ``ok``; it raises ``CollabError`` to refuse."""

    def wrap(fn: HandlerFn[P]) -> Handler[P]:
        return Handler(event, schema, fn)

    return wrap


async def dispatch(
    gw: Gateway, event: str, sid: str, args: tuple[Any, ...], handler: Handler[Any] | None
) -> Ack | None:
    """Run one client event through ``handler`` (``None``: an unknown event) and answer it.

    Events of one socket take their turn in arrival order (``gateway.sessions.Turn``): a join
    is complete before the update that follows it, and answers go out in arrival order; a
    write waiting for durability lets the socket's next event start. Different sockets run
    concurrently. The event rates of the connection and of its user are checked first
    (``gateway.limits.Guard.check_rate``): a refused event is answered ``rate_limited`` at
    once, without waiting for the socket's turn.
    """
    acked = ACK_REQUESTED.get()
    call_started = time.perf_counter()
    gw.metrics.messages.labels(event=handler.event if handler else "unknown").inc()
    session = gw.sessions.get(sid)
    try:
        if session is None:
            raise CollabError(ErrorCode.UNAUTHENTICATED, "this socket is not authenticated")
        gw.guard.check_rate(session.identity, sid)
    except Exception as exc:
        return await _answer(gw, event, sid, acked, exc)
    async with Turn(session) as turn:
        try:
            if handler is None:
                if event == MALFORMED_EVENT:
                    raise invalid(
                        "malformed event: the first argument must be an event name "
                        "(a string other than connect, disconnect or *)"
                    )
                raise invalid(f"unknown event {event[:SHOWN_NAME]!r}")
            payload = parse_payload(handler.schema, args[0] if args else None)
            call = Call(sid, session.identity, event, acked, call_started, turn.ordered)
            result: Ack | BaseException = await handler.fn(gw, call, payload)
        except Exception as exc:
            result = exc
        await turn.ordered()  # the events before this one have been answered
        return await _answer(gw, event, sid, acked, result)


async def _answer(
    gw: Gateway, event: str, sid: str, acked: bool, result: Ack | BaseException
) -> Ack | None:
    """The ack of an event (``None`` when none was asked for: a failure then goes to the
    socket as an ``error`` event). What was emitted before it goes out before it."""
    if isinstance(result, BaseException):
        error = to_wire_error(result, context=event[:SHOWN_NAME])
        if not acked:
            await gw.emit("error", {**error, "event": event[:SHOWN_NAME]}, to=sid)
            return None
        answer: Ack = {"ok": False, "error": error}
    elif not acked:
        return None
    else:
        answer = {"ok": True, **result}
    await gw.settle()
    return answer
