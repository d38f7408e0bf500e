"""A state machine drives the engine on a real SQLite file with random writes, stale bases,
op replays, manual conflicts and their resolution, Yjs updates, and restarts; after every step
the engine agrees with a simple model of what must hold."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pycrdt import Doc, Map, Text

from collab import yjs
from collab.engine import Engine, EngineConfig
from collab.errors import CollabError
from collab.model import Author, Write
from collab.store.sqlite import SQLiteStore

C = "acme"
USERS = [Author(f"u{i}", f"U{i}", C) for i in range(3)]
DOCS = {"m": "merge", "l": "last-write-wins", "x": "manual"}


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "machine.db"
        self.engine = self._start()
        self.version = dict.fromkeys(DOCS, 0)
        self.applied_ops: dict[tuple[str, str], int] = {}
        self.acked: dict[str, dict[str, Any]] = {d: {"t": ""} for d in DOCS}
        self.pending: dict[str, list[str]] = {d: [] for d in DOCS}
        self.counter = 0
        for d, strategy in DOCS.items():
            self.run(
                self.engine.open("document", d, company_id=C, strategy=strategy, text_fields=["t"])
            )

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _start(self) -> Engine:
        e = Engine(SQLiteStore(self.path), EngineConfig(history_limit=6))
        self.loop.run_until_complete(e.start())
        return e

    def teardown(self) -> None:
        self.run(self.engine.stop())
        self.loop.close()
        self.dir.cleanup()

    @rule(
        d=st.sampled_from(sorted(DOCS)),
        behind=st.integers(0, 8),
        user=st.integers(0, 2),
        field=st.sampled_from(["a", "b", "t"]),
        op=st.sampled_from([None, "p", "q", "r"]),
    )
    def write(self, d: str, behind: int, user: int, field: str, op: str | None) -> None:
        self.counter += 1
        base = max(0, self.version[d] - behind)
        data = dict(self.acked[d])
        data[field] = f"{field}{self.counter}" if field != "t" else data["t"] + f"<{self.counter}>"
        try:
            out = self.run(
                self.engine.write(
                    "document", d, Write(base, data, USERS[user], op_id=op), company_id=C
                )
            )
        except CollabError as exc:
            assert exc.code in ("history_gone", "conflict_pending"), exc
            return
        if out.status in ("applied", "merged"):
            assert out.version == self.version[d] + 1
            assert op is None or (d, op) not in self.applied_ops
            self.version[d] = out.version
            if op:
                self.applied_ops[(d, op)] = out.version
            if out.status == "applied" and field == "t":
                assert f"<{self.counter}>" in out.data["t"]
        elif out.status == "duplicate":
            assert op is not None
        else:
            assert out.status == "conflict" and DOCS[d] == "manual"
            self.pending[d].append(out.conflict_id)
        self.acked[d] = out.data

    @precondition(lambda self: any(self.pending.values()))
    @rule(value=st.integers(0, 9))
    def resolve(self, value: int) -> None:
        d = next(k for k, v in self.pending.items() if v)
        cid = self.pending[d].pop(0)
        out = self.run(
            self.engine.resolve("document", d, cid, {"t": "r", "a": value}, USERS[0], company_id=C)
        )
        assert out.version == self.version[d] + 1
        self.version[d] = out.version
        self.acked[d] = out.data

    @rule(d=st.sampled_from(sorted(DOCS)), text=st.text(alphabet="yz", min_size=1, max_size=3))
    def yjs_edit(self, d: str, text: str) -> None:
        replica: Doc = Doc()
        r = self.run(
            self.engine.sync(
                "document", d, yjs.create_sync_step1_message(b"\x00"), USERS[1], company_id=C
            )
        )
        replica.apply_update(yjs.parse(r.reply).payload)
        root = replica.get("data", type=Map)
        sv = replica.get_state()
        with replica.transaction():
            t = root["t"]
            assert isinstance(t, Text)
            t.insert(0, text)
        res = self.run(
            self.engine.sync(
                "document",
                d,
                yjs.create_update_message(replica.get_update(sv)),
                USERS[1],
                company_id=C,
            )
        )
        assert res.outcome is not None and res.outcome.version == self.version[d] + 1
        self.version[d] = res.outcome.version
        self.acked[d] = res.outcome.view()

    @rule()
    def restart(self) -> None:
        self.run(self.engine.stop())
        self.engine = self._start()

    @invariant()
    def agrees_with_model(self) -> None:
        for d in DOCS:
            view = self.run(self.engine.get("document", d, company_id=C))
            assert view.version == self.version[d]
            assert view.data == self.acked[d]
            assert sorted(c.conflict_id for c in view.conflicts) == sorted(self.pending[d])


EngineMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase
