"""Replaying real editing traces through the engine (tests and benchmarks).

The traces are Joseph Gentle's public ``editing-traces`` (CC BY 4.0), read from where the
project's shared data lives; they are never copied into the repository. Two shapes:

- sequential (``automerge-paper``): ``{startContent, endContent, txns: [{patches}]}``;
- concurrent (``friendsforever``): ``{endContent, numAgents, txns: [{parents, agent,
  patches}]}`` where each transaction edits the state after its ``parents``.

Patch positions are Unicode code points; pycrdt's ``Text`` wants UTF-8 byte offsets.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map, Text

from collab import yjs

#: Where the traces are looked for: ``$COLLAB_TRACES`` or ``../shared/data/editing-traces``
#: beside the repository.
TRACES_DIR = Path(
    os.environ.get(
        "COLLAB_TRACES",
        Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "editing-traces",
    )
)


def trace_path(name: str) -> Path:
    return TRACES_DIR / f"{name}.json.gz"


def load_trace(name: str) -> dict[str, Any]:
    """Load ``<name>.json.gz``; ``FileNotFoundError`` if the shared data is absent."""
    with gzip.open(trace_path(name), "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def apply_patches(text: str, patches: list[list[Any]]) -> str:
    """A sequential trace's patches applied to a plain string (the reference)."""
    for pos, delete, insert in patches:
        text = text[:pos] + insert + text[pos + delete :]
    return text


def edit_text(ytext: Text, patches: list[list[Any]]) -> None:
    """Apply code-point patches to a ``Y.Text`` (inside the caller's transaction)."""
    current = str(ytext)
    for pos, delete, insert in patches:
        lo = len(current[:pos].encode("utf-8"))
        if delete:
            hi = lo + len(current[pos : pos + delete].encode("utf-8"))
            del ytext[lo:hi]
        if insert:
            ytext.insert(lo, insert)
        current = current[:pos] + insert + current[pos + delete :]


def sequential_texts(trace: dict[str, Any]) -> Iterator[str]:
    """Every intermediate text of a sequential trace, keystroke by keystroke."""
    text: str = trace.get("startContent", "")
    for txn in trace["txns"]:
        text = apply_patches(text, txn["patches"])
        yield text


AGENT_CLIENT_BASE = 1_000_000

SendUpdate = Callable[[bytes], Awaitable[Any]]


def concurrent_edits(
    trace: dict[str, Any],
    initial_state: bytes,
    field: str,
    updates: list[bytes],
    client_base: int = AGENT_CLIENT_BASE,
) -> Iterator[tuple[Doc[Any], Text, list[list[Any]]]]:
    """Each transaction of a concurrent trace, in order, as ``(replica, text, patches)``: its
    agent's replica (one per agent) holding exactly the transaction's causal history, brought
    in as the Yjs updates those transactions made, the ``field`` text to edit there, and the
    patches. The caller edits and appends the transaction's update to ``updates`` before
    asking for the next.

    Concurrent insertions at one position are ordered by client id; the trace's final text
    assumes agents ordered by number, so agent ``n`` gets ``client_base + n`` (the default
    offset stays clear of the small ids a test might use).
    """
    txns = trace["txns"]
    agents: list[Doc[Any]] = []
    for agent in range(trace["numAgents"]):
        d: Doc[Any] = Doc(client_id=client_base + agent)
        d.apply_update(initial_state)
        agents.append(d)
    known: list[set[int]] = [set() for _ in agents]
    for i, txn in enumerate(txns):
        a = txn["agent"]
        doc, seen = agents[a], known[a]
        needed: list[int] = []
        stack = [p for p in txn["parents"] if p not in seen]
        while stack:
            p = stack.pop()
            if p in seen:
                continue
            seen.add(p)
            needed.append(p)
            stack.extend(q for q in txns[p]["parents"] if q not in seen)
        for p in sorted(needed):
            doc.apply_update(updates[p])
        text = doc.get("data", type=Map)[field]
        assert isinstance(text, Text)
        yield doc, text, txn["patches"]
        if len(updates) != i + 1:
            raise RuntimeError(f"transaction {i}: its update was not recorded")
        seen.add(i)


async def replay_concurrent(
    trace: dict[str, Any], initial_state: bytes, field: str, send: SendUpdate
) -> list[bytes]:
    """Replay a concurrent trace with one Yjs replica per agent (:func:`concurrent_edits`):
    each agent edits its replica and sends its own update message through ``send`` — as a
    real Yjs client editing offline and syncing would. Returns every transaction's update.
    """
    updates: list[bytes] = []
    for doc, text, patches in concurrent_edits(trace, initial_state, field, updates):
        sv = doc.get_state()
        with doc.transaction():
            edit_text(text, patches)
        update = doc.get_update(sv)
        updates.append(update)
        await send(yjs.create_update_message(update))
    return updates
