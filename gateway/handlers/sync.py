"""``document:sync``: y-protocols sync messages from a Yjs replica of a joined document.

Step 1 (the replica's state vector) is answered with step 2 (what it lacks): in the ack when
asked for, otherwise as a ``document:sync`` event to that socket. The socket then belongs to
the document's replica room and receives every later change as an update message; it enters
that room *before* the engine computes step 2, so no change falls between the two (a change
in both is harmless: Yjs updates are idempotent). It leaves the document's JSON members
(``gateway.broadcast.json_room``): Yjs writes' ``document:updated`` no longer come to it,
JSON writes' still do. Updates and step 2 apply as writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from collab import yjs
from gateway.broadcast import json_room, replica_room
from gateway.wire import Ack, Call, on

if TYPE_CHECKING:
    from gateway.context import Gateway


@dataclass(frozen=True, slots=True)
class SyncMessage:
    document_id: str
    message: bytes


@on("document:sync", SyncMessage)
async def document_sync(gw: Gateway, call: Call, p: SyncMessage) -> Ack:
    gw.require_joined(call, "document", p.document_id)
    if yjs.parse(p.message).type == yjs.SyncType.STEP1:
        await gw.sio.enter_room(call.sid, replica_room(p.document_id))
        await gw.sio.leave_room(call.sid, json_room(p.document_id))
    result = await gw.engine.sync(
        "document",
        p.document_id,
        p.message,
        call.identity.author,
        company_id=call.identity.company_id,
        ordered=call.ordered,
    )
    ack: Ack = {}
    if result.reply is not None:
        if call.acked:
            ack["message"] = result.reply
        else:
            reply = {"documentId": p.document_id, "message": result.reply}
            await gw.emit("document:sync", reply, to=call.sid)
    if result.outcome is not None:
        await gw.broadcaster.outcome(result.outcome, call)
        ack.update(version=result.outcome.version, status=result.outcome.status)
    return ack
