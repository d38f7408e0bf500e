"""Real editing traces through the engine: the concurrent ``friendsforever`` trace (two
authors, 2,258 merges) replayed as Yjs updates over the CRDT-native path must end exactly at
its recorded final text."""

from __future__ import annotations

import pytest
from pycrdt import Doc

from collab import traces, yjs
from collab.engine import Engine
from collab.model import Author
from collab.store.memory import MemoryStore

AUTHOR = Author("tracer", "Tracer", "acme")


def load(name: str) -> dict:  # type: ignore[type-arg]
    if not traces.trace_path(name).exists():
        pytest.skip(
            f"editing trace {name} not found at {traces.TRACES_DIR} (the shared data "
            "folder is not part of a fresh clone; set COLLAB_TRACES to its folder)"
        )
    return traces.load_trace(name)


async def test_friendsforever_replays_to_end_content() -> None:
    trace = load("friendsforever")
    merges = sum(1 for t in trace["txns"] if len(t["parents"]) > 1)
    assert merges == 2258
    async with Engine(MemoryStore()) as engine:
        await engine.open("document", "ff", company_id="acme", text_fields=["content"])
        r = await engine.sync(
            "document",
            "ff",
            yjs.create_sync_step1_message(Doc().get_state()),
            AUTHOR,
            company_id="acme",
        )
        assert r.reply is not None

        async def send(message: bytes) -> None:
            res = await engine.sync("document", "ff", message, AUTHOR, company_id="acme")
            assert res.outcome is not None

        await traces.replay_concurrent(trace, yjs.parse(r.reply).payload, "content", send)
        view = await engine.get("document", "ff", company_id="acme")
    assert view.data["content"] == trace["endContent"]
    assert view.version == len(trace["txns"])
