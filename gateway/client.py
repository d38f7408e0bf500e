"""A typed Python client of the gateway, on python-socketio's ``AsyncClient``.

::

    async with CollabClient("http://localhost:3001", token) as client:
        events = client.events("document:*", "user:typing")   # subscribe before joining
        doc = await client.join("rfi-42", text_fields=["notes"])
        result = await client.update("rfi-42", doc.version, {**doc.data, "title": "Pour"})
        async for name, payload in events:
            ...

What it adds to a bare Socket.IO client:

- **Typed requests.** Every client event of the contract is a method that returns the ack's
  content (:class:`Joined`, :class:`WriteResult`, ...) or raises :class:`RequestError` with
  the ack's ``code`` (``forbidden``, ``conflict_pending``, ...).
- **Events** as async iterators (:meth:`CollabClient.events`, yielding :class:`Event`
  ``(name, payload)`` tuples) and/or callbacks (:meth:`CollabClient.on`). Besides the server's
  events, the client reports its own under ``client:*``: ``client:connected``,
  ``client:disconnected`` (the reason), ``client:rejoined`` (the join ack of a document joined
  again after a reconnect: events missed meanwhile are not replayed, this is the current state),
  ``client:rejoin_failed`` and ``client:connect_error``.
- **Reconnection.** python-socketio reconnects; then this client joins every document it had
  joined again, *then* resends every request that had not been answered, in the original order.
  A write keeps its ``opId``: if the server had applied it before the connection dropped, the
  answer is ``status == "duplicate"`` (nothing applied twice, ``version`` the version it made).
  A ``conflict:resolve`` is not idempotent, so one in flight when the connection drops raises
  :class:`ConnectionLost` instead (the room's ``conflict:resolved`` tells whether it landed).
- **Current state.** :meth:`CollabClient.document` is the newest ``(version, data)`` the client
  has seen of a joined document (join and write acks, ``document:updated``,
  ``conflict:resolved``), so ``update(doc, client.document(doc).version, ...)`` edits the
  latest version.

Requests wait for the connection to come back, up to ``request_timeout`` seconds (None: no
limit); a write that times out raises :class:`WriteTimeout` carrying its ``op_id`` so that it
can be retried safely. Documents only: resources (``resource:*``) are not wrapped yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import inspect
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import socketio

log = logging.getLogger("gateway.client")

Token = str | Callable[[], str] | Callable[[], Awaitable[str]]
Callback = Callable[[str, Any], Any]


class Event(NamedTuple):
    """One event: its name and payload (``None`` for events without one)."""

    name: str
    payload: Any


class RequestError(Exception):
    """The server refused a request: ``code`` is the contract's error code."""

    def __init__(self, event: str, code: str, message: str, details: Mapping[str, Any]) -> None:
        super().__init__(f"{event}: {code}: {message}")
        self.event = event
        self.code = code
        self.message = message
        #: Members of the error beyond code and message (``field``, ``version``, ...).
        self.details = dict(details)


class ConnectionLost(ConnectionError):
    """The connection dropped while a request that cannot be resent was in flight."""


class ClientClosed(ConnectionError):
    """The client was closed while the request waited."""


class WriteTimeout(TimeoutError):
    """A write got no answer in time; resend it with the same ``op_id`` to be safe."""

    def __init__(self, document_id: str, op_id: str, timeout: float) -> None:
        super().__init__(f"document:update of {document_id!r} unanswered after {timeout}s")
        self.document_id = document_id
        self.op_id = op_id


