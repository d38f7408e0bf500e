"""The contract every store backend passes: one suite, run against each backend of the
``store`` fixture (``tests/store/conftest.py``). ``MemoryStore`` is the reference reading."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from collab.errors import StoreConflict
from collab.model import (
    Author,
    Checkpoint,
    DocumentMeta,
    Kind,
    LogEntry,
    PendingConflict,
    StoredDocument,
)
from collab.store import MemoryStore, SQLiteStore, Store, open_store
from collab.store.redis import RedisStore

StoreFactory = Callable[[], Store]


def meta(doc_id: str, company: str = "acme", kind: Kind = "document", **kw: Any) -> DocumentMeta:
    return DocumentMeta(id=doc_id, kind=kind, company_id=company, strategy="merge", **kw)


def cp(version: int = 0, state: bytes = b"", **m: Any) -> Checkpoint:
    return Checkpoint(version, state, dict(m))


def entry(version: int, resolves: str | None = None, **m: Any) -> LogEntry:
    return LogEntry(version, f"u{version}".encode(), {"v": version, **m}, resolves)


def conflict(cid: str, at: int = 1) -> PendingConflict:
    return PendingConflict(
        conflict_id=cid,
        base_version=at - 1,
        at_version=at,
        conflicted_fields=("title",),
        original_value={"title": "a"},
        incoming_value={"title": "b"},
        author=Author("u1", "Ana", "acme"),
        at=1_700_000_000_000.0,
        op_id="op-" + cid,
    )


async def new_doc(store: Store, doc_id: str = "d1", **kw: Any) -> str:
    m = meta(doc_id, **kw)
    await store.create(m, cp())
    return m.key


async def versions(store: Store, key: str) -> list[int]:
    doc = await store.load(key)
    assert doc is not None
    return [e.version for e in doc.entries]


# -- identity and lifecycle ------------------------------------------------------------------


async def test_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    report = await store.health()
    assert report["ok"] is True
    assert report["backend"] == store.name


async def test_start_twice_raises(store: Store) -> None:
    with pytest.raises(RuntimeError):
        await store.start()


async def test_stop_is_idempotent_and_stops(store: Store) -> None:
    key = await new_doc(store)
    await store.stop()
    await store.stop()
    with pytest.raises(RuntimeError):
        await store.load(key)
    with pytest.raises(RuntimeError):
        store.append(key, entry(1))
    assert (await store.health())["ok"] is False


async def test_not_started_raises(make_store: StoreFactory) -> None:
    s = make_store()
    with pytest.raises(RuntimeError):
        await s.load("document:x")


async def test_async_with_starts_and_stops(make_store: StoreFactory) -> None:
    s = make_store()
    assert isinstance(s, MemoryStore | SQLiteStore | RedisStore)
    async with s as started:
        assert started is s
        key = await new_doc(s)
        await s.append(key, entry(1))
    with pytest.raises(RuntimeError):
        await s.load(key)


async def test_restart_keeps_data(store: Store) -> None:
    key = await new_doc(store)
    await store.append(key, entry(1))
    await store.stop()
    await store.start()
    assert await versions(store, key) == [1]


async def test_stop_flushes_accepted_appends(make_store: StoreFactory) -> None:
    s = make_store()
    await s.start()
    key = await new_doc(s)
    futures = [s.append(key, entry(v)) for v in range(1, 51)]
    await s.stop()
    await asyncio.gather(*futures)
    await s.start()
    try:
        assert await versions(s, key) == list(range(1, 51))
    finally:
        await s.stop()


# -- create and load -------------------------------------------------------------------------


async def test_load_unknown_is_none(store: Store) -> None:
    assert await store.load("document:nope") is None


async def test_create_returns_what_is_stored(store: Store) -> None:
    m = meta("d1", text_fields=("body",), created_by="u1")
    doc = await store.create(m, cp(3, b"state", clocks={"a": 1}))
    assert doc == StoredDocument(m, cp(3, b"state", clocks={"a": 1}), (), ())
    assert doc.version == 3
    assert await store.load(m.key) == doc


async def test_create_if_absent_keeps_the_first(store: Store) -> None:
    first = await store.create(meta("d1", created_by="first"), cp(0, b"one"))
    again = await store.create(meta("d1", created_by="second"), cp(7, b"two"))
    assert again == first
    assert again.meta.created_by == "first"


async def test_racing_creators_one_wins(store: Store) -> None:
    a, b = meta("d1", created_by="a"), meta("d1", created_by="b")
    got_a, got_b = await asyncio.gather(store.create(a, cp(0, b"a")), store.create(b, cp(0, b"b")))
    assert got_a == got_b
    assert got_a.meta in (a, b)
    assert await store.load(a.key) == got_a


async def test_documents_and_resources_are_separate_keys(store: Store) -> None:
    await store.create(meta("x", kind="document"), cp(0, b"doc"))
    await store.create(meta("x", kind="resource"), cp(0, b"res"))
    doc, res = await store.load("document:x"), await store.load("resource:x")
    assert doc is not None and res is not None
    assert (doc.checkpoint.state, res.checkpoint.state) == (b"doc", b"res")


# -- append and compare-and-set --------------------------------------------------------------


async def test_append_in_order(store: Store) -> None:
    key = await new_doc(store)
    for v in range(1, 6):
        await store.append(key, entry(v))
    doc = await store.load(key)
    assert doc is not None
    assert doc.entries == tuple(entry(v) for v in range(1, 6))
    assert doc.version == 5


async def test_wrong_version_is_a_conflict_and_writes_nothing(store: Store) -> None:
    key = await new_doc(store)
    await store.append(key, entry(1))
    before = await store.load(key)
    for bad in (1, 3, 0, -5):
        with pytest.raises(StoreConflict) as info:
            await store.append(key, LogEntry(bad, b"bad", {"bad": True}))
        assert (info.value.doc_key, info.value.expected, info.value.actual) == (key, bad - 1, 1)
        assert await store.load(key) == before  # a load lifts the poisoning (below)


async def test_a_refused_append_poisons_the_ones_queued_behind_it(store: Store) -> None:
    """Appends are pipelined: those queued behind a refused one were computed on top of it.
    Their versions may follow the stored head, yet they must not be written."""
    key = await new_doc(store)
    await store.append(key, entry(1))
    other = await store.create(meta("other"), cp(0))
    refused = store.append(key, entry(3))  # the store's head is 1: refused
    behind = store.append(key, entry(2))  # numerically next, but computed on top of v3
    unrelated = store.append(other.meta.key, entry(1))
    for fut in (refused, behind):
        with pytest.raises(StoreConflict):
            await fut
    await unrelated  # other documents are not affected
    assert await store.head(key) == 1
    await store.load(key)  # the writer reloads before retrying: appends are accepted again
    await store.append(key, entry(2))
    assert await store.head(key) == 2
    assert await store.head("document:nope") is None


async def test_append_follows_the_checkpoint(store: Store) -> None:
    key = (await store.create(meta("d1"), cp(10))).meta.key
    with pytest.raises(StoreConflict):
        await store.append(key, entry(1))
    await store.load(key)  # lifts the poisoning, as the engine's retry does
    await store.append(key, entry(11))
    assert await versions(store, key) == [11]


async def test_append_unknown_key_is_key_error(store: Store) -> None:
    with pytest.raises(KeyError):
        await store.append("document:nope", entry(1))


async def test_many_gathered_appends(store: Store) -> None:
    keys = [await new_doc(store, f"d{i}") for i in range(10)]
    # Issued synchronously: call order is the documents' order, whatever the batching.
    futures = [store.append(k, entry(v)) for v in range(1, 31) for k in keys]
    assert await asyncio.gather(*futures) == [None] * len(futures)
    for k in keys:
        assert await versions(store, k) == list(range(1, 31))


async def test_a_conflict_in_a_batch_fails_its_document_only(store: Store) -> None:
    key = await new_doc(store)
    other = await new_doc(store, "d2")
    futures = [
        store.append(key, entry(1, who="first")),
        store.append(key, entry(2)),
        store.append(key, entry(2, who="late")),
        store.append("document:nope", entry(1)),
        store.append(other, entry(1)),
        store.append(key, entry(3)),  # behind a refused append of its document: poisoned
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(r) for r in results] == [
        type(None),
        type(None),
        StoreConflict,
        KeyError,
        type(None),
        StoreConflict,
    ]
    await store.load(key)
    await store.append(key, entry(3))
    doc = await store.load(key)
    assert doc is not None
    assert doc.entries == (entry(1, who="first"), entry(2), entry(3))
    assert await versions(store, other) == [1]


# -- conflicts -------------------------------------------------------------------------------


async def test_conflicts_are_kept_and_resolved_by_an_entry(store: Store) -> None:
    key = await new_doc(store)
    await store.add_conflict(key, conflict("c1"))
    await store.add_conflict(key, conflict("c2"))
    doc = await store.load(key)
    assert doc is not None
    assert doc.conflicts == (conflict("c1"), conflict("c2"))
    assert doc.version == 0  # a pending conflict does not move the version

    await store.append(key, entry(1, resolves="c1"))
    doc = await store.load(key)
    assert doc is not None
    assert doc.conflicts == (conflict("c2"),)
    assert doc.entries[-1].resolves == "c1"

    await store.append(key, entry(2, resolves="not-pending"))  # nothing to drop: still fine
    assert await versions(store, key) == [1, 2]


async def test_a_failed_append_keeps_the_conflict(store: Store) -> None:
    key = await new_doc(store)
    await store.add_conflict(key, conflict("c1"))
    with pytest.raises(StoreConflict):
        await store.append(key, entry(5, resolves="c1"))
    doc = await store.load(key)
    assert doc is not None and doc.conflicts == (conflict("c1"),)


async def test_add_conflict_replaces_same_id_and_needs_a_document(store: Store) -> None:
    key = await new_doc(store)
    await store.add_conflict(key, conflict("c1", at=1))
    await store.add_conflict(key, conflict("c2", at=1))
    await store.add_conflict(key, conflict("c1", at=4))
    doc = await store.load(key)
    assert doc is not None
    assert doc.conflicts == (conflict("c1", at=4), conflict("c2", at=1))
    with pytest.raises(KeyError):
        await store.add_conflict("document:nope", conflict("c1"))


# -- compaction ------------------------------------------------------------------------------


async def test_compact(store: Store) -> None:
    key = await new_doc(store)
    for v in range(1, 6):
        await store.append(key, entry(v))

    await store.compact(key, cp(3, b"at3", n=3))
    doc = await store.load(key)
    assert doc is not None
    assert doc.checkpoint == cp(3, b"at3", n=3)
    assert [e.version for e in doc.entries] == [4, 5]
    assert doc.version == 5

    await store.compact(key, cp(2, b"older"))  # older: ignored
    await store.compact(key, cp(3, b"same"))  # not newer: ignored
    assert await store.load(key) == doc

    await store.compact(key, cp(5, b"at5"))
    doc = await store.load(key)
    assert doc is not None
    assert (doc.checkpoint.state, doc.entries, doc.version) == (b"at5", (), 5)
    await store.append(key, entry(6))
    assert await versions(store, key) == [6]


async def test_compact_beyond_head_or_unknown_key(store: Store) -> None:
    key = await new_doc(store)
    await store.append(key, entry(1))
    with pytest.raises(ValueError):
        await store.compact(key, cp(2))
    assert await versions(store, key) == [1]
    with pytest.raises(KeyError):
        await store.compact("document:nope", cp(1))


# -- listing ---------------------------------------------------------------------------------


async def test_list_documents_by_company_and_kind(store: Store) -> None:
    a = meta("a", created_at=3.0)
    b = meta("b", created_at=1.0)
    r = meta("r", kind="resource", created_at=2.0)
    other = meta("o", company="globex")
    for m in (a, b, r, other):
        await store.create(m, cp())
    assert await store.list_documents("acme") == [b, r, a]
    assert await store.list_documents("acme", "document") == [b, a]
    assert await store.list_documents("acme", "resource") == [r]
    assert await store.list_documents("globex") == [other]
    assert await store.list_documents("nobody") == []


# -- values round-trip exactly ---------------------------------------------------------------

NESTED: dict[str, Any] = {
    "título": "Obra Nº 7 — fase β 🏗️",
    "nested": {"list": [1, 2.5, None, True, {"deep": ["x", {"中文": "建筑"}]}], "empty": {}},
    'quote"and\\back': "line\nbreak\ttab\u0000nul",
    "big": 2**53,
    "neg": -0.125,
}


async def test_json_round_trip(store: Store) -> None:
    m = meta("ü-✓", company="émpresa", created_by="José", text_fields=("descripción",))
    await store.create(m, Checkpoint(0, b"", NESTED))
    await store.append(m.key, LogEntry(1, b"u", NESTED))
    c = PendingConflict(
        conflict_id="ç1",
        base_version=0,
        at_version=1,
        conflicted_fields=("título",),
        original_value=NESTED,
        incoming_value={"título": "otro"},
        author=Author("ü", "Zoë", "émpresa"),
        at=1.5,
    )
    await store.add_conflict(m.key, c)
    doc = await store.load(m.key)
    assert doc is not None
    assert doc.meta == m
    assert doc.checkpoint.meta == NESTED
    assert doc.entries[0].meta == NESTED
    assert doc.conflicts == (c,)
    assert await store.list_documents("émpresa") == [m]


async def test_bytes_round_trip(store: Store) -> None:
    blobs = [b"", b"\x00", b"\x00\x01\x00\xff", os.urandom(1 << 20)]
    m = meta("bytes")
    await store.create(m, cp(0, b"\x00start\x00"))
    for v, blob in enumerate(blobs, start=1):
        await store.append(m.key, LogEntry(v, blob, {}))
    doc = await store.load(m.key)
    assert doc is not None
    assert doc.checkpoint.state == b"\x00start\x00"
    assert [e.update for e in doc.entries] == blobs
    assert all(type(e.update) is bytes for e in doc.entries)
    await store.compact(m.key, cp(4, b""))
    doc = await store.load(m.key)
    assert doc is not None and doc.checkpoint.state == b""


async def test_callers_cannot_corrupt_the_store(store: Store) -> None:
    m = meta("d1")
    cp_meta: dict[str, Any] = {"clocks": {"a": 1}}
    entry_meta: dict[str, Any] = {"op": ["x"]}
    original: dict[str, Any] = {"title": "a"}
    c = PendingConflict("c1", 0, 1, ("title",), original, {"title": "b"}, Author("u"), 1.0)
    await store.create(m, Checkpoint(0, b"s", cp_meta))
    await store.append(m.key, LogEntry(1, b"u", entry_meta))
    await store.add_conflict(m.key, c)
    expected = await store.load(m.key)
    assert expected is not None

    # What the caller handed in...
    cp_meta["clocks"]["a"] = 99
    entry_meta["op"].append("y")
    original["title"] = "changed"
    # ...and what it got back.
    got = await store.load(m.key)
    assert got is not None
    got.checkpoint.meta["clocks"]["a"] = 42
    got.entries[0].meta["op"].clear()
    got.conflicts[0].original_value["title"] = "zzz"
    got.conflicts[0].incoming_value.clear()
    assert expected.checkpoint.meta == {"clocks": {"a": 1}}  # two loads share nothing either

    again = await store.load(m.key)
    assert again is not None
    assert again.checkpoint.meta == {"clocks": {"a": 1}}
    assert again.entries[0].meta == {"op": ["x"]}
    assert again.conflicts[0].original_value == {"title": "a"}
    assert again.conflicts[0].incoming_value == {"title": "b"}


async def test_non_json_metadata_is_refused(store: Store) -> None:
    key = await new_doc(store)
    with pytest.raises(TypeError):
        store.append(key, LogEntry(1, b"u", {"bad": object()}))
    assert await versions(store, key) == []


# -- open_store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cls", "path"),
    [
        ("memory://", MemoryStore, None),
        ("sqlite:///abs/dir/collab.db", SQLiteStore, "/abs/dir/collab.db"),
        ("sqlite://relative.db", SQLiteStore, "relative.db"),
        ("SQLITE://rel/x.sqlite3", SQLiteStore, "rel/x.sqlite3"),
        ("data/collab.db", SQLiteStore, "data/collab.db"),
        ("/var/lib/collab.sqlite", SQLiteStore, "/var/lib/collab.sqlite"),
        ("x.SQLITE3", SQLiteStore, "x.SQLITE3"),
        ("redis://localhost:6379/0", RedisStore, None),
        ("REDISS://:secret@host:6380", RedisStore, None),
    ],
)
def test_open_store(url: str, cls: type, path: str | None) -> None:
    s = open_store(url)
    assert type(s) is cls
    if path is not None:
        assert isinstance(s, SQLiteStore) and s.path == path


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:secret@host:port/0", "invalid redis store URL"),
        ("rediss://:secret@[host", "invalid redis store URL"),
        ("postgres://u:secret@host/db", "unknown store URL scheme 'postgres'"),
        ("collab.txt", "no scheme"),
        ("", "no scheme"),
        ("sqlite://", "needs a path"),
        ("memory://somewhere", "no host"),
    ],
)
def test_open_store_refuses(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        open_store(url)
    assert "secret" not in str(info.value)
