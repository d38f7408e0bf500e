"""The engine's behaviour, row by row of the contract's strategies and error codes."""

from __future__ import annotations

import asyncio
import math

import pytest
from pycrdt import Doc, Map

from collab import ydoc, yjs
from collab.engine import Engine, EngineConfig
from collab.errors import CollabError, ErrorCode
from collab.limits import Limits
from collab.model import Write
from collab.store.memory import MemoryStore

from .conftest import ANN, BOB, EVE

C = "acme"


async def doc(
    engine: Engine,
    doc_id: str = "d",
    strategy: str = "merge",
    text_fields: list[str] | None = None,
    data: dict | None = None,
) -> None:
    await engine.open(
        "document", doc_id, company_id=C, strategy=strategy, text_fields=text_fields or []
    )
    if data is not None:
        await engine.write("document", doc_id, Write(0, data, ANN), company_id=C)


async def test_open_creates_empty_document_with_strategy(engine: Engine) -> None:
    view = await engine.open(
        "document", "new", company_id=C, strategy="manual", text_fields=["notes"]
    )
    assert (view.version, view.data, view.meta.strategy) == (0, {"notes": ""}, "manual")
    again = await engine.open("document", "new", company_id=C, strategy="merge")
    assert again.meta.strategy == "manual", "an existing document keeps its strategy"


async def test_defaults_per_kind(engine: Engine) -> None:
    assert (await engine.open("document", "a", company_id=C)).meta.strategy == "merge"
    assert (await engine.open("resource", "a", company_id=C)).meta.strategy == "last-write-wins"


async def test_fast_path_increments_version_by_one(engine: Engine) -> None:
    await doc(engine)
    for v in range(5):
        out = await engine.write("document", "d", Write(v, {"n": v}, ANN), company_id=C)
        assert (out.status, out.version, out.data) == ("applied", v + 1, {"n": v})


async def test_other_company_cannot_touch(engine: Engine) -> None:
    await doc(engine, data={"secret": 1})
    for call in (
        engine.get("document", "d", company_id="globex"),
        engine.open("document", "d", company_id="globex"),
        engine.write("document", "d", Write(1, {}, EVE), company_id="globex"),
        engine.resolve("document", "d", "x", {}, EVE, company_id="globex"),
        engine.sync(
            "document", "d", yjs.create_sync_step1_message(b"\x00"), EVE, company_id="globex"
        ),
    ):
        with pytest.raises(CollabError) as exc:
            await call
        assert exc.value.code == ErrorCode.FORBIDDEN
    assert (await engine.get("document", "d", company_id=C)).data == {"secret": 1}


async def test_version_ahead_and_history_gone(make_store) -> None:  # type: ignore[no-untyped-def]
    async with Engine(make_store(), EngineConfig(history_limit=3)) as e:
        await doc(e)
        for v in range(10):
            await e.write("document", "d", Write(v, {"n": v}, ANN), company_id=C)
        with pytest.raises(CollabError) as exc:
            await e.write("document", "d", Write(11, {"n": 0}, ANN), company_id=C)
        assert exc.value.code == ErrorCode.VERSION_AHEAD and exc.value.details["version"] == 10
        with pytest.raises(CollabError) as exc:
            await e.write("document", "d", Write(2, {"n": 0}, ANN), company_id=C)
        assert exc.value.code == ErrorCode.HISTORY_GONE
        out = await e.write("document", "d", Write(7, {"n": 7, "x": 1}, ANN), company_id=C)
        assert out.status == "merged"


@pytest.mark.parametrize(
    "bad, code",
    [
        ([1, 2], ErrorCode.INVALID_PAYLOAD),
        ({"x": math.nan}, ErrorCode.INVALID_PAYLOAD),
        ({"x": math.inf}, ErrorCode.INVALID_PAYLOAD),
        ({"x": 2**60}, ErrorCode.INVALID_PAYLOAD),
        ({"x": "\ud800"}, ErrorCode.INVALID_PAYLOAD),
        ({"x": {1, 2}}, ErrorCode.INVALID_PAYLOAD),
        ({"notes": 5}, ErrorCode.INVALID_PAYLOAD),
        ({"x": "y" * 2_000_000}, ErrorCode.PAYLOAD_TOO_LARGE),
        ({"x": list(range(20_000))}, ErrorCode.PAYLOAD_TOO_LARGE),
    ],
)
async def test_bad_input_is_refused_and_changes_nothing(
    engine: Engine, bad: object, code: ErrorCode
) -> None:
    await doc(engine, text_fields=["notes"], data={"notes": "keep", "n": 1})
    with pytest.raises(CollabError) as exc:
        await engine.write("document", "d", Write(1, bad, ANN), company_id=C)  # type: ignore[arg-type]
    assert exc.value.code == code
    view = await engine.get("document", "d", company_id=C)
    assert (view.version, view.data) == (1, {"notes": "keep", "n": 1})


