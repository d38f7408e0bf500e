"""The demo page (``/demo``): its HTTP routes, and the page itself in headless Chromium.

The browser test drives ``tests/js/browser.mjs`` (Playwright's ``playwright-core`` with
Debian's ``/usr/bin/chromium``) through ``tests.nodejs.run_node``: Ann and Bob of one company
and Cleo of another sign in; what Ann types shows in Bob's page; a manual conflict opens the
dialog in both, and resolving it closes both with the resolved value; Cleo sees none of it.
It writes the README's screenshots to ``docs/screenshots/`` (``COLLAB_SCREENSHOTS`` elsewhere).
Without Chromium or Node it skips (fails under ``COLLAB_REQUIRE_ALL=1``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from gateway.client import CollabClient
from tests.conftest import require_program
from tests.gateway.conftest import SECRET, Server, ServerFactory
from tests.nodejs import run_node

ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("COLLAB_SCREENSHOTS") or ROOT / "docs" / "screenshots")


async def http(
    server: Server, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kw) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers


# -- routes ------------------------------------------------------------------------------------


async def test_no_demo_unless_asked(make_server: ServerFactory) -> None:
    for settings in ({}, {"dev": True, "demo": False}):
        server = await make_server(**settings)
        for method, path in (
            ("GET", "/demo"),
            ("GET", "/demo/config"),
            ("POST", "/demo/token"),
            ("GET", "/api/documents"),
            ("GET", "/api/presence"),
        ):
            status, _, _ = await http(server, method, path, json={})
            assert status == 404, (settings, path)


async def test_demo_without_dev_mints_no_tokens(make_server: ServerFactory) -> None:
    server = await make_server(demo=True)
    status, page, headers = await http(server, "GET", "/demo")
    assert status == 200 and 'id="conflict-dialog"' in page and "/demo/assets/demo.js" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, js, headers = await http(server, "GET", "/demo/assets/demo.js")
    assert status == 200 and headers["Content-Type"].startswith(
        ("application/javascript", "text/javascript")
    )
    assert "socket.io" in js  # the bundled official client
    assert (await http(server, "GET", "/demo/config"))[1] == {"tokens": False}
    status, _, _ = await http(server, "POST", "/demo/token", json={"user": "u", "company": "c"})
    assert status == 404


async def test_dev_mode_mints_user_tokens(make_server: ServerFactory) -> None:
    server = await make_server(dev=True)
    assert (await http(server, "GET", "/demo/config"))[1] == {"tokens": True}
    body = {"user": "ann", "company": "acme", "name": "Ann Builder", "role": "service"}
    status, answer, _ = await http(server, "POST", "/demo/token", json=body)
    assert status == 200
    claims = jwt.decode(answer["token"], SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["companyId"], claims["name"]) == ("ann", "acme", "Ann Builder")
    assert "role" not in claims  # never a service token
    for bad in ({"user": "ann"}, {"user": "", "company": "c"}, {"user": "x" * 65, "company": "c"}):
        status, answer, _ = await http(server, "POST", "/demo/token", json=bad)
        assert status == 422 and answer["error"]["code"] == "invalid_payload", bad


async def test_documents_and_presence_are_per_company(make_server: ServerFactory) -> None:
    server = await make_server(dev=True)
    ann = CollabClient(server.url, server.token("ann", "acme", name="Ann"))
    cleo = CollabClient(server.url, server.token("cleo", "globex", name="Cleo"))
    async with ann, cleo:
        await ann.join("rfi-1", strategy="manual", text_fields=["notes"])
        await ann.update("rfi-1", 0, {"title": "Slab pour", "notes": ""})
        await ann.join("rfi-2")
        await cleo.join("survey-1")
        status, body, _ = await http(server, "GET", "/api/documents", server.token("bob", "acme"))
        assert status == 200
        docs = {d["documentId"]: d for d in body["documents"]}
        assert set(docs) == {"rfi-1", "rfi-2"}
        assert docs["rfi-1"] | {"createdAt": 0} == {
            "documentId": "rfi-1",
            "strategy": "manual",
            "textFields": ["notes"],
            "version": 1,
            "title": "Slab pour",
            "createdBy": "ann",
            "createdAt": 0,
            "pendingConflicts": 0,
        }
        status, body, _ = await http(server, "GET", "/api/presence", server.token("bob", "acme"))
        assert body == {"users": [{"userId": "ann", "name": "Ann"}]}
        status, body, _ = await http(server, "GET", "/api/documents")
        assert status == 401


# -- the page in Chromium ---------------------------------------------------------------------


async def test_two_people_and_a_stranger_in_chromium(make_server: ServerFactory) -> None:
    chromium = require_program("chromium")
    server = await make_server(dev=True)
    service = server.token("erp", "acme", role="service")
    lines = await run_node(
        "browser.mjs",
        server.url,
        str(SHOTS),
        env={"CHROMIUM": chromium, "SERVICE_TOKEN": service},
        timeout=120,
    )
    checks = {line["check"]: line for line in lines}

    assert checks["presence"]["ann"] == ["ann", "bob"]
    title = "RFI 7 \u2013 Level 3 slab pour sequence"  # an en dash: not just ASCII
    notes = "Pour starts at grid line C.\nPump truck booked for 7:00."
    assert checks["live"] == {"check": "live", "bobTitle": title, "bobNotes": notes}
    # both typed at once in different places of the notes: both kept, Ann's caret unmoved
    assert checks["concurrent"]["notes"] == f"URGENT: {notes}\nConcrete: C30/37."
    assert checks["concurrent"]["annCaret"] == len("URGENT: ")

    iso = checks["isolation"]
    assert iso["cleoDocs"] == [] and iso["cleoFormHidden"] is True
    assert "another company" in iso["cleoError"]

    toasts = checks["toasts"]
    assert {t["event"] for t in toasts["ann"]} >= {"invoice:paid", "notification:new"}
    assert [t["event"] for t in toasts["bob"]] == ["invoice:paid"]  # the notification was Ann's
    assert "INV-2024-001" in toasts["bob"][0]["text"]

    ann, bob = checks["conflict"]["ann"], checks["conflict"]["bob"]
    assert ann["conflictId"] == bob["conflictId"]
    assert (ann["mine"], bob["mine"]) == ("false", "true")  # Bob's offline edit was held
    for dialog in (ann, bob):
        assert dialog["original"] == "Fix handrail on stair B"
        assert dialog["incoming"] == "Replace handrail on stair B"
        assert dialog["conflicted"] == ["title"]
        assert dialog["buttons"] == ["Keep mine", "Keep theirs", "Edit…", "Later"]

    resolved = checks["resolved"]
    for page in ("ann", "bob"):
        assert resolved[page]["title"] == "Replace handrail on stair B"
        assert resolved[page]["notes"] == "Welds cracked at landing 2."
    assert resolved["ann"]["version"] == resolved["bob"]["version"] == "2"
    assert any(t["event"] == "conflict:resolved" for t in resolved["annToasts"])
    assert checks["edited"]["title"] == "Replace handrail, stair B: parts ordered"

    cleo = checks["cleo"]
    assert cleo == {
        "check": "cleo",
        "toasts": [],
        "typing": "",
        "online": ["cleo"],
        "docs": [],
        "dialogOpen": False,
    }
    assert checks["errors"] == {"check": "errors", "ann": [], "bob": [], "cleo": []}
    for name in ("editor-two-users.png", "conflict-dialog.png"):
        assert (SHOTS / name).stat().st_size > 10_000