@dataclass(frozen=True, slots=True)
class Joined:
    """The ``document:join`` ack: the document as it is now."""

    document_id: str
    version: int
    data: dict[str, Any]
    strategy: str
    text_fields: tuple[str, ...]
    #: Pending manual conflicts (``conflictId``, ``conflictedFields``, ``originalValue``, ...).
    conflicts: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The ``document:update`` ack."""

    document_id: str
    op_id: str
    #: ``applied``, ``merged``, ``conflict`` (manual: held until resolved) or ``duplicate``.
    status: str
    version: int
    data: dict[str, Any] | None = None
    conflict_id: str | None = None
    conflicted_fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DocumentState:
    """The newest state of a joined document the client has seen."""

    version: int
    data: dict[str, Any]


@dataclass(slots=True)
class _Request:
    id: int
    event: str
    payload: dict[str, Any]
    future: asyncio.Future[Any]
    #: Resent after a reconnect (else it fails with ConnectionLost).
    resend: bool
    #: The connection it was last sent on (0: never sent).
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class _JoinOptions:
    strategy: str | None
    text_fields: tuple[str, ...] | None

    def payload(self, document_id: str) -> dict[str, Any]:
        p: dict[str, Any] = {"documentId": document_id}
        if self.strategy is not None:
            p["strategy"] = self.strategy
        if self.text_fields is not None:
            p["textFields"] = list(self.text_fields)
        return p


_END = object()


class EventStream:
    """Events as they arrive, from the moment the stream was created (see
    :meth:`CollabClient.events`). Ends when the client is closed or :meth:`close` is called."""

    def __init__(self, client: CollabClient, patterns: tuple[str, ...]) -> None:
        self._client = client
        self._patterns = patterns
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed = False

    def matches(self, name: str) -> bool:
        return not self._patterns or any(fnmatch.fnmatchcase(name, p) for p in self._patterns)

    def _put(self, item: Any) -> None:
        if not self._closed:
            self._queue.put_nowait(item)

    def close(self) -> None:
        """Stop receiving; the iteration ends after the events already queued."""
        if not self._closed:
            self._queue.put_nowait(_END)
            self._closed = True
            self._client._streams.discard(self)

    async def next(self) -> Event:
        """The next event (wrap in ``asyncio.timeout`` to bound the wait)."""
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)  # stay ended
            raise StopAsyncIteration
        ev: Event = item
        return ev

    async def wait_for(self, name: str, predicate: Callable[[Any], bool] | None = None) -> Any:
        """The payload of the next event called ``name`` (and matching ``predicate``); events
        before it are consumed."""
        while True:
            ev = await self.next()
            if ev.name == name and (predicate is None or predicate(ev.payload)):
                return ev.payload

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return await self.next()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CollabClient:
    """A connection to the gateway as one user (the token's).

    ``url`` is the gateway's base URL (``http://host:3001``); ``token`` a JWT, or a function
    (sync or async) returning one, called at every (re)connection so a refreshed token is used.
    Use ``async with``, or :meth:`connect` and :meth:`close`.
    """

    def __init__(
        self,
        url: str,
        token: Token,
        *,
        transports: Iterable[str] = ("websocket", "polling"),
        request_timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        reconnection: bool = True,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
        serializer: str = "default",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self.transports = list(transports)
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.headers = dict(headers or {})
        #: The python-socketio client underneath (for what this class does not wrap).
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            serializer=serializer,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("*", self._on_event)
        self._ids = itertools.count(1)
        self._requests: dict[int, _Request] = {}
        self._joined: dict[str, _JoinOptions] = {}
        self._documents: dict[str, DocumentState] = {}
        self._streams: set[EventStream] = set()
        self._callbacks: list[tuple[str, Callback]] = []
        self._ready = asyncio.Event()
        self._emit_lock = asyncio.Lock()
        self._epoch = 0
        #: Answers awaited by rejoins in progress (cancelled if the connection drops).
        self._rejoining: set[asyncio.Future[Any]] = set()
        self._connections = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._last_connect_error: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, and return once the client is ready for requests."""
        try:
            await self.sio.connect(
                self.url,
                auth=self._auth,
                headers=self.headers,
                transports=self.transports,
                wait_timeout=self.connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            reason = self._last_connect_error
            message = reason.get("message") if isinstance(reason, dict) else reason
            raise ConnectionError(message or str(exc)) from exc
        await asyncio.wait_for(self._ready.wait(), self.connect_timeout)

    async def close(self) -> None:
        """Disconnect for good: pending requests fail with :class:`ClientClosed`, event
        streams end."""
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        await self.sio.disconnect()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for req in list(self._requests.values()):
            if not req.future.done():
                req.future.set_exception(ClientClosed("the client was closed"))
        for stream in list(self._streams):
            stream.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Connected and done rejoining: requests go out at once."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait until the client is connected and has rejoined its documents."""
        await self._ready.wait()

    # -- requests ------------------------------------------------------------------------------

    async def join(
        self,
        document_id: str,
        *,
        strategy: str | None = None,
        text_fields: Iterable[str] | None = None,
    ) -> Joined:
        """Join a document's room (creating it, owned by your company, if it does not exist,
        with ``strategy`` and ``text_fields``). Rejoined automatically after a reconnect."""
        opts = _JoinOptions(strategy, tuple(text_fields) if text_fields is not None else None)
        self._joined[document_id] = opts
        try:
            ack = await self._request("document:join", opts.payload(document_id))
        except BaseException:
            if self._joined.get(document_id) is opts:
                del self._joined[document_id]
            raise
        return self._remember_join(document_id, ack)

    async def leave(self, document_id: str) -> None:
        """Leave a document's room (and stop rejoining it)."""
        self._joined.pop(document_id, None)
        self._documents.pop(document_id, None)
        await self._request("document:leave", {"documentId": document_id})

    async def update(
        self,
        document_id: str,
        version: int,
        data: Mapping[str, Any],
        op_id: str | None = None,
    ) -> WriteResult:
        """Write the whole document ``data``, edited from ``version``. ``op_id`` (generated if
        not given) makes the write idempotent: sent again, it is answered ``duplicate``."""
        op = op_id or uuid.uuid4().hex
        payload = {"documentId": document_id, "version": version, "data": dict(data), "opId": op}
        try:
            ack = await self._request("document:update", payload)
        except TimeoutError:
            raise WriteTimeout(document_id, op, self.request_timeout or 0.0) from None
        result = WriteResult(
            document_id=document_id,
            op_id=op,
            status=str(ack["status"]),
            version=int(ack["version"]),
            data=ack.get("data"),
            conflict_id=ack.get("conflictId"),
            conflicted_fields=tuple(ack.get("conflictedFields") or ()),
        )
        if result.status in ("applied", "merged") and result.data is not None:
            self._advance(document_id, result.version, result.data)
        return result

    async def resolve(self, document_id: str, conflict_id: str, resolved_value: Any) -> int:
        """Settle a pending manual conflict with the whole resolved document; returns the new
        version. Not resent after a reconnect (raises :class:`ConnectionLost`)."""
        payload = {
            "documentId": document_id,
            "conflictId": conflict_id,
            "resolvedValue": resolved_value,
        }
        ack = await self._request("conflict:resolve", payload, resend=False)
        version = int(ack["version"])
        if isinstance(resolved_value, dict):
            self._advance(document_id, version, resolved_value)
        return version

    async def typing(self, document_id: str) -> bool:
        """Tell the room you are typing; False when the server throttled it (not relayed)."""
        ack = await self._request("user:typing", {"documentId": document_id})
        return not ack.get("throttled", False)

    async def sync(self, document_id: str, message: bytes) -> bytes | None:
        """Send a y-protocols sync message (step 1, step 2 or update) for a joined document;
        returns the reply message (step 2 answering a step 1), if any."""
        ack = await self._request(
            "document:sync", {"documentId": document_id, "message": bytes(message)}
        )
        reply = ack.get("message")
        return bytes(reply) if reply is not None else None

    def document(self, document_id: str) -> DocumentState | None:
        """The newest state seen of a joined document (None if not joined)."""
        return self._documents.get(document_id)

    @property
    def joined(self) -> list[str]:
        """The documents this client is in (and will rejoin after a reconnect)."""
        return list(self._joined)

    # -- events --------------------------------------------------------------------------------

    def events(self, *patterns: str) -> EventStream:
        """A stream of the events whose names match any of ``patterns`` (``fnmatch`` style:
        ``"document:*"``; none = every event), from now on. Iterate it with ``async for``."""
        stream = EventStream(self, patterns)
        if self._closed:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    def on(self, pattern: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(name, payload)`` (sync or async) for every event matching
        ``pattern``. Returns a function that removes it."""
        entry = (pattern, callback)
        self._callbacks.append(entry)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(entry)

        return remove

    # -- internals -----------------------------------------------------------------------------

    async def _auth(self) -> dict[str, Any]:
        token = self._token() if callable(self._token) else self._token
        if inspect.isawaitable(token):
            token = await token
        # This client rejoins and resends on its own; connection state recovery's extra
        # offset argument would only get in the way of its handlers.
        return {"token": str(token), "recovery": False}

    async def _request(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        resend: bool = True,
    ) -> dict[str, Any]:
        if self._closed:
            raise ClientClosed("the client is closed")
        loop = asyncio.get_running_loop()
        req = _Request(next(self._ids), event, payload, loop.create_future(), resend)
        self._requests[req.id] = req
        try:
            if self._ready.is_set():
                await self._emit(req)
            # else: sent by _resume once the connection is back
            async with asyncio.timeout(self.request_timeout):
                ack = await asyncio.shield(req.future)
        finally:
            self._requests.pop(req.id, None)
        if not isinstance(ack, dict):
            raise RequestError(event, "internal", f"unexpected ack {ack!r}", {})
        if not ack.get("ok"):
            error = dict(ack.get("error") or {})
            code = str(error.pop("code", "internal"))
            message = str(error.pop("message", ""))
            raise RequestError(event, code, message, error)
        return ack

    async def _emit(self, req: _Request) -> bool:
        """Send ``req`` on the current connection; False if there is none (it is then sent
        again on the next one)."""
        epoch = self._epoch
        req.epoch = epoch

        def acked(*args: Any) -> None:
            if not req.future.done():
                req.future.set_result(args[0] if len(args) == 1 else list(args))

        async with self._emit_lock:
            try:
                await self.sio.emit(req.event, req.payload, callback=acked)
            except socketio.exceptions.BadNamespaceError:
                req.epoch = 0  # not connected after all: resent on the next connection
                return False
        return True

    async def _on_connect(self) -> None:
        self._connections += 1
        self._epoch += 1
        self._spawn(self._resume(self._epoch))

    async def _resume(self, epoch: int) -> None:
        """After (re)connecting: rejoin (and wait for the answers), resend what is unanswered,
        then accept requests."""
        reconnect = self._connections > 1
        await self._dispatch("client:connected", {"reconnect": reconnect})
        if reconnect:
            joining = {
                r.payload.get("documentId")
                for r in self._requests.values()
                if r.event == "document:join"
            }
            rejoins = [
                self._rejoin(doc_id, opts)
                for doc_id, opts in list(self._joined.items())
                if doc_id not in joining
            ]
            await asyncio.gather(*rejoins)
        while epoch == self._epoch and "/" in self.sio.namespaces:
            todo = [r for r in self._requests.values() if r.epoch != epoch]
            if not todo:
                self._ready.set()
                return
            for req in todo:
                if epoch != self._epoch:
                    return  # connected again meanwhile: that connection's _resume goes on
                if not req.future.done() and not await self._emit(req):
                    return  # disconnected: the next connection resumes

    async def _rejoin(self, doc_id: str, opts: _JoinOptions) -> None:
        """Join ``doc_id`` again; returns once answered (or the connection dropped)."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._rejoining.add(answer)

        def answered(*args: Any) -> None:
            if not answer.done():
                answer.set_result(args[0] if args else None)

        try:
            async with self._emit_lock:
                await self.sio.emit("document:join", opts.payload(doc_id), callback=answered)
            ack = await answer
        except (socketio.exceptions.BadNamespaceError, asyncio.CancelledError):
            return  # disconnected again: the next connection rejoins
        finally:
            self._rejoining.discard(answer)
        if self._joined.get(doc_id) is not opts:
            return  # left meanwhile
        if isinstance(ack, dict) and ack.get("ok"):
            self._remember_join(doc_id, ack)
            await self._dispatch("client:rejoined", ack)
        else:
            # refused now (revoked, ...): stop rejoining it
            del self._joined[doc_id]
            self._documents.pop(doc_id, None)
            await self._dispatch("client:rejoin_failed", {"documentId": doc_id, "ack": ack})

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._ready.clear()
        for answer in list(self._rejoining):
            answer.cancel()
        for req in self._requests.values():
            if not req.resend and not req.future.done():
                req.future.set_exception(
                    ConnectionLost(f"{req.event}: the connection dropped before the answer")
                )
        await self._dispatch("client:disconnected", {"reason": str(reason)})

    async def _on_connect_error(self, data: Any = None) -> None:
        self._last_connect_error = data
        await self._dispatch("client:connect_error", data)

    async def _on_event(self, event: str, *args: Any) -> None:
        payload = args[0] if len(args) == 1 else (list(args) if args else None)
        self._track(event, payload)
        await self._dispatch(event, payload)

    def _track(self, event: str, payload: Any) -> None:
        """Keep :meth:`document` current from the room's events."""
        if not isinstance(payload, dict):
            return
        doc_id = payload.get("documentId")
        if not isinstance(doc_id, str) or doc_id not in self._documents:
            return
        if event == "document:updated" and isinstance(payload.get("data"), dict):
            self._advance(doc_id, int(payload.get("version", 0)), payload["data"])
        elif event == "conflict:resolved" and isinstance(payload.get("resolvedValue"), dict):
            self._advance(doc_id, int(payload.get("version", 0)), payload["resolvedValue"])

    def _advance(self, doc_id: str, version: int, data: dict[str, Any]) -> None:
        current = self._documents.get(doc_id)
        if doc_id in self._joined and (current is None or version >= current.version):
            self._documents[doc_id] = DocumentState(version, data)

    def _remember_join(self, doc_id: str, ack: dict[str, Any]) -> Joined:
        joined = Joined(
            document_id=doc_id,
            version=int(ack["version"]),
            data=dict(ack.get("data") or {}),
            strategy=str(ack.get("strategy", "")),
            text_fields=tuple(ack.get("textFields") or ()),
            conflicts=tuple(ack.get("conflicts") or ()),
        )
        if doc_id in self._joined:
            self._documents[doc_id] = DocumentState(joined.version, joined.data)
        return joined

    async def _dispatch(self, name: str, payload: Any) -> None:
        event = Event(name, payload)
        for stream in list(self._streams):  # first, synchronously: keeps arrival order
            if stream.matches(name):
                stream._put(event)
        for pattern, callback in list(self._callbacks):
            if not fnmatch.fnmatchcase(name, pattern):
                continue
            try:
                result = callback(name, payload)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event callback for %s failed", name)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = [
    "ClientClosed",
    "CollabClient",
    "ConnectionLost",
    "DocumentState",
    "Event",
    "EventStream",
    "Joined",
    "RequestError",
    "WriteResult",
    "WriteTimeout",
]