async def test_too_deep_is_refused(engine: Engine) -> None:
    await doc(engine)
    deep: dict = {}
    cur = deep
    for _ in range(40):
        cur["a"] = {}
        cur = cur["a"]
    with pytest.raises(CollabError) as exc:
        await engine.write("document", "d", Write(0, deep, ANN), company_id=C)
    assert exc.value.code == ErrorCode.INVALID_PAYLOAD


async def test_unknown_strategy_and_bad_ids(engine: Engine) -> None:
    for call in (
        engine.open("document", "x", company_id=C, strategy="yolo"),
        engine.open("document", "", company_id=C),
        engine.open("document", "x", company_id=C, text_fields="notes"),
        engine.write("document", "d", Write(-1, {}, ANN), company_id=C),
    ):
        with pytest.raises(CollabError) as exc:
            await call
        assert exc.value.code == ErrorCode.INVALID_PAYLOAD
    with pytest.raises(CollabError) as exc:
        await engine.write("document", "missing", Write(0, {}, ANN), company_id=C)
    assert exc.value.code == ErrorCode.NOT_FOUND


async def test_merge_keeps_both_text_insertions_and_reports_fields(engine: Engine) -> None:
    await doc(engine, text_fields=["notes"], data={"notes": "pour slab on level 2", "s": "a"})
    a = await engine.write(
        "document",
        "d",
        Write(1, {"notes": "pour slab on level 2 today", "s": "b"}, ANN),
        company_id=C,
    )
    b = await engine.write(
        "document",
        "d",
        Write(1, {"notes": "crew: pour slab on level 2", "s": "c"}, BOB),
        company_id=C,
    )
    assert a.status == "applied" and b.status == "merged" and b.version == 3
    assert b.data["notes"] == "crew: pour slab on level 2 today"
    assert b.data["s"] == "c", "scalar changed on both sides: the later arrival wins"
    assert set(b.conflicted_fields) == {"notes", "s"}
    assert b.original_value == a.data and b.incoming_value["s"] == "c"
    assert b.resolved_value == b.data


async def test_merge_lists_by_element_and_objects_by_key(engine: Engine) -> None:
    base = {"items": ["nails", "rebar"], "site": {"city": "Oslo", "zip": "0150"}}
    await doc(engine, data=base)
    await engine.write(
        "document",
        "d",
        Write(
            1,
            {"items": ["nails", "rebar", "cement"], "site": {"city": "Bergen", "zip": "0150"}},
            ANN,
        ),
        company_id=C,
    )
    out = await engine.write(
        "document",
        "d",
        Write(
            1, {"items": ["gloves", "nails", "rebar"], "site": {"city": "Oslo", "zip": "5003"}}, BOB
        ),
        company_id=C,
    )
    assert out.data == {
        "items": ["gloves", "nails", "rebar", "cement"],
        "site": {"city": "Bergen", "zip": "5003"},
    }


async def test_lww_document_later_arrival_wins_disjoint_kept(engine: Engine) -> None:
    await doc(
        engine,
        strategy="last-write-wins",
        text_fields=["notes"],
        data={"a": 1, "b": 1, "notes": "x"},
    )
    await engine.write(
        "document", "d", Write(1, {"a": 2, "b": 1, "notes": "xy"}, ANN), company_id=C
    )
    out = await engine.write(
        "document", "d", Write(1, {"a": 3, "b": 5, "notes": "zx"}, BOB), company_id=C
    )
    assert out.status == "merged"
    assert out.data == {"a": 3, "b": 5, "notes": "zx"}
    assert set(out.conflicted_fields) == {"a", "notes"}


async def test_lww_resource_orders_by_timestamp(engine: Engine) -> None:
    await engine.open("resource", "r", company_id=C)
    await engine.write(
        "resource", "r", Write(0, {"qty": 1, "loc": "A"}, ANN, timestamp=1.0), company_id=C
    )
    await engine.write(
        "resource", "r", Write(1, {"qty": 9, "loc": "A"}, ANN, timestamp=300.0), company_id=C
    )
    out = await engine.write(
        "resource", "r", Write(1, {"qty": 5, "loc": "B"}, BOB, timestamp=200.0), company_id=C
    )
    assert out.data == {"qty": 9, "loc": "B"}, "older timestamp loses qty, keeps its own loc"
    assert out.conflicted_fields == ("qty",)


