"""From an engine :class:`~collab.model.Outcome` to the events the contract promises, to the
rooms it names (CONTRACT.md, "Server → client"). The one place these rules live:

- applied or merged write: ``document:updated`` (``resource:updated``) to the document's room,
  leaving the writer out iff it asked for an ack (it learned the outcome there);
- merged with conflicted fields: ``document:conflict`` to the writer's socket and
  ``conflict:resolved`` to the whole room;
- manual conflict (held, unapplied): ``document:conflict`` with its ``conflictId`` to the whole
  room, writer included; its later ``conflict:resolve``: ``conflict:resolved`` to the whole room
  plus ``document:updated`` by the rule above;
- duplicate: nothing (the ack says it);
- every applied change of a document, JSON writes included, to the document's Yjs replicas as
  ``document:sync`` (an update message), never back to the replica that sent it;
- ``document:updated`` for Yjs writes goes to the document's JSON members (CONTRACT.md: "JSON
  members of the room get document:updated for such writes"; a replica has the change as
  ``document:sync`` already) and to the replicas that wrote without an ack (a writer learns
  its outcome exactly once, in the ack or in the room's events), coalesced over
  ``sync_coalesce_ms``: a burst of keystrokes becomes one event carrying the latest state;
  the last write is never skipped, and a JSON write's own event (to the whole room)
  supersedes a pending one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from collab import yjs
from collab.model import Outcome
from collab.rooms import document_room
from gateway import logs
from gateway.wire import Call

if TYPE_CHECKING:
    from gateway.context import Gateway


def replica_room(doc_id: str) -> str:
    """The room of a document's Yjs replicas (sockets that sent ``document:sync`` step 1).

    Prefixed ``yjs:`` so that no document or resource id can spell it (``collab.rooms`` names
    start with ``company:``, ``user:``, ``document:`` or ``resource:``).
    """
    return "yjs:" + document_room("document", doc_id)


def json_room(doc_id: str) -> str:
    """The room of a document's members that are not Yjs replicas: entered with the document
    room at ``document:join``, left at sync step 1 (the socket becomes a replica) and at
    ``document:leave``. Prefixed ``json:``, as :func:`replica_room` is ``yjs:``, so it counts
    against no room limit and no id can spell it."""
    return "json:" + document_room("document", doc_id)


def _id_field(outcome: Outcome) -> str:
    return "documentId" if outcome.kind == "document" else "resourceId"


def conflict_payload(outcome: Outcome, *, resolved: bool) -> dict[str, Any]:
    """The seed's ``document:conflict`` (or, ``resolved``, ``conflict:resolved``) payload."""
    payload: dict[str, Any] = {
        _id_field(outcome): outcome.doc_id,
        "strategy": outcome.strategy,
        "conflictedFields": list(outcome.conflicted_fields),
        "originalValue": outcome.original_value,
        "incomingValue": outcome.incoming_value,
        "timestamp": outcome.timestamp,
        "version": outcome.version,
    }
    if outcome.conflict_id is not None:
        payload["conflictId"] = outcome.conflict_id
    if resolved:
        payload["resolvedValue"] = outcome.resolved_value
    return payload


def updated_payload(outcome: Outcome) -> dict[str, Any]:
    """The seed's ``document:updated`` payload (``resource:updated`` for resources)."""
    return {
        _id_field(outcome): outcome.doc_id,
        "version": outcome.version,
        "data": outcome.view(),
        "updatedBy": outcome.author.user_id,
        "updatedAt": outcome.timestamp,
    }


