"""``collab-gateway history``: a document's versions read straight from a SQLite store, while
a gateway is using the file and after it stopped (the command runs as a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text, create_sync_message, create_update_message, handle_sync_message

from gateway.client import CollabClient
from tests.gateway.conftest import ServerFactory


async def history(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "history",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def table_rows(out: str) -> list[list[str]]:
    """The table's data rows, split on runs of two or more spaces."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("version"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append([cell.strip() for cell in line.split("  ") if cell.strip()])
    return rows


async def yjs_edit(client: CollabClient, doc_id: str, text: str) -> None:
    """Append to the notes text as a Yjs replica would (sync step 1/2, then an update)."""
    doc: Doc[Any] = Doc()
    reply = await client.sync(doc_id, create_sync_message(doc))
    assert reply is not None
    handle_sync_message(reply[1:], doc)
    root = doc.get("data", type=Map)
    state = doc.get_state()
    notes = root["notes"]
    assert isinstance(notes, Text)
    notes += text
    assert await client.sync(doc_id, create_update_message(doc.get_update(state))) is None


async def test_history_of_every_kind_of_write(make_server: ServerFactory, tmp_path: Path) -> None:
    db = tmp_path / "collab.db"
    server = await make_server(store=str(db))
    ann = CollabClient(server.url, server.token("ann", "acme", name="Ann"))
    bob = CollabClient(server.url, server.token("bob", "acme", name="Bob"))
    await ann.connect()
    await bob.connect()
    try:
        await ann.join("rfi-9", strategy="manual", text_fields=["notes"])
        await bob.join("rfi-9")
        await ann.update("rfi-9", 0, {"title": "Pour", "notes": ""}, op_id="op-ann-1")
        held = await bob.update("rfi-9", 0, {"title": "Pump", "notes": ""}, op_id="op-bob-1")
        assert held.status == "conflict" and held.conflict_id

        # the gateway is running and holds the file: the command reads it anyway (WAL)
        code, out, err = await history("rfi-9", "--store", str(db))
        assert code == 0, err
        assert "strategy manual, text fields: notes" in out
        assert [r[0] for r in table_rows(out)] == ["1"]
        assert "pending conflicts (1):" in out
        assert f"{held.conflict_id}  by Bob (bob)" in out and "from v0: title" in out

        await ann.resolve("rfi-9", held.conflict_id, {"title": "Pump", "notes": ""})
        await yjs_edit(bob, "rfi-9", "Slump 120 mm")
        merged = await ann.update(
            "rfi-9", 1, {"title": "Pour", "notes": "", "status": "open"}, op_id="op-ann-2"
        )
        assert (merged.status, merged.version) == ("merged", 4)
    finally:
        await ann.close()
        await bob.close()
        await server.close()

    # the gateway is stopped
    code, out, err = await history("rfi-9", "--store", str(db))
    assert code == 0, err
    assert out.startswith("document 'rfi-9' of company 'acme': version 4, strategy manual")
    header = out.splitlines()[3].split()
    assert header == [
        "version",
        "when",
        "(UTC)",
        "who",
        "via",
        "status",
        "base",
        "conflicted",
        "opId",
    ]
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    # version, when, who, via, status, base, conflicted, opId
    assert rows[0][2:] == ["Ann (ann)", "json", "applied", "0", "-", "op-ann-1"]
    assert rows[1][2:] == ["Ann (ann)", "resolve", "resolved", "1", "title", "op-bob-1"]
    assert rows[2][2:] == ["Bob (bob)", "yjs", "applied", "2", "-", "-"]
    assert rows[3][2:] == ["Ann (ann)", "json", "merged", "1", "-", "op-ann-2"]
    assert rows[0][1][:4].isdigit() and len(rows[0][1]) == len("2024-01-15 10:30:00")
    assert "pending conflicts" not in out

    code, out, _ = await history("rfi-9", "--store", str(db), "--json", "--limit", "2")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["version"], r["via"], r["by"]) for r in lines] == [
        (3, "yjs", "bob"),
        (4, "json", "ann"),
    ]
    assert "clocks" not in lines[0]

    # COLLAB_STORE works as for the gateway
    env_code, env_out, _ = await _with_env({"COLLAB_STORE": str(db)}, "rfi-9", "--limit", "1")
    assert env_code == 0 and [r[0] for r in table_rows(env_out)] == ["4"]


async def _with_env(extra: dict[str, str], *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")} | extra
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "history", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_history_refusals(make_server: ServerFactory, tmp_path: Path) -> None:
    db = tmp_path / "collab.db"
    server = await make_server(store=str(db))
    async with CollabClient(server.url, server.token("ann", "acme")) as ann:
        await ann.join("empty-doc")
    await server.close()

    code, out, _ = await history("empty-doc", "--store", str(db))
    assert code == 0 and "no versions written yet" in out

    code, _, err = await history("nope", "--store", str(db))
    assert code == 1 and "no document 'nope'" in err
    code, _, err = await history("empty-doc", "--kind", "resource", "--store", str(db))
    assert code == 1 and "no resource 'empty-doc'" in err

    missing = tmp_path / "missing.db"
    code, _, err = await history("x", "--store", str(missing))
    assert code == 2 and "no store file" in err
    assert not missing.exists()  # not created by looking
