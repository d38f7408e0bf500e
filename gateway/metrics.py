"""Prometheus metrics of one gateway, in a registry of its own (an app per registry, so tests
and embedders can build several).

Exposed on ``GET /metrics``:

- ``collab_connections_active``: sockets connected to this node;
- ``collab_messages_received_total{event}`` / ``collab_messages_sent_total{event}``: client
  events handled and server events emitted (``rate()`` gives messages per second; unknown
  client events count as ``event="unknown"`` so labels stay bounded);
- ``collab_connection_failures_total{reason}``: refused handshakes, by reason
  (``missing_token``, ``token_expired``, ``bad_signature``, ``malformed_token``, ...);
- ``collab_reconnections_total``: connections of a user within :data:`RECONNECT_WINDOW`
  seconds of one of that user's connections closing (a dropped tab or device coming back; the
  server cannot otherwise tell a reconnect from a new tab, and socket.io-client sends nothing
  that says so);
- ``collab_delivery_latency_seconds``: from receiving a write to emitting its broadcast;
- ``collab_merge_latency_seconds{strategy}``: engine time of stale writes (merged, or held
  as a manual conflict);
- ``collab_conflicts_total{strategy}``: writes that met a conflict.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds after a user's connection closes during which a new one counts as a reconnection.
RECONNECT_WINDOW = 60.0

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The gateway's metrics and the little state they need (recent disconnects)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "collab_connections_active", "Sockets connected to this node", registry=r
        )
        self.messages = Counter(
            "collab_messages_received", "Client events handled", ["event"], registry=r
        )
        self.sent = Counter("collab_messages_sent", "Server events emitted", ["event"], registry=r)
        self.connection_failures = Counter(
            "collab_connection_failures", "Refused handshakes", ["reason"], registry=r
        )
        self.reconnections = Counter(
            "collab_reconnections",
            f"Connections within {RECONNECT_WINDOW:.0f}s of the same user's disconnect",
            registry=r,
        )
        self.delivery_latency = Histogram(
            "collab_delivery_latency_seconds",
            "Time from receiving a write to emitting its broadcast",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.merge_latency = Histogram(
            "collab_merge_latency_seconds",
            "Engine time of stale writes, by strategy",
            ["strategy"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.conflicts = Counter(
            "collab_conflicts", "Writes that met a conflict, by strategy", ["strategy"], registry=r
        )
        self._clock = clock
        self._closed_at: dict[tuple[str, str], float] = {}

    def connected(self, company_id: str, user_id: str) -> None:
        """A socket was accepted (counted as a reconnection if the user just dropped one)."""
        self.connections.inc()
        closed = self._closed_at.pop((company_id, user_id), None)
        if closed is not None and self._clock() - closed <= RECONNECT_WINDOW:
            self.reconnections.inc()

    def disconnected(self, company_id: str, user_id: str) -> None:
        """A socket closed."""
        self.connections.dec()
        now = self._clock()
        self._closed_at[(company_id, user_id)] = now
        if len(self._closed_at) > 10_000:
            self.prune()

    def prune(self) -> None:
        """Forget disconnects older than :data:`RECONNECT_WINDOW` (``gateway.memory`` calls
        it every minute)."""
        now = self._clock()
        self._closed_at = {k: t for k, t in self._closed_at.items() if now - t <= RECONNECT_WINDOW}

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
