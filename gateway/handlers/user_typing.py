"""``user:typing``: relayed to the document's room (never back to its sender) as the seed's
``{userId, userName, resourceId, resourceType}``, at most once per ``typing_throttle_ms`` for
each user and document; a throttled call still succeeds (``{ok: true, throttled: true}``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collab.rooms import document_room
from gateway.handlers.rooms import DocumentRef
from gateway.wire import Ack, Call, on

if TYPE_CHECKING:
    from gateway.context import Gateway


@on("user:typing", DocumentRef)
async def user_typing(gw: Gateway, call: Call, p: DocumentRef) -> Ack:
    gw.require_joined(call, "document", p.document_id)
    me = call.identity
    if not gw.typing.allow((me.company_id, me.user_id, p.document_id)):
        return {"throttled": True}
    payload = {
        "userId": me.user_id,
        "userName": me.display_name,
        "resourceId": p.document_id,
        "resourceType": "document",
    }
    room = document_room("document", p.document_id)
    await gw.emit("user:typing", payload, to=room, skip_sid=call.sid)
    return {}
