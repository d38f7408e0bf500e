"""Rooms on connect and presence: user:online at a user's first connection, user:offline after
its last, once per user however many tabs."""

from __future__ import annotations

import re

from tests.gateway.conftest import Server

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def test_presence_is_once_per_user_across_tabs(server: Server) -> None:
    observer = await server.client("obs")
    tab1 = await server.client("alice")
    online = await observer.next("user:online")
    assert set(online) == {"userId", "status", "timestamp"}
    assert (online["userId"], online["status"]) == ("alice", "online")
    assert ISO.fullmatch(online["timestamp"])
    tab2 = await server.client("alice")
    await observer.assert_none("user:online")
    await tab1.disconnect()
    await observer.assert_none("user:offline")
    await tab2.disconnect()
    offline = await observer.next("user:offline")
    assert (offline["userId"], offline["status"]) == ("alice", "offline")
    await observer.assert_none("user:offline", "user:online")


async def test_user_online_is_not_sent_to_the_connecting_socket(server: Server) -> None:
    me = await server.client("me")
    await me.assert_none("user:online")


async def test_presence_stays_within_the_company(server: Server) -> None:
    other = await server.client("obs", "c2")
    alice = await server.client("alice", "c1")
    await alice.disconnect()
    await other.assert_none("user:online", "user:offline")


async def test_every_socket_is_in_its_company_and_user_rooms(server: Server) -> None:
    c = await server.client("alice", "acme")
    rooms = set(server.gw.sio.rooms(c.sid))
    assert {"company:acme", "user:acme:alice"} <= rooms


async def test_reconnection_is_counted(server: Server) -> None:
    first = await server.client("alice")
    await first.disconnect()
    await server.client("alice")
    text = server.gw.metrics.render().decode()
    assert "collab_reconnections_total 1.0" in text
    assert "collab_connections_active 1.0" in text
