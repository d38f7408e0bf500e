"""Who is online: connections counted per user across every node, so that ``user:online`` goes
out once at a user's first connection anywhere and ``user:offline`` once after the last one
closes (tabs, devices and nodes counted), even when a node dies with its connections.

- :class:`Presence` is the Protocol the gateway uses.
- :class:`NodePresence` is the transport-agnostic logic of one node: it mirrors the node's own
  connections, keeps the node alive with :meth:`~NodePresence.heartbeat`, reaps dead nodes, and
  re-registers itself after it was cut off. It talks to a :class:`Backend`, which only stores:
  :class:`MemoryBackend` (the reference, one process) and :class:`RedisBackend` (shared by every
  node; each operation one atomic Lua script).
- :class:`MemoryPresence` (the single-node default) and :class:`RedisPresence` (selected with
  ``--redis``) are the two ready-made combinations; :func:`keep_alive` is the heartbeat task.

Modules: ``base`` (the Protocols and the node), ``memory``, ``redis``, ``coalesce`` (announcements
held in an adaptive window and sent in batches: a connect storm); the contract suite every
backend passes is ``tests/gateway/test_presence_contract.py``.

How a dead node's users go offline: every node's entry carries a deadline (now + ``ttl``,
pushed forward by each heartbeat, every ``ttl / 3``). Each heartbeat also *reaps*: for every
node past its deadline, one atomic step removes its connections and returns the users whose
count fell to zero — so exactly one surviving node announces each of them. A node that was
reaped while alive (stalled longer than ``ttl``, cut off from Redis) learns it at its next
heartbeat and registers its connections again, announcing online the users that had gone.
"""

from __future__ import annotations

from gateway.presence.base import (
    DEFAULT_TTL,
    Backend,
    Changes,
    Conn,
    NodePresence,
    Presence,
    SyncReply,
    User,
    announce_changes,
    keep_alive,
    node_id,
    presence_event,
)
from gateway.presence.memory import MemoryBackend, MemoryPresence
from gateway.presence.redis import RedisBackend, RedisPresence

__all__ = [
    "DEFAULT_TTL",
    "Backend",
    "Changes",
    "Conn",
    "MemoryBackend",
    "MemoryPresence",
    "NodePresence",
    "Presence",
    "RedisBackend",
    "RedisPresence",
    "SyncReply",
    "User",
    "announce_changes",
    "keep_alive",
    "node_id",
    "presence_event",
]
