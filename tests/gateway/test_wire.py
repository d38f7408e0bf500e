"""The wire module on its own: payload schemas, the one error mapping, HTTP statuses."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from collab.errors import CollabError, ErrorCode, invalid
from gateway.wire import http_status, parse_payload, to_wire_error, wire_name


@dataclass(frozen=True)
class Sample:
    document_id: str
    version: int
    data: dict[str, Any]
    stamp: float | str | None = None
    tags: list[str] | None = None
    blob: bytes | None = None


def test_wire_names() -> None:
    assert wire_name("document_id") == "documentId"
    assert wire_name("text_fields") == "textFields"
    assert wire_name("version") == "version"


def test_parse_payload_accepts_and_ignores_extras() -> None:
    p = parse_payload(
        Sample,
        {
            "documentId": "d",
            "version": 2,
            "data": {},
            "stamp": 5,
            "blob": bytearray(b"x"),
            "userId": "spoof",
        },
    )
    assert p == Sample("d", 2, {}, 5, None, b"x")
    assert isinstance(p.blob, bytes)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"version": 1, "data": {}}, "documentId is required"),
        ({"documentId": "d", "version": 1.5, "data": {}}, "version must be an integer, got number"),
        (
            {"documentId": "d", "version": 1, "data": {}, "stamp": False},
            "stamp must be a number or a non-empty string, got boolean",
        ),
        (
            {"documentId": "d", "version": 1, "data": {}, "tags": ["a", 1]},
            "tags must be an array of strings, got array",
        ),
        ([], "payload must be an object, got array"),
    ],
)
def test_parse_payload_refusals(raw: Any, message: str) -> None:
    with pytest.raises(CollabError) as exc:
        parse_payload(Sample, raw)
    assert exc.value.code is ErrorCode.INVALID_PAYLOAD
    assert exc.value.message == message


def test_collab_errors_map_to_their_code_and_details() -> None:
    error = to_wire_error(CollabError(ErrorCode.VERSION_AHEAD, "ahead", version=3))
    assert error == {"code": "version_ahead", "message": "ahead", "version": 3}
    assert http_status(error) == 409
    assert http_status(to_wire_error(invalid("bad"))) == 422


def test_unknown_errors_are_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.wire"):
        error = to_wire_error(KeyError("db password"), context="document:update")
    assert error == {"code": "internal", "message": "internal error"}
    assert http_status(error) == 500
    [record] = caplog.records
    assert "document:update" in record.getMessage()
    assert record.exc_info is not None
