"""The one error type of the engine and its wire codes.

Every refusal the engine or the gateway makes is a :class:`CollabError` carrying one of the
contract's codes; the gateway turns it into ``{ok: false, error: {code, message}}`` in a single
place (``gateway.wire``). Anything else that escapes becomes ``internal`` there, with the trace
in the log only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The error codes of the wire contract (CONTRACT.md, "Client → server")."""

    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    RATE_LIMITED = "rate_limited"
    VERSION_AHEAD = "version_ahead"
    HISTORY_GONE = "history_gone"
    CONFLICT_PENDING = "conflict_pending"
    INTERNAL = "internal"


class CollabError(Exception):
    """A refusal with a contract code and a human-readable message.

    ``details`` carries optional structured context (for example the field errors of an invalid
    ERP event, or the current version for ``version_ahead``); it is sent on the wire beside the
    code and message when present.
    """

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` member of a failed ack."""
        out: dict[str, Any] = {"code": self.code.value, "message": self.message}
        out.update(self.details)
        return out

    def __repr__(self) -> str:
        return f"CollabError({self.code.value!r}, {self.message!r})"


def invalid(message: str, **details: Any) -> CollabError:
    """Shorthand for the most common refusal."""
    return CollabError(ErrorCode.INVALID_PAYLOAD, message, **details)


class StoreConflict(Exception):
    """A store's compare-and-set found a head version other than the one expected.

    Raised by a store when another writer (another node, usually) appended first. It never
    reaches the wire: the engine reloads the document and retries, and only when its retries
    run out does it answer ``internal``.
    """

    def __init__(self, doc_key: str, expected: int, actual: int | None) -> None:
        super().__init__(f"{doc_key}: expected head {expected}, store has {actual}")
        self.doc_key = doc_key
        self.expected = expected
        self.actual = actual