@dataclass(slots=True)
class _Pending:
    """A coalesced ``document:updated`` waiting for its window to end."""

    outcome: Outcome
    call: Call
    #: Replicas that wrote in the window without an ack: the event tells them the outcome.
    writers: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Broadcaster:
    """Emits what outcomes mean to the rooms that should hear it."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.window = gw.settings.sync_coalesce_ms / 1000
        self._pending: dict[str, _Pending] = {}

    async def outcome(self, outcome: Outcome, call: Call) -> None:
        """Tell the document's room what a write, a Yjs update or a resolution did."""
        if outcome.status == "duplicate":
            return
        gw = self.gw
        room = document_room(outcome.kind, outcome.doc_id)
        if outcome.status == "conflict":
            self._count_conflict(outcome, call)
            await gw.emit("document:conflict", conflict_payload(outcome, resolved=False), to=room)
            return
        if outcome.conflict_id is not None:
            await gw.emit("conflict:resolved", conflict_payload(outcome, resolved=True), to=room)
        elif outcome.conflicted_fields:
            self._count_conflict(outcome, call)
            await gw.emit(
                "document:conflict", conflict_payload(outcome, resolved=False), to=call.sid
            )
            await gw.emit("conflict:resolved", conflict_payload(outcome, resolved=True), to=room)
        if outcome.kind == "document" and outcome.update:
            message = yjs.create_update_message(outcome.update)
            await gw.emit(
                "document:sync",
                {"documentId": outcome.doc_id, "message": message},
                to=replica_room(outcome.doc_id),
                skip_sid=call.sid if outcome.via_sync else None,
            )
        if outcome.via_sync and self.window > 0:
            self._coalesce(outcome, call)
        else:
            writers = {call.sid} if outcome.via_sync and not call.acked else set()
            await self._updated(outcome, call, writers)

    def _count_conflict(self, outcome: Outcome, call: Call) -> None:
        self.gw.metrics.conflicts.labels(strategy=outcome.strategy).inc()
        logs.event(
            "conflict",
            kind=outcome.kind,
            id=outcome.doc_id,
            strategy=outcome.strategy,
            status=outcome.status,
            fields=list(outcome.conflicted_fields),
            conflictId=outcome.conflict_id,
            userId=call.identity.user_id,
            companyId=call.identity.company_id,
            version=outcome.version,
        )

    async def _updated(
        self, outcome: Outcome, call: Call, writers: set[str] | frozenset[str] = frozenset()
    ) -> None:
        pending = self._pending.get(outcome.key)
        if pending is not None and pending.outcome.version <= outcome.version:
            self._drop(outcome.key)
        event = "document:updated" if outcome.kind == "document" else "resource:updated"
        if outcome.via_sync:
            room = json_room(outcome.doc_id)
            members = self.gw.may_reach(room)
            if not members and not writers:
                return  # nobody to tell: the JSON view is not even built
            payload = updated_payload(outcome)
            if members:
                await self.gw.emit(event, payload, to=room)
            for sid in sorted(writers):
                await self.gw.emit(event, payload, to=sid)
        else:
            payload = updated_payload(outcome)
            room = document_room(outcome.kind, outcome.doc_id)
            skip = call.sid if call.acked else None
            await self.gw.emit(event, payload, to=room, skip_sid=skip)
        self.gw.metrics.delivery_latency.observe(time.perf_counter() - call.received_at)

    def _coalesce(self, outcome: Outcome, call: Call) -> None:
        pending = self._pending.get(outcome.key)
        if pending is None:
            pending = _Pending(outcome, call)
            self._pending[outcome.key] = pending
            pending.task = asyncio.create_task(self._flush_later(outcome.key, pending))
        elif outcome.version >= pending.outcome.version:
            pending.outcome, pending.call = outcome, call
        if not call.acked:
            pending.writers.add(call.sid)

    async def _flush_later(self, key: str, pending: _Pending) -> None:
        await asyncio.sleep(self.window)
        if self._pending.get(key) is pending:
            del self._pending[key]
            await self._updated(pending.outcome, pending.call, pending.writers)

    def _drop(self, key: str) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None and pending.task is not None:
            pending.task.cancel()

    def close(self) -> None:
        """Cancel pending coalesced events (the gateway is stopping)."""
        for key in list(self._pending):
            self._drop(key)
