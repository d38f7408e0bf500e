"""document:update: the exactly-once rule, duplicates, version_ahead, and the identity of the
writer always coming from its token."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.gateway.conftest import Client, Server, ServerFactory

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def joined(server: Server, *users: str, doc: str = "d", **join: object) -> list[Client]:
    clients = []
    for user in users:
        c = await server.client(user, name=user.title())
        ack = await c.call("document:join", {"documentId": doc, **join})
        assert ack["ok"] is True
        clients.append(c)
    return clients


async def test_with_ack_the_writer_is_left_out_of_document_updated(server: Server) -> None:
    a, b = await joined(server, "a", "b")
    ack = await a.call("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    assert ack == {"ok": True, "version": 1, "status": "applied", "data": {"x": 1}}
    event = await b.next("document:updated")
    assert event["documentId"] == "d"
    assert (event["version"], event["data"], event["updatedBy"]) == (1, {"x": 1}, "a")
    assert ISO.fullmatch(event["updatedAt"])
    await a.assert_none("document:updated", "error")


async def test_without_ack_the_writer_hears_its_own_document_updated(server: Server) -> None:
    a, b = await joined(server, "a", "b")
    await a.send("document:update", {"documentId": "d", "version": 0, "data": {"x": 1}})
    mine = await a.next("document:updated")
    theirs = await b.next("document:updated")
    assert mine == theirs
    assert (mine["version"], mine["updatedBy"]) == (1, "a")
    await a.assert_none("document:updated")


async def test_without_ack_failures_come_as_error_events(server: Server) -> None:
    (a,) = await joined(server, "a")
    await a.send("document:update", {"documentId": "d", "version": 5, "data": {}})
    error = await a.next("error")
    assert error["code"] == "version_ahead"
    assert error["event"] == "document:update"
    assert error["message"]
    await a.send("document:update", {"documentId": "elsewhere", "version": 0, "data": {}})
    assert (await a.next("error"))["code"] == "forbidden"


async def test_version_ahead(server: Server) -> None:
    (a,) = await joined(server, "a")
    ack = await a.call("document:update", {"documentId": "d", "version": 3, "data": {"x": 1}})
    assert ack["ok"] is False
    assert ack["error"]["code"] == "version_ahead"
    assert ack["error"]["version"] == 0


async def test_duplicate_op_id_applies_once_and_is_not_broadcast(server: Server) -> None:
    a, b = await joined(server, "a", "b")
    write = {"documentId": "d", "version": 0, "data": {"x": 1}, "opId": "op-1"}
    first = await a.call("document:update", write)
    assert first["status"] == "applied"
    assert (await b.next("document:updated"))["version"] == 1
    again = await a.call("document:update", write)
    assert again["ok"] is True
    assert (again["status"], again["version"]) == ("duplicate", 1)
    await b.assert_none("document:updated")
    await a.send("document:update", write)  # no ack: a duplicate says nothing at all
    await a.assert_none("document:updated", "error")


async def test_client_identity_fields_are_ignored(server: Server) -> None:
    a, b = await joined(server, "a", "b")
    spoofed = {
        "documentId": "d",
        "version": 0,
        "data": {"x": 1},
        "userId": "ceo",
        "userName": "The CEO",
        "updatedBy": "ceo",
    }
    await a.call("document:update", spoofed)
    assert (await b.next("document:updated"))["updatedBy"] == "a"


async def test_applied_merged_payload_is_normalised(server: Server) -> None:
    (a,) = await joined(server, "a", doc="n", textFields=["notes"])
    ack = await a.call("document:update", {"documentId": "n", "version": 0, "data": {"q": 2.0}})
    assert ack["data"] == {"q": 2, "notes": ""}


async def test_engine_failures_become_internal_without_details(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = await joined(server, "a")

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret stack detail")

    monkeypatch.setattr(server.gw.engine, "write", broken)
    ack = await a.call("document:update", {"documentId": "d", "version": 0, "data": {}})
    assert ack == {"ok": False, "error": {"code": "internal", "message": "internal error"}}
    assert (await a.call("document:leave", {"documentId": "d"}))["ok"] is True


async def test_documents_survive_a_restart_on_sqlite(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    store = f"sqlite://{tmp_path / 'collab.db'}"
    first = await make_server(store=store)
    (a,) = await joined(first, "a")
    await a.call("document:update", {"documentId": "d", "version": 0, "data": {"kept": True}})
    await first.close()
    second = await make_server(store=store)
    (b,) = await joined(second, "b")
    view = await b.call("document:join", {"documentId": "d"})
    assert (view["version"], view["data"]) == (1, {"kept": True})
