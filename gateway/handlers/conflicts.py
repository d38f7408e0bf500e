"""``conflict:resolve``: settle a pending manual conflict with the whole resolved document.

The whole room hears ``conflict:resolved`` (``resolvedValue`` the resolved document, with its
new ``version``), and ``document:updated`` by the sender rule (``gateway.broadcast``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collab.errors import invalid
from collab.model import Kind
from gateway.wire import Ack, Call, on

if TYPE_CHECKING:
    from gateway.context import Gateway


@dataclass(frozen=True, slots=True)
class ConflictResolve:
    conflict_id: str
    resolved_value: Any
    document_id: str | None = None
    resource_id: str | None = None


@on("conflict:resolve", ConflictResolve)
async def conflict_resolve(gw: Gateway, call: Call, p: ConflictResolve) -> Ack:
    kind: Kind
    if p.document_id is not None and p.resource_id is None:
        kind, doc_id = "document", p.document_id
    elif p.resource_id is not None and p.document_id is None:
        kind, doc_id = "resource", p.resource_id
    else:
        raise invalid("give exactly one of documentId or resourceId", field="documentId")
    gw.require_joined(call, kind, doc_id)
    outcome = await gw.engine.resolve(
        kind,
        doc_id,
        p.conflict_id,
        p.resolved_value,
        call.identity.author,
        company_id=call.identity.company_id,
        ordered=call.ordered,
    )
    await gw.broadcaster.outcome(outcome, call)
    return {"version": outcome.version}
