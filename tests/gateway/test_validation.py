"""Invalid payloads of every handler are answered invalid_payload naming the field, unknown
events likewise, and the connection survives all of them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Server

CASES: list[tuple[str, Any, str]] = [
    ("document:join", {}, "documentId is required"),
    ("document:join", None, "payload must be an object"),
    ("document:join", "d1", "payload must be an object, got string"),
    ("document:join", {"documentId": 5}, "documentId must be a non-empty string, got number"),
    ("document:join", {"documentId": ""}, "documentId must be a non-empty string"),
    ("document:join", {"documentId": "d", "textFields": "notes"}, "textFields must be"),
    ("document:join", {"documentId": "new", "strategy": "vote"}, "unknown strategy"),
    ("document:leave", {"id": "d"}, "documentId is required"),
    ("resource:join", {"documentId": "d"}, "resourceId is required"),
    ("resource:leave", {"resourceId": ["r"]}, "resourceId must be a non-empty string"),
    ("document:update", {"documentId": "d", "data": {}}, "version is required"),
    ("document:update", {"documentId": "d", "version": "1", "data": {}}, "version must be an"),
    ("document:update", {"documentId": "d", "version": True, "data": {}}, "version must be an"),
    ("document:update", {"documentId": "d", "version": 0, "data": []}, "data must be an object"),
    ("document:update", {"documentId": "d", "version": 0}, "data is required"),
    ("document:update", {"documentId": "d", "version": 0, "data": {}, "opId": 4}, "opId must"),
    ("resource:update", {"resourceId": "r", "version": 0, "data": {}, "timestamp": "soon"}, "ISO"),
    ("resource:update", {"resourceId": "r", "version": 0, "data": {}, "timestamp": True}, "timest"),
    ("conflict:resolve", {"documentId": "d", "resolvedValue": {}}, "conflictId is required"),
    ("conflict:resolve", {"documentId": "d", "conflictId": "c"}, "resolvedValue is required"),
    ("conflict:resolve", {"conflictId": "c", "resolvedValue": {}}, "exactly one of"),
    ("user:typing", {}, "documentId is required"),
    ("document:sync", {"documentId": "d"}, "message is required"),
    ("document:sync", {"documentId": "d", "message": "AAE="}, "message must be binary"),
    ("document:sync", {"documentId": "d", "message": b"\x05\x00\x01\x00"}, "only sync messages"),
    ("document:sync", {"documentId": "d", "message": b"\x00\x07\x01\x00"}, "sub-type"),
]


@pytest.mark.parametrize(("event", "payload", "message"), CASES)
async def test_invalid_payload(server: Server, event: str, payload: Any, message: str) -> None:
    c = await server.client()
    await c.call("document:join", {"documentId": "d"})
    await c.call("resource:join", {"resourceId": "r"})
    ack = await c.call(event, payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "invalid_payload"
    assert message in ack["error"]["message"]
    # The connection survives and keeps working.
    ok = await c.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    assert ok["status"] == "applied"


async def test_missing_payload_without_ack_is_an_error_event(server: Server) -> None:
    c = await server.client()
    await c.send("document:update")
    error = await c.next("error")
    assert error == {
        "code": "invalid_payload",
        "message": "payload must be an object, got null",
        "event": "document:update",
    }


async def test_unknown_event(server: Server) -> None:
    c = await server.client()
    ack = await c.call("document:delete", {"documentId": "d"})
    assert ack == {
        "ok": False,
        "error": {"code": "invalid_payload", "message": "unknown event 'document:delete'"},
    }
    await c.send("chat:message", {"text": "hi"})
    error = await c.next("error")
    assert (error["code"], error["event"]) == ("invalid_payload", "chat:message")
    assert (await c.call("document:join", {"documentId": "d"}))["ok"] is True


async def test_extra_fields_are_ignored(server: Server) -> None:
    c = await server.client()
    ack = await c.call("document:join", {"documentId": "d", "colour": "red", "userId": "x"})
    assert ack["ok"] is True