async def test_nested_conflict_paths(engine: Engine) -> None:
    await doc(
        engine,
        strategy="last-write-wins",
        data={"site": {"address": "1 Main", "city": "X"}, "items": [1, 2, 3]},
    )
    await engine.write(
        "document",
        "d",
        Write(1, {"site": {"address": "2 Main", "city": "X"}, "items": [1, 2, 4]}, ANN),
        company_id=C,
    )
    out = await engine.write(
        "document",
        "d",
        Write(1, {"site": {"address": "3 Main", "city": "X"}, "items": [1, 2, 5]}, BOB),
        company_id=C,
    )
    assert set(out.conflicted_fields) == {"site.address", "items.2"}


async def test_manual_conflict_waits_then_resolves(engine: Engine) -> None:
    await doc(engine, strategy="manual", data={"status": "open", "other": 0})
    await engine.write(
        "document", "d", Write(1, {"status": "closed", "other": 0}, ANN), company_id=C
    )
    out = await engine.write(
        "document",
        "d",
        Write(1, {"status": "blocked", "other": 0}, BOB, op_id="op-1"),
        company_id=C,
    )
    assert (out.status, out.version, out.data["status"]) == ("conflict", 2, "closed")
    assert out.conflict_id and out.conflicted_fields == ("status",)
    assert out.original_value == {"status": "closed", "other": 0}
    assert out.incoming_value == {"status": "blocked", "other": 0}
    dup = await engine.write(
        "document",
        "d",
        Write(1, {"status": "blocked", "other": 0}, BOB, op_id="op-1"),
        company_id=C,
    )
    assert dup.status == "duplicate" and dup.conflict_id == out.conflict_id
    with pytest.raises(CollabError) as exc:
        await engine.write(
            "document", "d", Write(1, {"status": "x", "other": 0}, BOB), company_id=C
        )
    assert exc.value.code == ErrorCode.CONFLICT_PENDING
    view = await engine.get("document", "d", company_id=C)
    assert [c.conflict_id for c in view.conflicts] == [out.conflict_id]
    res = await engine.resolve(
        "document", "d", out.conflict_id, {"status": "blocked", "other": 0}, ANN, company_id=C
    )
    assert (res.version, res.resolved_value) == (3, {"status": "blocked", "other": 0})
    assert res.original_value == out.original_value and res.conflict_id == out.conflict_id
    with pytest.raises(CollabError) as exc:
        await engine.resolve("document", "d", out.conflict_id, {}, ANN, company_id=C)
    assert exc.value.code == ErrorCode.NOT_FOUND
    assert not (await engine.get("document", "d", company_id=C)).conflicts


async def test_manual_disjoint_stale_write_merges(engine: Engine) -> None:
    await doc(engine, strategy="manual", data={"a": 0, "b": 0})
    await engine.write("document", "d", Write(1, {"a": 1, "b": 0}, ANN), company_id=C)
    out = await engine.write("document", "d", Write(1, {"a": 0, "b": 1}, BOB), company_id=C)
    assert (out.status, out.data, out.conflicted_fields) == ("merged", {"a": 1, "b": 1}, ())


async def test_op_id_is_applied_once(engine: Engine) -> None:
    await doc(engine)
    first = await engine.write("document", "d", Write(0, {"n": 1}, ANN, op_id="k"), company_id=C)
    again = await engine.write("document", "d", Write(0, {"n": 1}, ANN, op_id="k"), company_id=C)
    assert (first.status, again.status, again.version) == ("applied", "duplicate", 1)
    assert (await engine.get("document", "d", company_id=C)).version == 1


async def test_concurrent_writers_are_serialized(engine: Engine) -> None:
    await doc(engine, text_fields=["log"])
    outs = await asyncio.gather(
        *(
            engine.write(
                "document", "d", Write(0, {"log": f"<{i}>", f"f{i}": i}, ANN), company_id=C
            )
            for i in range(40)
        )
    )
    assert sorted(o.version for o in outs) == list(range(1, 41))
    final = (await engine.get("document", "d", company_id=C)).data
    assert all(final[f"f{i}"] == i and final["log"].count(f"<{i}>") == 1 for i in range(40))


