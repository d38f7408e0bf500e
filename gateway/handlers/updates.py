"""``document:update`` and ``resource:update``: a JSON write, versioned, resolved by the
document's strategy; the ack and the room's events say what happened (``gateway.broadcast``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from collab.errors import invalid
from collab.model import Kind, Write
from gateway.wire import Ack, Call, on

if TYPE_CHECKING:
    from gateway.context import Gateway


@dataclass(frozen=True, slots=True)
class DocumentUpdate:
    document_id: str
    version: int
    data: dict[str, Any]
    op_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceUpdate:
    resource_id: str
    version: int
    data: dict[str, Any]
    #: ISO-8601 with an offset (``new Date().toISOString()``) or epoch milliseconds; orders
    #: last-write-wins. Absent: the arrival time.
    timestamp: float | str | None = None
    op_id: str | None = None


@on("document:update", DocumentUpdate)
async def document_update(gw: Gateway, call: Call, p: DocumentUpdate) -> Ack:
    write = Write(p.version, p.data, call.identity.author, p.op_id)
    return await apply_write(gw, call, "document", p.document_id, write)


@on("resource:update", ResourceUpdate)
async def resource_update(gw: Gateway, call: Call, p: ResourceUpdate) -> Ack:
    write = Write(p.version, p.data, call.identity.author, p.op_id, timestamp_ms(p.timestamp))
    return await apply_write(gw, call, "resource", p.resource_id, write)


async def apply_write(gw: Gateway, call: Call, kind: Kind, doc_id: str, write: Write) -> Ack:
    """Write to a joined document, broadcast the outcome, and return the ack's members."""
    gw.require_joined(call, kind, doc_id)
    started = time.perf_counter()
    outcome = await gw.engine.write(
        kind, doc_id, write, company_id=call.identity.company_id, ordered=call.ordered
    )
    if outcome.status in ("merged", "conflict"):
        elapsed = time.perf_counter() - started
        gw.metrics.merge_latency.labels(strategy=outcome.strategy).observe(elapsed)
    await gw.broadcaster.outcome(outcome, call)
    ack: Ack = {"version": outcome.version, "status": outcome.status, "data": outcome.view()}
    if outcome.conflict_id is not None:
        ack["conflictId"] = outcome.conflict_id
    if outcome.conflicted_fields:
        ack["conflictedFields"] = list(outcome.conflicted_fields)
    return ack


def timestamp_ms(value: float | str | None) -> float | None:
    """A client timestamp in epoch milliseconds: an ISO-8601 date-time with a UTC offset (as
    JS ``toISOString()`` writes it), or a number of milliseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise invalid(
                "timestamp must be an ISO-8601 date-time like 2024-01-15T10:30:00.000Z "
                "or epoch milliseconds",
                field="timestamp",
            ) from None
        if parsed.tzinfo is None:
            raise invalid("timestamp must have a UTC offset (…Z or ±hh:mm)", field="timestamp")
        return parsed.timestamp() * 1000
    if not math.isfinite(value):
        raise invalid("timestamp must be a finite number", field="timestamp")
    return float(value)
