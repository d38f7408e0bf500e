"""``document:join`` / ``document:leave`` and ``resource:join`` / ``resource:leave``.

Joining opens the document (creating an unknown id empty at version 0, owned by the caller's
company; ``forbidden`` for another company's) and enters its room; the ack carries the current
state, its strategy and text fields, and the pending manual conflicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from collab.model import Kind
from collab.rooms import document_room
from gateway.broadcast import replica_room
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
    return await _join(gw, call, "document", p.document_id, p.strategy, p.text_fields)


@on("resource:join", JoinResource)
async def resource_join(gw: Gateway, call: Call, p: JoinResource) -> Ack:
    return await _join(gw, call, "resource", p.resource_id, p.strategy, p.text_fields)


@on("document:leave", DocumentRef)
async def document_leave(gw: Gateway, call: Call, p: DocumentRef) -> Ack:
    await gw.sio.leave_room(call.sid, document_room("document", p.document_id))
    await gw.sio.leave_room(call.sid, replica_room(p.document_id))
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
    await gw.sio.enter_room(call.sid, room)
    try:
        view = await gw.engine.get(kind, doc_id, company_id=company)
    except BaseException:
        await gw.sio.leave_room(call.sid, room)
        raise
    return {
        ("documentId" if kind == "document" else "resourceId"): doc_id,
        "version": view.version,
        "data": view.data,
        "strategy": view.meta.strategy,
        "textFields": list(view.meta.text_fields),
        "conflicts": [c.to_json() for c in view.conflicts],
    }
