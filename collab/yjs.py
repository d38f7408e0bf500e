"""The y-protocols sync messages a Yjs client exchanges, as bytes.

Exactly what a y-websocket server sends and receives: message type 0 (sync), then a sync
sub-type (0 step 1 with a state vector, 1 step 2 with an update, 2 update), then the payload as
a length-prefixed byte string. Parsing refuses anything else with ``invalid_payload``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from pycrdt import YMessageType, create_update_message, read_message
from pycrdt._sync import create_sync_step1_message, create_sync_step2_message

from collab.errors import invalid

__all__ = [
    "SyncMessage",
    "SyncType",
    "create_sync_step1_message",
    "create_sync_step2_message",
    "create_update_message",
    "parse",
]


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True, slots=True)
class SyncMessage:
    type: SyncType
    payload: bytes


def parse(message: object) -> SyncMessage:
    """Decode one sync message, refusing what is not one."""
    if isinstance(message, bytearray | memoryview):
        message = bytes(message)
    if not isinstance(message, bytes):
        raise invalid("message must be binary (a y-protocols sync message)")
    if len(message) < 3:
        raise invalid("message too short for a y-protocols sync message")
    if message[0] != YMessageType.SYNC:
        raise invalid(f"only sync messages (type 0) are accepted, got type {message[0]}")
    if message[1] not in (0, 1, 2):
        raise invalid(f"unknown sync message sub-type {message[1]}")
    try:
        payload = read_message(message[2:])
    except Exception:
        raise invalid("malformed y-protocols message") from None
    return SyncMessage(SyncType(message[1]), payload)
