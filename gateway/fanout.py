"""Multi-node fan-out: python-socketio's ``AsyncRedisManager``, bounded so that Redis trouble
never stalls this node's own clients, and observable for ``/health/websocket``.

python-socketio keeps all the multi-node logic (``AsyncPubSubManager``: a room emit is
delivered to this node's sockets first, then published with the node's ``host_id`` so every
other node delivers it to its own and ignores its echo). Its Redis part, as shipped, has two
failure modes that matter here (measured with python-socketio 5.18 / redis-py 8):

- a Redis that hangs (stopped process, blackholed network) makes every emit wait for
  redis-py's socket timeout and retries, ~10 s per attempt, twice: every handler that emits
  (so every acknowledged write) stalls ~20 s;
- after an outage the listener retries with a back-off doubling up to 60 s, so fan-out can
  resume a minute after Redis is back; and a listener whose connection died silently never
  notices.

:class:`RedisFanout` replaces only the Redis transport: emits are queued and published by one
writer task in order, pipelined (a handler never waits on Redis; when Redis fails, what is
queued is dropped and publishing pauses for ``cooldown`` seconds: at-most-once, like any
Socket.IO emit); the listener pings its connection when idle, reconnects with a back-off
capped at ``max_backoff``, and reports whether it is subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import socketio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.outgoing import FanoutManager

log = logging.getLogger("gateway.fanout")

#: Messages waiting to be published at most; beyond, new emits are not published (counted).
MAX_QUEUE = 10_000
#: Messages sent in one pipeline at most.
MAX_BATCH = 256


class RedisFanout(socketio.AsyncRedisManager, FanoutManager):  # type: ignore[misc]
    """An ``AsyncRedisManager`` whose Redis trouble never blocks local emits, delivering
    to this node's sockets through :class:`~gateway.outgoing.FanoutManager` (below the pub/sub
    layer in the method order: the echo of another node's emit takes the same path).

    ``timeout`` bounds every connect, publish and ping; ``keepalive`` is how long the listener
    stays silent before it pings (and twice that without an answer means reconnect).
    """

    name = "collab-redis-fanout"
    #: The redis-py client (python-socketio's ``_redis_connect`` creates it).
    redis: Any

    def __init__(
        self,
        url: str,
        *,
        channel: str = "socketio",
        timeout: float = 2.0,
        keepalive: float = 5.0,
        cooldown: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        options = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),  # retries are ours: bounded, never blocking emits
        }
        super().__init__(url, channel=channel, redis_options=options)
        self.timeout = timeout
        self.keepalive = keepalive
        self.cooldown = cooldown
        self.max_backoff = max_backoff
        #: Whether the listener is subscribed and its connection answered lately.
        self.listening = False
        self.listen_error: str | None = "not started"
        self.publish_error: str | None = None
        #: Messages not published (Redis failing, or the queue full).
        self.dropped = 0
        self._outbox: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._paused_until = 0.0
        self._closing = False

    def start(self) -> None:
        """Subscribe now, not at the first connection (python-socketio's default): a node is
        in the cluster as soon as it reports healthy. Needs the running loop."""
        if not self.server.manager_initialized:
            self.server.manager_initialized = True
            self.initialize()

    # -- publishing ------------------------------------------------------------------------

    async def _publish(self, data: Any) -> None:
        """Queue ``data`` for the writer (python-socketio calls this after local delivery)."""
        if time.monotonic() < self._paused_until or len(self._outbox) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._outbox.append(data)
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="collab-fanout-writer")

    async def _write(self) -> None:
        """Writer task: publish what is queued, in order, one pipeline per batch."""
        while True:
            if not self._outbox:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._outbox.popleft() for _ in range(min(MAX_BATCH, len(self._outbox)))]
            try:
                if self.redis is None:
                    self._redis_connect()
                pipe = self.redis.pipeline(transaction=False)
                for data in batch:
                    pipe.publish(self.channel, self.json.dumps(data))
                await asyncio.wait_for(pipe.execute(), self.timeout)
            except Exception as exc:
                lost = len(batch) + len(self._outbox)
                self._outbox.clear()
                self.dropped += lost
                self._paused_until = time.monotonic() + self.cooldown
                if self.publish_error is None:
                    log.error("fan-out: cannot publish to Redis (%s); dropping", _describe(exc))
                self.publish_error = _describe(exc)
            else:
                if self.publish_error is not None:
                    log.warning("fan-out: publishing to Redis again")
                self.publish_error = None

    # -- listening -------------------------------------------------------------------------

    async def _listen(self) -> Any:
        """Yield every message of the channel; reconnect (capped back-off) when needed."""
        channel = self.channel.encode("utf-8")
        backoff = 0.1
        while True:
            pubsub = None
            try:
                if self.redis is None:
                    self._redis_connect()
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await asyncio.wait_for(pubsub.subscribe(self.channel), self.timeout)
                if not self.listening:
                    log.info("fan-out: listening on Redis")
                self.listening, self.listen_error, backoff = True, None, 0.1
                pinged = False
                while True:
                    message = await pubsub.get_message(timeout=self.keepalive)
                    if message is None:
                        if pinged:  # a whole keepalive without even a pong: the link is dead
                            raise TimeoutError("no answer from Redis to a keepalive ping")
                        await asyncio.wait_for(pubsub.ping(), self.timeout)
                        pinged = True
                        continue
                    pinged = False
                    if message["type"] == "message" and message["channel"] == channel:
                        yield message["data"]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    log.error("fan-out: lost the Redis subscription (%s)", _describe(exc))
                self.listening, self.listen_error = False, _describe(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(pubsub.aclose(), self.timeout)

    # -- health and shutdown ---------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``{"ok", "listening", "dropped", "error"?, "lastPublishError"?}``: ok when Redis
        answers a PING (publishing uses the same client) and the listener is subscribed.
        Never raises."""
        report: dict[str, Any] = {"ok": False, "listening": self.listening, "dropped": self.dropped}
        try:
            if self.redis is None:
                self._redis_connect()
            await asyncio.wait_for(self.redis.ping(), self.timeout)
        except Exception as exc:
            report["error"] = _describe(exc)
            return report
        if self.publish_error is not None:  # the last publish failed (the next one may not)
            report["lastPublishError"] = self.publish_error
        if not self.listening:
            report["error"] = f"not subscribed: {self.listen_error}"
        else:
            report["ok"] = True
        return report

    async def aclose(self) -> None:
        """Publish what is queued (within ``timeout``), stop the writer, close the client."""
        writer, self._writer = self._writer, None
        self._closing = True
        self._wake.set()
        if writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, self.timeout)  # cancelled if it takes longer
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None
            self.connected = False


def install(server: socketio.AsyncServer, manager: RedisFanout) -> None:
    """Make ``manager`` the server's client manager (before the server handled anything)."""
    if server.manager_initialized:
        raise RuntimeError("the Socket.IO server's manager is already in use")
    server.manager = manager
    manager.set_server(server)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
