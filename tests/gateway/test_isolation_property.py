"""Tenant isolation as a state machine: random companies, users, tabs (sockets), documents,
joins, leaves, updates, typing and ERP events (in-process publisher and ``POST /api/events``).

After every step, each tab has received exactly what the model says it is entitled to:
every event it should get (waited for), and nothing else (checked after a barrier: a round
trip on the same socket, so anything emitted before has arrived). In particular no tab ever
receives an event, a presence change or document content of another company. User ids are
shared between companies (``u1`` of A is not ``u1`` of B) and document ids are global (the
first company to join one owns it), so scoping mistakes would show.

One gateway (``test_fuzz.LiveGateway``) serves every example; each example uses fresh
company and document names.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from collab.model import Author
from collab.rooms import company_room
from tests.gateway.conftest import Client
from tests.gateway.test_fuzz import LiveGateway

COMPANIES = ("A", "B")
USERS = ("u1", "u2")
#: "home" is the tab's own company's document, "away" the other company's (joined by its
#: tabs at the start), d1 and d2 belong to whichever company joins them first.
DOCS = ("home", "away", "d1", "d2")
MAX_TABS = 6
_runs = itertools.count()

LIVE: LiveGateway | None = None


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    global LIVE
    LIVE = LiveGateway(event_rate=0, user_event_rate=0, typing_throttle_ms=0)
    yield LIVE
    assert LIVE.run(LIVE.health()) == 200
    LIVE.close()
    LIVE = None


@dataclass
class Tab:
    """One socket of the model: whose it is, what it joined, what it is owed."""

    name: str
    client: Client
    company: str
    user: str
    joined: set[str] = field(default_factory=set)
    #: Events owed, per event name, in order: the payload members they must carry.
    owed: defaultdict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


class Isolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        assert LIVE is not None
        self.live = LIVE
        run = next(_runs)
        self.prefix = f"iso{run}-"
        self.tabs: list[Tab] = []
        self.owner: dict[str, str] = {}  # document -> company
        self.versions: dict[str, int] = {}
        self.data: dict[str, dict[str, Any]] = {}
        self.counter = itertools.count()

    # -- names ---------------------------------------------------------------------------

    def company(self, c: str) -> str:
        return self.prefix + c

    def doc(self, d: str, tab: Tab) -> str:
        if d == "home":
            return f"{tab.company}-home"
        if d == "away":
            other = next(c for c in COMPANIES if self.company(c) != tab.company)
            return f"{self.company(other)}-home"
        return self.prefix + d

    def tab(self, i: int) -> Tab:
        return self.tabs[i % len(self.tabs)]

    def owe(self, tabs: list[Tab], event: str, members: dict[str, Any]) -> None:
        for t in tabs:
            t.owed[event].append(members)

    def company_tabs(self, company: str) -> list[Tab]:
        return [t for t in self.tabs if t.company == company]

    # -- rules ---------------------------------------------------------------------------

    @initialize(
        tabs=st.lists(
            st.tuples(st.sampled_from(COMPANIES), st.sampled_from(USERS)), min_size=2, max_size=4
        )
    )
    def open_tabs(self, tabs: list[tuple[str, str]]) -> None:
        for c in COMPANIES:  # every company owns its home document
            self.live.run(self._create_home(self.company(c)))
        for c, u in tabs:
            self.open_tab(c, u)
            self.everyone_got_exactly_their_events()
        for i in range(len(self.tabs)):
            self.join(i, "home")

    async def _create_home(self, company: str) -> None:
        doc = f"{company}-home"
        author = Author("owner", "Owner", company)
        await self.live.server.gw.engine.open("document", doc, company_id=company, author=author)
        self.owner[doc] = company

    @precondition(lambda self: len(self.tabs) < MAX_TABS)
    @rule(c=st.sampled_from(COMPANIES), u=st.sampled_from(USERS))
    def open_tab(self, c: str, u: str) -> None:
        company = self.company(c)
        first = not any(t.user == u for t in self.company_tabs(company))
        others = self.company_tabs(company)
        client = self.live.run(self.live.server.client(u, company))
        if first:
            self.owe(others, "user:online", {"userId": u, "status": "online"})
        self.tabs.append(Tab(f"{c}/{u}#{next(self.counter)}", client, company, u))

    @precondition(lambda self: bool(self.tabs))
    @rule(i=st.integers(0, MAX_TABS))
    def close_tab(self, i: int) -> None:
        tab = self.tab(i)
        self.tabs.remove(tab)
        sid = tab.client.sid
        self.live.run(tab.client.disconnect())
        self.live.run(self._gone(sid))
        if not any(t.user == tab.user for t in self.company_tabs(tab.company)):
            self.owe(
                self.company_tabs(tab.company),
                "user:offline",
                {"userId": tab.user, "status": "offline"},
            )

    async def _gone(self, sid: str) -> None:
        """Until the server has run the socket's disconnect handler to its end (python-socketio
        takes the sid out of its rooms right after)."""
        manager = self.live.server.gw.sio.manager
        for _ in range(500):
            if sid not in manager.rooms.get("/", {}).get(None, {}):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{sid} never disconnected on the server")

    @precondition(lambda self: bool(self.tabs))
    @rule(i=st.integers(0, MAX_TABS), d=st.sampled_from(DOCS))
    def join(self, i: int, d: str) -> None:
        tab = self.tab(i)
        doc = self.doc(d, tab)
        ack = self.live.run(tab.client.call("document:join", {"documentId": doc}))
        owner = self.owner.setdefault(doc, tab.company)
        if owner != tab.company:
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", ack
            assert set(ack) == {"ok", "error"}  # nothing of the document's content
            return
        assert ack["ok"] is True, ack
        assert ack["version"] == self.versions.get(doc, 0)
        assert ack["data"] == self.data.get(doc, {})
        tab.joined.add(doc)

    @precondition(lambda self: bool(self.tabs))
    @rule(i=st.integers(0, MAX_TABS), d=st.sampled_from(DOCS))
    def leave(self, i: int, d: str) -> None:
        tab = self.tab(i)
        doc = self.doc(d, tab)
        ack = self.live.run(tab.client.call("document:leave", {"documentId": doc}))
        assert ack["ok"] is True, ack
        tab.joined.discard(doc)

    @precondition(lambda self: bool(self.tabs))
    @rule(i=st.integers(0, MAX_TABS), d=st.sampled_from(DOCS), value=st.integers(0, 9))
    def update(self, i: int, d: str, value: int) -> None:
        tab = self.tab(i)
        doc = self.doc(d, tab)
        version = self.versions.get(doc, 0)
        data = {"value": value, "by": tab.user, "company": tab.company}
        payload = {"documentId": doc, "version": version, "data": data}
        ack = self.live.run(tab.client.call("document:update", payload))
        if doc not in tab.joined:
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", ack
            return
        assert ack["ok"] is True and ack["version"] == version + 1, ack
        self.versions[doc], self.data[doc] = version + 1, data
        room = [t for t in self.tabs if doc in t.joined and t is not tab]
        members = {"documentId": doc, "version": version + 1, "data": data, "updatedBy": tab.user}
        self.owe(room, "document:updated", members)

    @precondition(lambda self: bool(self.tabs))
    @rule(i=st.integers(0, MAX_TABS), d=st.sampled_from(DOCS))
    def typing(self, i: int, d: str) -> None:
        tab = self.tab(i)
        doc = self.doc(d, tab)
        ack = self.live.run(tab.client.call("user:typing", {"documentId": doc}))
        if doc not in tab.joined:
            assert ack["error"]["code"] == "forbidden", ack
            return
        assert ack == {"ok": True}, ack
        room = [t for t in self.tabs if doc in t.joined and t is not tab]
        self.owe(room, "user:typing", {"userId": tab.user, "resourceId": doc})

    @rule(c=st.sampled_from(COMPANIES), via_http=st.booleans())
    def publish_to_company(self, c: str, via_http: bool) -> None:
        company = self.company(c)
        project = f"p{next(self.counter)}"
        data = {
            "id": project,
            "name": "Tower",
            "companyId": company,
            "status": "planning",
            "createdAt": "2024-01-15T10:30:00.000Z",
        }
        self.live.run(self._publish("project:created", company, data, None, via_http))
        self.owe(
            self.company_tabs(company), "project:created", {"id": project, "companyId": company}
        )

    @rule(c=st.sampled_from(COMPANIES), u=st.sampled_from(USERS), via_http=st.booleans())
    def notify_user(self, c: str, u: str, via_http: bool) -> None:
        company = self.company(c)
        note = f"n{next(self.counter)}"
        data = {
            "id": note,
            "title": "Invoice approved",
            "message": "INV-1",
            "type": "info",
            "userId": u,
            "createdAt": "2024-01-15T10:30:00.000Z",
        }
        self.live.run(self._publish("notification:new", company, data, None, via_http))
        mine = [t for t in self.company_tabs(company) if t.user == u]
        self.owe(mine, "notification:new", {"id": note, "userId": u})

    async def _publish(
        self, event: str, company: str, data: dict[str, Any], user: str | None, via_http: bool
    ) -> None:
        server = self.live.server
        if not via_http:
            await server.gw.publisher.publish(event, company, data, user)
            return
        token = server.token("erp", "erp-system", role="service")
        body = {"event": event, "companyId": company, "data": data}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.url + "/api/events", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as r,
        ):
            assert r.status == 200, await r.text()

    # -- the check after every step -----------------------------------------------------

    @invariant()
    def everyone_got_exactly_their_events(self) -> None:
        self.live.run(self._check())

    async def _check(self) -> None:
        for tab in self.tabs:
            for event, owed in tab.owed.items():
                for members in owed:
                    got = await tab.client.next(event, wait=5)
                    self._assert_own_company(tab, event, got)
                    for key, value in members.items():
                        assert got.get(key) == value, (tab.name, event, got, members)
                owed.clear()
        await asyncio.gather(*(tab.client.barrier() for tab in self.tabs))
        for tab in self.tabs:
            for event, queue in tab.client.queues.items():
                extra = []
                while not queue.empty():
                    extra.append(queue.get_nowait())
                for got in extra:
                    self._assert_own_company(tab, event, got)
                assert not extra, f"{tab.name} got unexpected {event}: {extra}"

    def _assert_own_company(self, tab: Tab, event: str, got: Any) -> None:
        """Whatever a tab receives is about its own company (a clearer failure than a model
        mismatch, for the case that matters most)."""
        assert isinstance(got, dict), (event, got)
        doc = got.get("documentId") or got.get("resourceId")
        if isinstance(doc, str) and doc in self.owner:
            assert self.owner[doc] == tab.company, f"{tab.name} heard of {doc} ({event})"
        if "companyId" in got:
            assert got["companyId"] == tab.company, f"{tab.name} got {event} of {got['companyId']}"
        if isinstance(got.get("data"), dict) and "company" in got["data"]:
            assert got["data"]["company"] == tab.company, f"{tab.name} read another's document"

    def teardown(self) -> None:
        async def close_all() -> None:
            for tab in self.tabs:
                sid = tab.client.sid
                await tab.client.disconnect()
                await self._gone(sid)
            gw = self.live.server.gw
            for c in COMPANIES:
                assert not gw.sio.manager.rooms.get("/", {}).get(company_room(self.company(c)))

        self.live.run(close_all())


def test_tenant_isolation(live: LiveGateway) -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        Isolation,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