async def test_yjs_and_json_writers_share_one_document(engine: Engine) -> None:
    await doc(engine, text_fields=["notes"], data={"notes": "abc", "title": "t"})
    replica: Doc = Doc()
    step2 = await engine.sync(
        "document", "d", yjs.create_sync_step1_message(replica.get_state()), BOB, company_id=C
    )
    assert step2.reply is not None and step2.outcome is None
    replica.apply_update(yjs.parse(step2.reply).payload)
    root = replica.get("data", type=Map)
    assert ydoc.to_json(root) == {"notes": "abc", "title": "t"}
    sv = replica.get_state()
    with replica.transaction():
        root["notes"].insert(3, "def")
    res = await engine.sync(
        "document", "d", yjs.create_update_message(replica.get_update(sv)), BOB, company_id=C
    )
    assert res.outcome is not None and res.outcome.version == 2 and res.outcome.via_sync
    out = await engine.write(
        "document", "d", Write(2, {"notes": "abcdef!", "title": "T"}, ANN), company_id=C
    )
    replica.apply_update(out.update)
    assert ydoc.to_json(root) == out.data == {"notes": "abcdef!", "title": "T"}
    noop = await engine.sync(
        "document", "d", yjs.create_update_message(replica.get_update(sv)), BOB, company_id=C
    )
    assert noop.outcome is None, "an update already applied changes nothing"


async def test_bad_sync_messages(engine: Engine) -> None:
    await doc(engine, data={"a": 1})
    for bad in ("text", b"", b"\x01\x00\x00", b"\x00\x07\x00", b"\x00\x02\x05\xff\xff\xff\xff\xff"):
        with pytest.raises(CollabError) as exc:
            await engine.sync("document", "d", bad, ANN, company_id=C)
        assert exc.value.code == ErrorCode.INVALID_PAYLOAD
    view = await engine.get("document", "d", company_id=C)
    assert (view.version, view.data) == (1, {"a": 1})


async def test_yjs_update_breaking_limits_is_refused_and_rolled_back(engine: Engine) -> None:
    await doc(engine, data={"a": 1})
    replica: Doc = Doc()
    r = await engine.sync(
        "document", "d", yjs.create_sync_step1_message(b"\x00"), BOB, company_id=C
    )
    assert r.reply is not None
    replica.apply_update(yjs.parse(r.reply).payload)
    sv = replica.get_state()
    with replica.transaction():
        replica.get("data", type=Map)["big"] = "x" * 2_000_000
    with pytest.raises(CollabError) as exc:
        await engine.sync(
            "document", "d", yjs.create_update_message(replica.get_update(sv)), BOB, company_id=C
        )
    assert exc.value.code == ErrorCode.PAYLOAD_TOO_LARGE
    view = await engine.get("document", "d", company_id=C)
    assert (view.version, view.data) == (1, {"a": 1})


@pytest.mark.parametrize(
    ("limits", "insert", "refused"),
    [
        # A text past max_string (its UTF-8 length alone says so).
        (Limits(max_string=40), "y" * 41, True),
        # Within every limit, but near max_bytes for the unconverted estimate (6 bytes of
        # JSON a byte): the engine converts the text and checks exactly, and accepts.
        (Limits(max_bytes=300), "y" * 100, False),
        # Past max_bytes once converted.
        (Limits(max_bytes=300), "y" * 400, True),
    ],
)
async def test_yjs_text_edits_are_held_to_the_limits(
    make_store,
    limits: Limits,
    insert: str,
    refused: bool,  # type: ignore[no-untyped-def]
) -> None:
    """Text edits by Yjs are checked against the limits without converting the text when
    it is certainly within them, exactly otherwise; a refused update is rolled back."""
    async with Engine(make_store(), EngineConfig(limits=limits)) as e:
        await e.open("document", "d", company_id=C, text_fields=["t"])
        await e.write("document", "d", Write(0, {"t": "abc", "n": 1}, ANN), company_id=C)
        replica: Doc = Doc()
        r = await e.sync("document", "d", yjs.create_sync_step1_message(b"\x00"), BOB, company_id=C)
        assert r.reply is not None
        replica.apply_update(yjs.parse(r.reply).payload)
        text = replica.get("data", type=Map)["t"]
        sv = replica.get_state()
        text.insert(1, insert)
        message = yjs.create_update_message(replica.get_update(sv))
        if refused:
            with pytest.raises(CollabError) as exc:
                await e.sync("document", "d", message, BOB, company_id=C)
            assert exc.value.code == ErrorCode.PAYLOAD_TOO_LARGE
            view = await e.get("document", "d", company_id=C)
            assert (view.version, view.data) == (1, {"t": "abc", "n": 1})
        else:
            res = await e.sync("document", "d", message, BOB, company_id=C)
            assert res.outcome is not None and res.outcome.view()["t"] == "a" + insert + "bc"
            view = await e.get("document", "d", company_id=C)
            assert (view.version, view.data["t"]) == (2, "a" + insert + "bc")


