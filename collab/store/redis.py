"""The Redis store: the multi-node backend, several engine nodes sharing one Redis.

Every call is a job on one FIFO queue; one writer task sends whatever is queued as ONE
pipeline (``transaction=False``) of script calls — group commit, one round trip per batch. So
call order is execution order (a ``load`` issued after an ``append`` sees it), and futures
settle once Redis answered. Each document operation is one Lua script, atomic on the server;
``append``'s is the version compare-and-set that lets several nodes share the store.

Keys, for document key ``K`` (a hash tag: a document's keys share one cluster slot)::

    <prefix>{K}:doc           hash  meta JSON, cv/cs/cm (checkpoint version/state/meta), head
    <prefix>{K}:log           list  entries cv+1 .. head, msgpack [version, update, meta, resolves]
    <prefix>{K}:conflicts     hash  conflict id -> JSON
    <prefix>{K}:order         list  conflict ids, in insertion order
    <prefix>{company:C}:index zset  meta JSON of company C's documents, scored by createdAt

The log is a list because it is always the contiguous run ``cv+1 .. head``: the position is
the version, so append is ``RPUSH``, compaction ``LTRIM``, load an ordered ``LRANGE`` (a hash
needs sorting and an ``HDEL`` per dropped version; a zset pays a skiplist node per entry).
Only ``create`` touches two slots (document and company index): fine on the standalone or
Sentinel Redis this client speaks; a Redis Cluster port would have to split it.

Durability: an acknowledged write is exactly as durable as Redis persistence makes it.

- ``appendonly yes`` + ``appendfsync always``: the AOF is written and fsynced before Redis
  replies, so an acknowledged write survives a Redis crash, a host crash and a power cut
  (keep ``no-appendfsync-on-rewrite no``, the default: ``yes`` skips those fsyncs while a
  rewrite or BGSAVE runs).
- ``appendfsync everysec`` (the AOF default): written before the reply, fsynced about once a
  second, so a Redis process crash (SIGKILL, OOM killer) loses nothing and a host crash or
  power cut loses about the last second. But while a slow background fsync is pending, Redis
  holds writes in memory for up to 2 s and still replies: a process crash then loses them too.
- ``appendfsync no``: like ``everysec`` for a process crash; the kernel flushes when it likes
  (~30 s on Linux). No AOF (RDB or nothing): a crash loses all since the last snapshot.
- Replication is asynchronous: a failover can lose acknowledged writes whatever the policy.

If Redis is unreachable or hangs, a batch's futures fail with redis-py's ``ConnectionError``
/ ``TimeoutError`` within ``timeout`` seconds, and the writer goes on with later calls
(``health()`` reports the error meanwhile). Nothing is resent: a batch that reached Redis may
have been applied, so a failed future means "outcome unknown", not "not written".
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError

from collab.errors import StoreConflict
from collab.model import Checkpoint, DocumentMeta, LogEntry, PendingConflict, StoredDocument
from collab.store.base import AsyncLifecycle

T = TypeVar("T")

#: Most jobs sent in one pipeline (one round trip); the rest wait for the next one.
MAX_BATCH = 512

# Every document script gets KEYS = doc, log, conflicts, order (create adds the index).
_SNAPSHOT = """
local function snapshot()
  local d = redis.call('HMGET', KEYS[1], 'meta', 'cv', 'cs', 'cm')
  if not d[1] then return false end
  local conflicts = {}
  for _, id in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    local c = redis.call('HGET', KEYS[3], id)
    if c then conflicts[#conflicts + 1] = c end
  end
  return {d, redis.call('LRANGE', KEYS[2], 0, -1), conflicts}
end
"""

_LOAD = _SNAPSHOT + "return snapshot()"

# ARGV = meta JSON, checkpoint version, state, checkpoint meta JSON, createdAt.
_CREATE = (
    _SNAPSHOT
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'meta', ARGV[1], 'cv', ARGV[2], 'cs', ARGV[3], 'cm', ARGV[4],
             'head', ARGV[2])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
end
return snapshot()
"""
)

