"""Interoperability with the official JS client: ``socket.io-client`` 4 (and its msgpack
parser, yjs + y-protocols) driving the real gateway exactly as the seed's web client does
(``io(url, {auth: {token}, transports: ['websocket', 'polling']})``, ``emit`` without acks,
``socket.on(...)`` listeners). ``tests/js/interop.mjs`` runs one scenario and prints what it
observed; these tests assert on it.

Each observation line carries a ``label``; ``log:<client>`` lines list every event that client
received, in order, as ``[event, payload]`` (binary values as ``{"$binary": length}``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import jwt
import pytest

from gateway.auth import mint_token
from tests.gateway.conftest import SECRET, Server, ServerFactory
from tests.nodejs import run_node

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# The seed guide's payload fields, and the documented extensions (docs/protocol.md).
UPDATED_KEYS = {"documentId", "version", "data", "updatedBy", "updatedAt"}
CONFLICT_KEYS = {
    "documentId",
    "strategy",
    "conflictedFields",
    "originalValue",
    "incomingValue",
    "timestamp",
}
CONFLICT_EXTENSIONS = {"version", "conflictId"}
RESOLVED_KEYS = CONFLICT_KEYS | {"resolvedValue"}
ERROR_EVENT_KEYS = {"code", "message", "event"}

Observations = dict[str, dict[str, Any]]


async def interop(server: Server, scenario: str, **config: Any) -> Observations:
    """Run ``interop.mjs <scenario>`` against ``server``; its observations by label."""
    lines = await run_node("interop.mjs", scenario, server.url, json.dumps(config), timeout=45)
    observations: Observations = {}
    for line in lines:
        assert line["label"] not in observations, f"duplicate label {line['label']}"
        observations[line["label"]] = line
    return observations


PRESENCE = ("user:online", "user:offline")


def events(obs: Observations, client: str, *names: str) -> list[tuple[str, Any]]:
    """The events ``client`` received, in order: ``names`` when given, else all but presence."""
    return [
        (e, d)
        for e, d in obs[f"log:{client}"]["events"]
        if ((e in names) if names else (e not in PRESENCE))
    ]


def payloads(obs: Observations, client: str, name: str) -> list[Any]:
    return [d for _, d in events(obs, client, name)]


def assert_updated(event: Any, *, version: int, data: Any, by: str, doc: str) -> None:
    assert set(event) == UPDATED_KEYS
    assert (event["documentId"], event["version"], event["data"], event["updatedBy"]) == (
        doc,
        version,
        data,
        by,
    )
    assert ISO.fullmatch(event["updatedAt"])


def assert_conflict_shape(event: Any, *, resolved: bool, manual: bool) -> None:
    keys = RESOLVED_KEYS if resolved else CONFLICT_KEYS
    assert keys <= set(event), f"missing {keys - set(event)}"
    extensions = CONFLICT_EXTENSIONS if manual else {"version"}
    assert set(event) - keys == extensions
    assert ISO.fullmatch(event["timestamp"])
    assert isinstance(event["conflictedFields"], list)


# -- 1. authentication -------------------------------------------------------------------------


async def test_auth_refusals_and_transports(server: Server) -> None:
    now = time.time()
    missing_company = jwt.encode({"sub": "u1", "exp": int(now) + 600}, SECRET, algorithm="HS256")
    obs = await interop(
        server,
        "auth",
        refused={
            "missing": None,
            "expired": mint_token(SECRET, sub="u1", company_id="c1", ttl=60, now=now - 3600),
            "badSignature": mint_token(
                "not-the-gateway-secret-0123456789", sub="u1", company_id="c1"
            ),
            "malformed": "not-a-jwt",
            "missingClaim": missing_company,
        },
        expired=mint_token(SECRET, sub="u1", company_id="c1", ttl=60, now=now - 3600),
        valid=server.token("u1", "c1"),
    )
    reasons = {
        "missing": "missing token",
        "expired": "token expired",
        "badSignature": "bad signature",
        "malformed": "malformed token",
        "missingClaim": "missing claim companyId",
    }
    for case, reason in reasons.items():
        seen = obs[f"refused:{case}"]
        assert seen["connected"] is False, case
        assert seen["message"] == f"authentication failed: {reason}", case
        assert seen["includesAuthentication"] is True  # the guide's check
        assert seen["active"] is False, case  # a refusal: socket.io-client does not retry

    # The guide's handler: refresh the token on an authentication error and reconnect.
    assert obs["refresh"] == {
        "label": "refresh",
        "errors": ["authentication failed: token expired"],
        "connected": True,
        "joinOk": True,
    }

    expected = {
        "guide": ("websocket", "websocket"),
        "websocket": ("websocket", "websocket"),
        "polling": ("polling", "polling"),
        "default": ("polling", "websocket"),  # upgraded
    }
    for case, (first, final) in expected.items():
        seen = obs[f"valid:{case}"]
        assert seen["connected"] is True, case
        assert (seen["firstTransport"], seen["transport"]) == (first, final), case
        join = seen["join"]
        assert join["ok"] is True
        assert (join["documentId"], join["version"], join["data"]) == (f"auth-{case}", 0, {})


# -- 2. ERP events ---------------------------------------------------------------------------


async def test_project_events_reach_only_their_company(server: Server) -> None:
    created = {
        "id": "p-1",
        "name": "Tower B",
        "companyId": "acme",
        "status": "planning",
        "createdAt": "2024-01-15T10:30:00.000Z",
    }
    obs = await interop(
        server,
        "events",
        tokenA=server.token("ann", "acme"),
        tokenB=server.token("bob", "globex"),
        serviceToken=server.token("erp", "acme", role="service"),
        publish=[
            {"event": "project:created", "companyId": "acme", "data": created},
            {
                "event": "project:deleted",
                "companyId": "globex",
                "data": {"id": "sentinel-b", "companyId": "globex"},
            },
            {
                "event": "project:deleted",
                "companyId": "acme",
                "data": {"id": "sentinel-a", "companyId": "acme"},
            },
        ],
        sentinelA="sentinel-a",
        sentinelB="sentinel-b",
    )
    responses = obs["published"]["responses"]
    assert [r["status"] for r in responses] == [200, 200, 200]
    assert responses[0]["body"] == {"ok": True, "event": "project:created", "route": "company"}
    assert events(obs, "a") == [
        ("project:created", created),
        ("project:deleted", {"id": "sentinel-a", "companyId": "acme"}),
    ]
    assert events(obs, "b") == [("project:deleted", {"id": "sentinel-b", "companyId": "globex"})]


# -- 3. conflicts ----------------------------------------------------------------------------


def conflict_config(server: Server, doc: str, strategy: str, **extra: Any) -> dict[str, Any]:
    return {
        "documentId": doc,
        "strategy": strategy,
        "tokens": {
            "alice": server.token("alice", "acme", name="Alice"),
            "bob": server.token("bob", "acme", name="Bob"),
        },
        **extra,
    }


async def test_manual_conflict_round_trip(server: Server) -> None:
    base = {"price": 100, "note": "n"}
    alice, bob = {"price": 120, "note": "n"}, {"price": 90, "note": "n"}
    resolved = {"price": 105, "note": "agreed"}
    obs = await interop(
        server,
        "conflict",
        **conflict_config(
            server,
            "m-doc",
            "manual",
            base=base,
            alice=alice,
            bob=bob,
            bobAck=False,
            resolveBy="alice",
            resolveAck=False,
            resolvedValue=resolved,
        ),
    )
    for who in ("alice", "bob"):
        ack = obs[f"join:{who}"]["ack"]
        assert (ack["ok"], ack["version"], ack["strategy"]) == (True, 0, "manual")

    # Both clients emitted without acks: every outcome comes through the room, writer included.
    conflict_ids = set()
    for who in ("alice", "bob"):
        names = [e for e, _ in events(obs, who)]
        assert names == [
            "document:updated",
            "document:updated",  # base, alice's edit
            "document:conflict",  # bob's stale edit, held
            "conflict:resolved",
            "document:updated",  # alice's resolution
        ], who
        up1, up2, up3 = payloads(obs, who, "document:updated")
        assert_updated(up1, version=1, data=base, by="alice", doc="m-doc")
        assert_updated(up2, version=2, data=alice, by="alice", doc="m-doc")
        assert_updated(up3, version=3, data=resolved, by="alice", doc="m-doc")

        [conflict] = payloads(obs, who, "document:conflict")
        assert_conflict_shape(conflict, resolved=False, manual=True)
        assert conflict["documentId"] == "m-doc"
        assert conflict["strategy"] == "manual"
        assert conflict["conflictedFields"] == ["price"]
        assert conflict["originalValue"] == alice
        assert conflict["incomingValue"] == bob
        assert conflict["version"] == 2
        conflict_ids.add(conflict["conflictId"])

        [done] = payloads(obs, who, "conflict:resolved")
        assert_conflict_shape(done, resolved=True, manual=True)
        assert done["conflictId"] == conflict["conflictId"]
        assert done["resolvedValue"] == resolved
        assert done["version"] == 3
        assert done["strategy"] == "manual"
        assert done["conflictedFields"] == ["price"]
        assert (done["originalValue"], done["incomingValue"]) == (alice, bob)
    assert len(conflict_ids) == 1 and "" not in conflict_ids
    # Presence: alice (connected first) heard bob come online, once; bob heard nothing of it.
    [(_, online)] = events(obs, "alice", "user:online")
    assert set(online) == {"userId", "status", "timestamp"}
    assert (online["userId"], online["status"]) == ("bob", "online")
    assert ISO.fullmatch(online["timestamp"])
    assert events(obs, "bob", *PRESENCE) == []


async def test_manual_conflict_with_acks(server: Server) -> None:
    base, alice, bob = {"v": 1}, {"v": 2}, {"v": 3}
    obs = await interop(
        server,
        "conflict",
        **conflict_config(
            server,
            "ma-doc",
            "manual",
            base=base,
            alice=alice,
            bob=bob,
            bobAck=True,
            resolveBy="bob",
            resolveAck=True,
            resolvedValue={"v": 4},
        ),
    )
    held = obs["update:bob"]["ack"]
    assert held["ok"] is True
    assert (held["status"], held["version"], held["conflictedFields"]) == ("conflict", 2, ["v"])
    assert held["conflictId"]
    assert obs["resolve"]["ack"] == {"ok": True, "version": 3}
    # The held write's conflict goes to the whole room, its writer included (even acked).
    for who in ("alice", "bob"):
        [conflict] = payloads(obs, who, "document:conflict")
        assert conflict["conflictId"] == held["conflictId"]
        [done] = payloads(obs, who, "conflict:resolved")
        assert (done["resolvedValue"], done["version"]) == ({"v": 4}, 3)
    # bob (the resolver) asked for an ack: he is left out of the resolution's document:updated.
    assert [d["version"] for d in payloads(obs, "alice", "document:updated")] == [1, 2, 3]
    assert [d["version"] for d in payloads(obs, "bob", "document:updated")] == [1, 2]


async def test_merge_conflict_keeps_both_sides_text(server: Server) -> None:
    base = {"notes": "Pour the slab", "status": "open"}
    alice = {"notes": "Pour the concrete slab", "status": "a"}
    bob = {"notes": "Pour the slab today", "status": "b"}
    merged = {"notes": "Pour the concrete slab today", "status": "b"}
    obs = await interop(
        server,
        "conflict",
        **conflict_config(
            server,
            "mg-doc",
            "merge",
            textFields=["notes"],
            base=base,
            alice=alice,
            bob=bob,
            bobAck=False,
        ),
    )
    assert obs["join:alice"]["ack"]["textFields"] == ["notes"]
    assert [e for e, _ in events(obs, "bob")] == [
        "document:updated",
        "document:updated",
        "document:conflict",
        "conflict:resolved",
        "document:updated",
    ]
    assert [e for e, _ in events(obs, "alice")] == [
        "document:updated",
        "document:updated",
        "conflict:resolved",
        "document:updated",
    ]
    [conflict] = payloads(obs, "bob", "document:conflict")
    assert_conflict_shape(conflict, resolved=False, manual=False)
    assert (conflict["strategy"], conflict["conflictedFields"]) == ("merge", ["notes", "status"])
    assert (conflict["originalValue"], conflict["incomingValue"]) == (alice, bob)
    for who in ("alice", "bob"):
        [done] = payloads(obs, who, "conflict:resolved")
        assert_conflict_shape(done, resolved=True, manual=False)
        assert (done["resolvedValue"], done["version"]) == (merged, 3)
        assert_updated(
            payloads(obs, who, "document:updated")[-1],
            version=3,
            data=merged,
            by="bob",
            doc="mg-doc",
        )


async def test_last_write_wins_with_an_ack(server: Server) -> None:
    base = {"title": "T", "qty": 1, "site": "X"}
    alice = {"title": "A", "qty": 1, "site": "X"}
    bob = {"title": "B", "qty": 5, "site": "X"}
    obs = await interop(
        server,
        "conflict",
        **conflict_config(
            server, "lww-doc", "last-write-wins", base=base, alice=alice, bob=bob, bobAck=True
        ),
    )
    ack = obs["update:bob"]["ack"]
    assert ack == {
        "ok": True,
        "version": 3,
        "status": "merged",
        "data": bob,
        "conflictedFields": ["title"],
    }
    # bob asked for an ack: he still hears his conflict and its resolution, not document:updated.
    assert [e for e, _ in events(obs, "bob")] == [
        "document:updated",
        "document:updated",
        "document:conflict",
        "conflict:resolved",
    ]
    assert [e for e, _ in events(obs, "alice")] == [
        "document:updated",
        "document:updated",
        "conflict:resolved",
        "document:updated",
    ]
    [conflict] = payloads(obs, "bob", "document:conflict")
    assert_conflict_shape(conflict, resolved=False, manual=False)
    assert (conflict["strategy"], conflict["conflictedFields"]) == ("last-write-wins", ["title"])
    for who in ("alice", "bob"):
        [done] = payloads(obs, who, "conflict:resolved")
        assert (done["resolvedValue"], done["version"]) == (bob, 3)
    assert_updated(
        payloads(obs, "alice", "document:updated")[-1], version=3, data=bob, by="bob", doc="lww-doc"
    )


# -- 4. errors --------------------------------------------------------------------------------


async def test_errors_as_event_or_ack(server: Server) -> None:
    obs = await interop(server, "errors", token=server.token("eve", "acme"))
    codes = {
        "badVersion": ("invalid_payload", "document:update"),
        "badData": ("invalid_payload", "document:update"),
        "notObject": ("invalid_payload", "document:update"),
        "notJoined": ("forbidden", "document:update"),
        "unknownEvent": ("invalid_payload", "document:frobnicate"),
        "unknownConflict": ("not_found", "conflict:resolve"),
    }
    for case, (code, event) in codes.items():
        error = obs[f"noack:{case}"]["error"]
        assert ERROR_EVENT_KEYS <= set(error), case
        assert (error["code"], error["event"]) == (code, event), case
        assert isinstance(error["message"], str) and error["message"], case
        ack = obs[f"ack:{case}"]["ack"]
        assert ack["ok"] is False, case
        assert {"code", "message"} <= set(ack["error"]), case
        assert ack["error"]["code"] == code, case
        assert ack["error"]["message"] == error["message"], case
        assert "event" not in ack["error"], case
    assert obs["noack:badVersion"]["error"]["field"] == "version"
    assert obs["ack:badVersion"]["ack"]["error"]["field"] == "version"
    # Nothing was applied, the connection stays usable, acked failures sent no error event.
    assert obs["afterwards"]["ack"]["ok"] is True
    assert obs["afterwards"]["ack"]["version"] == 1
    assert obs["afterwards"]["connected"] is True
    assert len(payloads(obs, "errors", "error")) == len(codes)


# -- 5. msgpack -------------------------------------------------------------------------------


MSGPACK_CREATED = {
    "id": "p-9",
    "name": "Bridge",
    "companyId": "acme",
    "status": "in_progress",
    "createdAt": "2024-02-01T08:00:00.000Z",
}


async def msgpack_scenario(make_server: ServerFactory, binary: str) -> Observations:
    server = await make_server(serializer="msgpack")
    return await interop(
        server,
        "msgpack",
        tokens={
            "alice": server.token("alice", "acme"),
            "bob": server.token("bob", "acme"),
        },
        serviceToken=server.token("erp", "acme", role="service"),
        publish={"event": "project:created", "companyId": "acme", "data": MSGPACK_CREATED},
        # Both on websocket: a polling member of a room breaks under msgpack (see
        # test_binary_broadcast_to_mixed_transports).
        transports={"alice": ["websocket"], "bob": ["websocket", "polling"]},
        binary=binary,
    )


async def test_msgpack_parser(make_server: ServerFactory) -> None:
    obs = await msgpack_scenario(make_server, binary="buffer")
    assert {k: obs["transports"][k] for k in ("alice", "bob")} == {
        "alice": "websocket",
        "bob": "websocket",
    }
    assert obs["join:bob"]["ack"]["ok"] is True
    first = {"notes": "hi", "qty": 1.5, "tags": ["a"]}
    second = {"notes": "hi there", "qty": 2, "tags": ["a", "b"]}
    ack = obs["update:bob"]["ack"]
    assert (ack["ok"], ack["version"], ack["status"], ack["data"]) == (True, 2, "applied", second)
    assert obs["published"]["response"]["status"] == 200
    assert_updated(
        payloads(obs, "alice", "document:updated")[0],
        version=1,
        data=first,
        by="alice",
        doc="mp-doc",
    )
    assert_updated(
        payloads(obs, "alice", "document:updated")[1],
        version=2,
        data=second,
        by="bob",
        doc="mp-doc",
    )
    assert [d["version"] for d in payloads(obs, "bob", "document:updated")] == [1]
    for who in ("alice", "bob"):
        assert payloads(obs, who, "project:created") == [MSGPACK_CREATED]
    [error] = payloads(obs, "bob", "error")
    assert (error["code"], error["event"]) == ("invalid_payload", "document:update")
    # A binary attachment through msgpack (a Node Buffer: msgpack bin): step 2 arrives as
    # bytes and gives the same state.
    sync = obs["sync"]
    assert sync["ack"]["ok"] is True
    assert sync["ack"]["message"]["$binary"] > 0
    assert sync["state"] == second


async def test_msgpack_parser_uint8array_binary(make_server: ServerFactory) -> None:
    obs = await msgpack_scenario(make_server, binary="uint8array")
    sync = obs["sync"]
    assert sync["ack"]["ok"] is True, sync["ack"]
    assert sync["state"] == {"notes": "hi there", "qty": 2, "tags": ["a", "b"]}


# -- 6. Yjs in JS, JSON in Python ----------------------------------------------------------------


async def test_yjs_js_client_and_python_json_client(server: Server) -> None:
    for transports in (["websocket"], ["polling"]):
        doc = f"y-{transports[0]}"
        await _yjs_co_edit(server, doc, transports)


async def _yjs_co_edit(server: Server, doc: str, transports: list[str]) -> None:
    jason = await server.client("jason", "acme")
    ack = await jason.call(
        "document:join", {"documentId": doc, "strategy": "merge", "textFields": ["notes"]}
    )
    assert ack["ok"] is True
    first = await jason.call(
        "document:update", {"documentId": doc, "version": 0, "data": {"notes": "hello", "qty": 1}}
    )
    assert first["version"] == 1

    final_json = {"notes": "Say hello world!", "qty": 3}
    node = asyncio.create_task(
        interop(
            server,
            "yjs",
            documentId=doc,
            token=server.token("yara", "acme"),
            user="yara",
            transports=transports,
            insertAt=5,
            insert=" world",
            qty=2,
            expectFinal=final_json,
            append=" Done.",
        )
    )
    # The JS replica's edit reaches the JSON client as document:updated.
    updated = await jason.next("document:updated", wait=30)
    assert_updated(updated, version=2, data={"notes": "hello world", "qty": 2}, by="yara", doc=doc)
    # A stale JSON edit (from version 1) merges by character with the JS insertion...
    merged = await jason.call(
        "document:update",
        {"documentId": doc, "version": 1, "data": {"notes": "Say hello", "qty": 1}},
    )
    assert (merged["status"], merged["version"]) == ("merged", 3)
    assert merged["data"] == {"notes": "Say hello world", "qty": 2}
    # ... and a current one replaces values; the JS side waits to see both in its Y.Doc.
    latest = await jason.call(
        "document:update", {"documentId": doc, "version": 3, "data": final_json}
    )
    assert latest["version"] == 4
    obs = await node

    synced = obs["synced"]
    assert synced["ack"]["ok"] is True
    assert synced["ack"]["message"]["$binary"] > 0
    assert synced["state"] == {"notes": "hello", "qty": 1}  # the JSON write before it joined
    assert synced["notesIsYText"] is True
    edit = obs["edit"]
    assert (edit["ack"]["ok"], edit["ack"]["version"], edit["ack"]["status"]) == (
        True,
        2,
        "applied",
    )
    assert edit["state"] == {"notes": "hello world", "qty": 2}

    # The JS replica's last edit (no ack) reaches the JSON client; both end equal.
    final = {"notes": "Say hello world! Done.", "qty": 3}
    last = await jason.next("document:updated", wait=30)
    assert_updated(last, version=5, data=final, by="yara", doc=doc)
    assert obs["final"]["state"] == final
    assert obs["final"]["notesIsYText"] is True
    # Every document:sync it received changed its replica (its own updates are not echoed).
    received = obs["final"]["received"]
    assert len(received) == 2
    assert all(r["changed"] and not r["replied"] for r in received)
    view = await server.gw.engine.get("document", doc, company_id="acme")
    assert (view.version, view.data) == (5, final)
    await jason.disconnect()


# -- binary broadcasts to a room mixing websocket and polling members ----------------------------


@pytest.mark.parametrize(
    "variant",
    [
        "json",  # the control: text-only broadcasts reach both members
        "json-yjs",
        "msgpack",
    ],
)
async def test_binary_broadcast_to_mixed_transports(
    make_server: ServerFactory, variant: str
) -> None:
    msgpack = variant == "msgpack"
    server = await make_server(serializer="msgpack" if msgpack else "json")
    data = {"a": 1, "notes": "x"}
    obs = await interop(
        server,
        "mixed",
        msgpack=msgpack,
        yjs=variant == "json-yjs",
        data=data,
        tokens={name: server.token(name, "acme") for name in ("ws", "poll", "writer")},
    )
    assert obs["write"]["ack"]["ok"] is True
    for name in ("ws", "poll"):
        member = obs[f"member:{name}"]
        assert (member["outcome"], member["connected"]) == ("received", True), member
        if variant == "json-yjs":
            assert member["state"] == data
