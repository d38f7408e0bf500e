"""``document:join`` / ``document:leave`` and ``resource:join`` / ``resource:leave``.

Joining opens the document (creating an unknown id empty at version 0, owned by the caller's
company; ``forbidden`` for another company's) and enters its room; the ack carries the current
state, its strategy and text fields, and the pending manual conflicts.

Extension: a client rejoining with the ``version`` it holds also gets ``missed``, who wrote
each version since (``[{version, updatedBy, updatedAt, status}]``, oldest first), and
``historyGone``: true when the retained history no longer reaches back to that version (or the
version is ahead of the document's); the client then simply takes ``data``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collab.errors import invalid
from collab.model import Kind, iso
from collab.rooms import document_room
from gateway.broadcast import json_room, replica_room
from gateway.wire import Ack, Call, on

if TYPE_CHECKING:
    from gateway.context import Gateway


@dataclass(frozen=True, slots=True)
class JoinDocument:
    document_id: str
    #: The version the client holds (accepted for the contract; the ack has the current one).
    version: int | None = None
    strategy: str | None = None
    text_fields: list[str] | None = None


@dataclass(frozen=True, slots=True)
class JoinResource:
    resource_id: str
    version: int | None = None
    strategy: str | None = None
    text_fields: list[str] | None = None


@dataclass(frozen=True, slots=True)
class DocumentRef:
    document_id: str


@dataclass(frozen=True, slots=True)
class ResourceRef:
    resource_id: str


@on("document:join", JoinDocument)
async def document_join(gw: Gateway, call: Call, p: JoinDocument) -> Ack:
    check_held_version(p.version)  # refused before anything is created or joined
    ack = await _join(gw, call, "document", p.document_id, p.strategy, p.text_fields)
    return ack | await missed_since(gw, call, "document", p.document_id, p.version, ack)


@on("resource:join", JoinResource)
async def resource_join(gw: Gateway, call: Call, p: JoinResource) -> Ack:
    check_held_version(p.version)
    ack = await _join(gw, call, "resource", p.resource_id, p.strategy, p.text_fields)
    return ack | await missed_since(gw, call, "resource", p.resource_id, p.version, ack)


@on("document:leave", DocumentRef)
async def document_leave(gw: Gateway, call: Call, p: DocumentRef) -> Ack:
    await gw.sio.leave_room(call.sid, document_room("document", p.document_id))
    await gw.sio.leave_room(call.sid, replica_room(p.document_id))
    await gw.sio.leave_room(call.sid, json_room(p.document_id))
    return {}


@on("resource:leave", ResourceRef)
async def resource_leave(gw: Gateway, call: Call, p: ResourceRef) -> Ack:
    await gw.sio.leave_room(call.sid, document_room("resource", p.resource_id))
    return {}


async def _join(
    gw: Gateway,
    call: Call,
    kind: Kind,
    doc_id: str,
    strategy: str | None,
    text_fields: list[str] | None,
) -> Ack:
    company = call.identity.company_id
    # Documents joined per connection (gateway.limits): refused before anything is created.
    gw.guard.check_rooms(call.sid, document_room(kind, doc_id))
    # Open first: it creates the document or refuses another company's before the room is
    # entered. The state is read again after entering, so no write falls between the two.
    await gw.engine.open(
        kind,
        doc_id,
        company_id=company,
        author=call.identity.author,
        strategy=strategy,
        text_fields=text_fields,
    )
    room = document_room(kind, doc_id)
    rooms = [room]
    # A JSON member until it syncs as a Yjs replica (gateway.broadcast.json_room); rejoining
    # does not make a replica a JSON member again.
    if kind == "document" and not gw.sio.in_room(call.sid, replica_room(doc_id)):
        rooms.append(json_room(doc_id))
    for r in rooms:
        await gw.sio.enter_room(call.sid, r)
    try:
        view = await gw.engine.get(kind, doc_id, company_id=company)
    except BaseException:
        for r in rooms:
            await gw.sio.leave_room(call.sid, r)
        raise
    return {
        ("documentId" if kind == "document" else "resourceId"): doc_id,
        "version": view.version,
        "data": view.data,
        "strategy": view.meta.strategy,
        "textFields": list(view.meta.text_fields),
        "conflicts": [c.to_json() for c in view.conflicts],
    }


#: Reads of the history while the versions just written are still being committed.
_CATCH_UP_TRIES = 5


async def missed_since(
    gw: Gateway, call: Call, kind: Kind, doc_id: str, version: int | None, ack: Ack
) -> Ack:
    """The join ack's ``missed`` and ``historyGone`` for a client holding ``version`` (none
    when it sent no version). ``missed`` covers exactly ``version + 1 .. ack["version"]``,
    or is empty with ``historyGone`` when that run is no longer retained."""
    if version is None:
        return {}
    current: int = ack["version"]
    if version >= current:
        return {"missed": [], "historyGone": version > current}
    company = call.identity.company_id
    for attempt in range(_CATCH_UP_TRIES):
        rows = await gw.engine.changes_since(kind, doc_id, version, company_id=company)
        rows = [r for r in rows if r["version"] <= current]
        if not rows or rows[0]["version"] != version + 1:
            break  # compacted away: older than the retained history
        if rows[-1]["version"] == current:
            return {"missed": [_change(r) for r in rows], "historyGone": False}
        await asyncio.sleep(0.005 * (attempt + 1))  # the latest appends are being committed
    return {"missed": [], "historyGone": True}


def check_held_version(version: int | None) -> None:
    """Refuse a negative ``version`` (``invalid_payload``)."""
    if version is not None and version < 0:
        raise invalid("version must be a non-negative integer", field="version")


def _change(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": row["version"],
        "updatedBy": row.get("by"),
        "updatedAt": iso(row["at"]) if row.get("at") is not None else None,
        "status": row.get("status"),
    }