async def test_restart_keeps_everything(make_store) -> None:  # type: ignore[no-untyped-def]
    async with Engine(make_store(), EngineConfig(history_limit=4)) as e:
        await doc(e, strategy="manual", text_fields=["notes"])
        for v in range(12):
            await e.write(
                "document",
                "d",
                Write(v, {"notes": f"v{v}", "n": v}, ANN, op_id=f"op{v}"),
                company_id=C,
            )
        c = await e.write("document", "d", Write(11, {"notes": "zz", "n": 0}, BOB), company_id=C)
        assert c.status == "conflict"
        before = await e.get("document", "d", company_id=C)
    async with Engine(make_store(), EngineConfig(history_limit=4)) as e:
        after = await e.get("document", "d", company_id=C)
        assert (after.version, after.data) == (before.version, before.data)
        assert [x.conflict_id for x in after.conflicts] == [c.conflict_id]
        dup = await e.write("document", "d", Write(3, {"n": 0}, ANN, op_id="op11"), company_id=C)
        assert dup.status == "duplicate"
        merged = await e.write(
            "document", "d", Write(10, {"notes": "v9", "n": 9, "x": 1}, ANN), company_id=C
        )
        assert merged.status == "merged"


async def test_compaction_bounds_the_log(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = MemoryStore()
    async with Engine(store, EngineConfig(history_limit=5)) as e:
        await doc(e, text_fields=["t"])
        text = ""
        texts = [""]
        for v in range(40):
            text = text[-20:] + chr(97 + v % 26)
            texts.append(text)
            await e.write("document", "d", Write(v, {"t": text}, ANN), company_id=C)
        await e.drain()
        stored = await store.load("document:d")
        assert stored is not None
        assert stored.checkpoint.version > 0 and len(stored.entries) <= 10
        view = await e.get("document", "d", company_id=C)
        assert view.data == {"t": text} and view.version == 40
        out = await e.write("document", "d", Write(36, {"t": "!" + texts[36]}, BOB), company_id=C)
        assert out.status == "merged" and out.data["t"] == "!" + text


async def test_repeated_stale_merges_by_the_same_authors_stay_consistent(engine: Engine) -> None:
    """Forks reuse an author's client id when its earlier operations are in the base; a Yjs
    replica following every update must still converge, and every insertion survive once."""
    await doc(engine, text_fields=["notes"], data={"notes": "0123456789"})
    replica: Doc = Doc()
    r = await engine.sync(
        "document", "d", yjs.create_sync_step1_message(b"\x00"), ANN, company_id=C
    )
    assert r.reply is not None
    replica.apply_update(yjs.parse(r.reply).payload)
    texts = {1: "0123456789"}
    version = 1
    for i in range(60):
        author = (ANN, BOB, EVE.__class__("u-cid", "Cid", C))[i % 3]
        base = max(1, version - (i % 3))
        text = texts[base]
        outside = [
            p for p in range(len(text) + 1) if text[:p].count("<") == text[:p].count(">")
        ]  # not inside a marker
        pos = outside[(i * 7) % len(outside)]
        out = await engine.write(
            "document",
            "d",
            Write(base, {"notes": text[:pos] + f"<{i}>" + text[pos:]}, author),
            company_id=C,
        )
        replica.apply_update(out.update)
        version = out.version
        texts[version] = out.data["notes"]
    final = (await engine.get("document", "d", company_id=C)).data
    assert ydoc.to_json(replica.get("data", type=Map)) == final
    assert all(final["notes"].count(f"<{i}>") == 1 for i in range(60))


async def test_compaction_when_the_floor_is_older_than_the_kept_anchors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stale writes build a state every 32 versions near the head and only the newest few are
    kept; the checkpoint's state at the history floor, further back, is built on the way and
    must not be pruned before it is used (it was: every compaction failed, the log grew)."""
    store = MemoryStore()
    async with Engine(store, EngineConfig(history_limit=200)) as e:
        await doc(e)
        data: dict[str, int] = {}
        version = 0
        for i in range(1, 460):
            data = {**data, f"k{i % 7}": i}
            out = await e.write(
                "document", "d", Write(max(version - 1, 0), data, ANN), company_id=C
            )
            version, data = out.version, out.data
        await e.drain()
        stored = await store.load("document:d")
        assert stored is not None
        assert stored.checkpoint.version > 0 and len(stored.entries) <= 400
        assert "compaction failed" not in caplog.text
        old = await e.write("document", "d", Write(version - 150, {"x": 1}, BOB), company_id=C)
        assert old.status == "merged" and old.data["x"] == 1
