"""Two engines sharing one store, as two gateway nodes do: writes pipelined behind one the
store refused must not be stored against a state that never existed, and a node's cached
copy must not serve versions older than what another node acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from collab.engine import Engine
from collab.model import Author, Write
from collab.store.base import Store

C = "c1"


def w(e: Engine, base: int, body: str, who: str):  # type: ignore[no-untyped-def]
    return e.write("document", "m", Write(base, {"body": body}, Author(who, who, C)), company_id=C)


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path) -> Callable[[], Store]:  # type: ignore[no-untyped-def]
    from tests.collab.conftest import store_factory

    return store_factory(request.param, tmp_path)


async def test_writes_behind_a_refused_one_are_recomputed(shared: Callable[[], Store]) -> None:
    async with Engine(shared()) as a, Engine(shared()) as b:
        await a.open("document", "m", company_id=C, strategy="merge", text_fields=["body"])
        await w(a, 0, "AAA", "a")  # v1
        await b.open("document", "m", company_id=C)
        await w(b, 1, "AAABBB", "b")  # v2, unknown to a's cached copy
        x, y = await asyncio.gather(w(a, 1, "XXXAAA", "x"), w(a, 1, "AAAYYY", "y"))
        final = (await a.get("document", "m", company_id=C)).data["body"]
        for out in (x, y):
            assert out.status == "merged"
        assert sorted((x.version, y.version)) == [3, 4]
        last = x if x.version == 4 else y
        assert last.data["body"] == final, "an ack reports a state that exists"
        for part in ("AAA", "BBB", "XXX", "YYY"):
            assert final.count(part) == 1, final


async def test_a_read_on_another_node_sees_the_latest_version(
    shared: Callable[[], Store],
) -> None:
    async with Engine(shared()) as a, Engine(shared()) as b:
        await a.open("document", "m", company_id=C, text_fields=["body"])
        await b.open("document", "m", company_id=C)  # b caches version 0
        out = await w(a, 0, "hello", "a")
        view = await b.get("document", "m", company_id=C)
        assert (view.version, view.data) == (out.version, out.data)
        joined = await b.open("document", "m", company_id=C)
        assert joined.version == out.version