# ARGV = version, packed entry[, resolves]: the compare-and-set.
_APPEND = """
local head = redis.call('HGET', KEYS[1], 'head')
if not head then return {'missing'} end
head = tonumber(head)
if tonumber(ARGV[1]) ~= head + 1 then return {'conflict', head} end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'head', ARGV[1])
if ARGV[3] and redis.call('HDEL', KEYS[3], ARGV[3]) == 1 then
  redis.call('LREM', KEYS[4], 1, ARGV[3])
end
return {'ok'}
"""

# ARGV = conflict id, JSON. A replaced conflict keeps its place in the order.
_ADD_CONFLICT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
return {'ok'}
"""

# ARGV = version, state, checkpoint meta JSON. The log holds versions cv+1 .. head.
_COMPACT = """
local d = redis.call('HMGET', KEYS[1], 'cv', 'head')
if not d[1] then return {'missing'} end
local cv, head, v = tonumber(d[1]), tonumber(d[2]), tonumber(ARGV[1])
if v <= cv then return {'ok'} end
if v > head then return {'beyond', head} end
redis.call('HSET', KEYS[1], 'cv', ARGV[1], 'cs', ARGV[2], 'cm', ARGV[3])
redis.call('LTRIM', KEYS[2], v - cv, -1)
return {'ok'}
"""

_SCRIPTS = dict(
    load=_LOAD, create=_CREATE, append=_APPEND, add_conflict=_ADD_CONFLICT, compact=_COMPACT
)


@dataclass(eq=False, slots=True)
class _Job:
    """One command for the writer, how to read its reply, and the future awaiting that."""

    command: tuple[Any, ...]
    parse: Callable[[Any], Any]
    future: asyncio.Future[Any]
    #: The document key of an append (poisoning, one append per key per pipeline).
    append_key: str | None = None
    #: The document key of a load (which lifts a poisoning).
    load_key: str | None = None


class RedisStore(AsyncLifecycle):
    """A :class:`collab.store.base.Store` in Redis, group-committed by one writer task.

    ``url`` is a redis-py URL (``redis://[user:password@]host[:port][/db]``, ``rediss://``
    for TLS); its optional ``prefix`` query parameter names the key prefix unless ``prefix``
    is given here (default ``collab:``). ``timeout`` bounds every connect and reply.
    """

    name: str = "redis"

    def __init__(self, url: str, *, prefix: str | None = None, timeout: float = 5.0) -> None:
        self._url, url_prefix, shown = _split_url(url)
        self.prefix: str = prefix if prefix is not None else (url_prefix or "collab:")
        #: The URL without password or query, fit for health reports and logs.
        self.url: str = shown
        self.timeout = timeout
        #: Pipelines sent by the writer (one per batch); observability and tests.
        self.round_trips: int = 0
        self._client: Redis | None = None
        self._shas: dict[str, str] = {}
        self._queue: deque[_Job] = deque()
        #: Keys whose last compare-and-set failed: appends refused until a load (Protocol).
        self._poisoned: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and load the scripts; ``RuntimeError`` if already started, and the
        connection error if Redis cannot be reached."""
        if self._task is not None:
            raise RuntimeError("RedisStore already started")
        client = Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # never resend: a resent append could apply twice
        )
        scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        try:
            await _load_scripts(client)
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._shas = {name: script.sha for name, script in scripts.items()}
        self._queue.clear()
        self._wake = asyncio.Event()
        self._accepting = True
        self._task = asyncio.create_task(self._writer(), name="collab-redis-writer")

    async def stop(self) -> None:
        """Stop accepting calls, let the writer send everything queued, close. Idempotent."""
        task = self._task
        if task is None:
            return
        self._accepting = False
        self._wake.set()
        try:
            await task
        finally:
            if self._task is task:
                self._task = None
                client, self._client = self._client, None
                if client is not None:
                    await client.aclose()

    # -- the Protocol ------------------------------------------------------------------------

    async def load(self, key: str) -> StoredDocument | None:
        """The stored document (one atomic snapshot), including every append queued before."""
        return await self._script("load", key, (), _snapshot, load_key=key)

    async def head(self, key: str) -> int | None:
        """The stored head version, ``None`` if absent."""
        reply = await self._submit(("HGET", f"{self.prefix}{{{key}}}:doc", "head"), lambda r: r)
        return None if reply is None else int(reply)

    async def create(self, meta: DocumentMeta, checkpoint: Checkpoint) -> StoredDocument:
        """Create the document unless it exists (atomically); return the stored one."""
        args = (
            orjson.dumps(meta.to_json()),
            checkpoint.version,
            bytes(checkpoint.state),
            orjson.dumps(checkpoint.meta),
            repr(float(meta.created_at)),
        )
        index = f"{self.prefix}{{company:{meta.company_id}}}:index"
        doc = await self._script("create", meta.key, args, _snapshot, index)
        if doc is None:  # impossible: the script created it or found it
            raise RuntimeError(f"{meta.key}: document vanished during create")
        return doc

    def append(self, key: str, entry: LogEntry) -> asyncio.Future[None]:
        """Queue ``entry`` (serialized now); the future settles once Redis ran the
        compare-and-set. See the Protocol."""
        packed = msgpack.packb(
            [entry.version, bytes(entry.update), orjson.dumps(entry.meta), entry.resolves]
        )
        args: tuple[Any, ...] = (entry.version, packed)
        if entry.resolves is not None:
            args += (entry.resolves,)
        return self._script("append", key, args, _status(key, entry.version), append_key=key)

    async def add_conflict(self, key: str, conflict: PendingConflict) -> None:
        """Keep ``conflict`` (replacing one with the same id); ``KeyError`` if no document."""
        args = (conflict.conflict_id, orjson.dumps(conflict.to_json()))
        await self._script("add_conflict", key, args, _status(key, 0))

    async def compact(self, key: str, checkpoint: Checkpoint) -> None:
        """Install a newer checkpoint and drop the entries it covers, atomically.

        Not newer than the stored one: ignored. Beyond the head: ``ValueError``. No document:
        ``KeyError``.
        """
        args = (checkpoint.version, bytes(checkpoint.state), orjson.dumps(checkpoint.meta))
        await self._script("compact", key, args, _status(key, checkpoint.version))

    async def list_documents(self, company_id: str, kind: str | None = None) -> list[DocumentMeta]:
        """The company's documents (of ``kind`` if given), oldest first, then by key."""
        index = f"{self.prefix}{{company:{company_id}}}:index"

        def parse(reply: list[bytes]) -> list[DocumentMeta]:
            metas = [DocumentMeta.from_json(orjson.loads(m)) for m in reply]
            found = [m for m in metas if kind is None or m.kind == kind]
            return sorted(found, key=lambda m: (m.created_at, m.key))

        return await self._submit(("ZRANGE", index, 0, -1), parse)

    async def health(self) -> dict[str, Any]:
        """PING Redis (at most ``timeout`` seconds); never raises."""
        report: dict[str, Any] = {
            "ok": False,
            "backend": self.name,
            "url": self.url,
            "queue": len(self._queue),
        }
        client, task = self._client, self._task
        if client is None or task is None or task.done():
            report["error"] = "not started"
            return report
        try:
            await asyncio.wait_for(client.ping(), self.timeout)
        except Exception as exc:
            report["error"] = str(exc) or type(exc).__name__
        else:
            report["ok"] = True
        return report

    # -- the queue and the writer ------------------------------------------------------------

    def _script(
        self,
        name: str,
        key: str,
        args: tuple[Any, ...],
        parse: Callable[[Any], T],
        *extra: str,
        append_key: str | None = None,
        load_key: str | None = None,
    ) -> asyncio.Future[T]:
        p = f"{self.prefix}{{{key}}}:"
        keys = (p + "doc", p + "log", p + "conflicts", p + "order", *extra)
        command = ("EVALSHA", self._shas.get(name), len(keys), *keys, *args)
        return self._submit(command, parse, append_key, load_key)

    def _submit(
        self,
        command: tuple[Any, ...],
        parse: Callable[[Any], T],
        append_key: str | None = None,
        load_key: str | None = None,
    ) -> asyncio.Future[T]:
        if not self._accepting or self._task is None or self._task.done():
            raise RuntimeError("RedisStore is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(command, parse, future, append_key, load_key))
        self._wake.set()
        return future

    async def _writer(self) -> None:
        """Task body: send batches until stopped and the queue is empty."""
        while self._accepting or self._queue:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run(self._next_batch())

    def _next_batch(self) -> list[_Job]:
        """The next pipeline: queued jobs in order, at most one append per document (so a
        refused append poisons the ones behind it before they are sent; see the Protocol)."""
        batch: list[_Job] = []
        appending: set[str] = set()
        while self._queue and len(batch) < MAX_BATCH:
            job = self._queue[0]
            if job.append_key is not None:
                if job.append_key in self._poisoned:
                    self._queue.popleft()
                    _settle(job, StoreConflict(job.append_key, -1, None))
                    continue
                if job.append_key in appending:
                    break
                appending.add(job.append_key)
            elif job.load_key is not None:
                self._poisoned.discard(job.load_key)
            batch.append(self._queue.popleft())
        return batch

    async def _run(self, batch: list[_Job], retry_noscript: bool = True) -> None:
        """One round trip for ``batch``; settle each future from its own reply."""
        assert self._client is not None
        try:
            pipe = self._client.pipeline(transaction=False)
            for job in batch:
                pipe.execute_command(*job.command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # unreachable, timed out: the outcome is unknown
            for job in batch:
                _settle(job, exc)
            return
        self.round_trips += 1
        again: list[_Job] = []
        for job, reply in zip(batch, replies, strict=True):
            if retry_noscript and isinstance(reply, NoScriptError):
                again.append(job)  # Redis restarted and lost its script cache: not run
            else:
                if job.append_key is not None and _is_conflict(reply):
                    self._poisoned.add(job.append_key)
                _settle(job, reply)
        if again:
            try:
                await _load_scripts(self._client)
            except Exception as exc:
                for job in again:
                    _settle(job, exc)
                return
            await self._run(again, retry_noscript=False)


async def _load_scripts(client: Redis) -> None:
    for text in _SCRIPTS.values():
        await client.script_load(text)


def _is_conflict(reply: Any) -> bool:
    return isinstance(reply, list) and bool(reply) and reply[0] == b"conflict"


def _settle(job: _Job, reply: Any) -> None:
    """Resolve ``job``'s future from its reply (an exception fails it), unless its awaiter
    cancelled it (the write itself went ahead)."""
    if job.future.done():
        return
    try:
        if isinstance(reply, Exception):
            raise reply
        job.future.set_result(job.parse(reply))
    except Exception as exc:
        job.future.set_exception(exc)


def _status(key: str, version: int) -> Callable[[list[Any]], None]:
    """How to read a write script's ``{status[, head]}`` reply for ``key`` at ``version``."""

    def parse(reply: list[Any]) -> None:
        status = reply[0]
        if status == b"missing":
            raise KeyError(key)
        if status == b"conflict":
            raise StoreConflict(key, version - 1, int(reply[1]))
        if status == b"beyond":
            raise ValueError(f"{key}: checkpoint version {version} is beyond head {reply[1]}")
        if status != b"ok":
            raise RuntimeError(f"{key}: unexpected script reply {reply!r}")

    return parse


def _split_url(url: str) -> tuple[str, str | None, str]:
    """The URL for redis-py (our ``prefix`` parameter removed), that parameter, and the URL
    fit to show (no password, no query). A bad URL is a ``ValueError`` that does not repeat
    it, nor the parser's message: either may hold a password."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        client_url = urlunsplit(
            parts._replace(query=urlencode([q for q in query if q[0] != "prefix"]))
        )
        parse_url(client_url)
    except Exception:
        raise ValueError("invalid redis store URL (not shown: it may hold a password)") from None
    netloc = (f"{parts.username}@" if parts.username else "") + parts.netloc.rpartition("@")[2]
    prefixes = [v for k, v in query if k == "prefix"]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return client_url, prefixes[-1] if prefixes else None, shown


def _snapshot(reply: list[Any] | None) -> StoredDocument | None:
    if reply is None:
        return None
    (meta, cv, state, cp_meta), entries, conflicts = reply
    log = [msgpack.unpackb(e) for e in entries]
    return StoredDocument(
        meta=DocumentMeta.from_json(orjson.loads(meta)),
        checkpoint=Checkpoint(int(cv), state, orjson.loads(cp_meta)),
        entries=tuple(LogEntry(v, u, orjson.loads(m), r) for v, u, m, r in log),
        conflicts=tuple(PendingConflict.from_json(orjson.loads(c)) for c in conflicts),
    )
