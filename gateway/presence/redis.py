"""Presence in Redis, shared by every node started with the same ``--redis``: each backend
operation is one Lua script, atomic on the server, so of several nodes reaping one dead node
exactly one gets (and announces) each of its users."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.presence.base import DEFAULT_TTL, Conn, NodePresence, SyncReply, User, unique

# Redis keys, under a prefix P: P.."nodes" (zset node -> deadline, ms of Redis TIME),
# P.."node:"..node (set of JSON [company, user, sid]), P.."users:"..company (hash user ->
# count), P.."reaped:"..node (tombstone of a reaped node, so that it can tell "reaped" from
# "lost" when it comes back). Scripts compute the per-company and per-node key names, so
# this needs a standalone or Sentinel Redis, not a Redis Cluster.
_LUA_LIB = """
local P = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function incr(conn, by)
  local c = cjson.decode(conn)
  local key = P .. 'users:' .. c[1]
  local n = redis.call('HINCRBY', key, c[2], by)
  if n <= 0 then redis.call('HDEL', key, c[2]) end
  return n, c
end
local function registered(node)
  return redis.call('ZSCORE', P .. 'nodes', node) ~= false
end
local function drop(node, out)
  local key = P .. 'node:' .. node
  for _, conn in ipairs(redis.call('SMEMBERS', key)) do
    local n, c = incr(conn, -1)
    if n == 0 then out[#out + 1] = c[1]; out[#out + 1] = c[2] end
  end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'nodes', node)
end
"""

# ARGV: prefix, node, conn
_ADD = """
if not registered(ARGV[2]) then return false end
if redis.call('SADD', P .. 'node:' .. ARGV[2], ARGV[3]) == 0 then return 0 end
return (incr(ARGV[3], 1))
"""

_REMOVE = """
if not registered(ARGV[2]) then return false end
if redis.call('SREM', P .. 'node:' .. ARGV[2], ARGV[3]) == 0 then return -1 end
local n = incr(ARGV[3], -1)
if n < 0 then return 0 end
return n
"""

# ARGV: prefix, node, ttl ms
_BEAT = """
if not registered(ARGV[2]) then return 0 end
redis.call('ZADD', P .. 'nodes', now_ms() + tonumber(ARGV[3]), ARGV[2])
return 1
"""

# ARGV: prefix, node, ttl ms, conn...
_SYNC = """
local node = ARGV[2]
local state = 'known'
if not registered(node) then
  if redis.call('DEL', P .. 'reaped:' .. node) == 1 then state = 'reaped' else state = 'lost' end
end
local key = P .. 'node:' .. node
local want = {}
for i = 4, #ARGV do want[ARGV[i]] = true end
local firsts, lasts = {}, {}
for _, conn in ipairs(redis.call('SMEMBERS', key)) do
  if not want[conn] then
    redis.call('SREM', key, conn)
    local n, c = incr(conn, -1)
    if n == 0 then lasts[#lasts + 1] = c[1]; lasts[#lasts + 1] = c[2] end
  end
end
for i = 4, #ARGV do
  if redis.call('SADD', key, ARGV[i]) == 1 then
    local n, c = incr(ARGV[i], 1)
    if n == 1 then firsts[#firsts + 1] = c[1]; firsts[#firsts + 1] = c[2] end
  end
end
redis.call('ZADD', P .. 'nodes', now_ms() + tonumber(ARGV[3]), node)
return {state, firsts, lasts}
"""

# ARGV: prefix, tombstone ttl ms
_REAP = """
local gone = {}
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', '(' .. now_ms(), 'LIMIT', 0, 64)
for _, node in ipairs(dead) do
  drop(node, gone)
  redis.call('SET', P .. 'reaped:' .. node, '1', 'PX', ARGV[2])
end
return gone
"""

# ARGV: prefix, node
_LEAVE = """
local gone = {}
drop(ARGV[2], gone)
return gone
"""

_SCRIPTS = dict(add=_ADD, remove=_REMOVE, beat=_BEAT, sync=_SYNC, reap=_REAP, leave=_LEAVE)


class RedisBackend:
    """Presence storage in Redis, shared by every node; each operation one Lua script.

    ``timeout`` bounds every call (redis-py does not retry: a failed call's caller re-syncs).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "collab:presence:",
        timeout: float = 2.0,
        tombstone_ttl: float = 24 * 3600,
    ) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self.tombstone_ttl = tombstone_ttl
        self._redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._scripts = {n: self._redis.register_script(_LUA_LIB + s) for n, s in _SCRIPTS.items()}

    async def _run(self, name: str, *args: Any) -> Any:
        call = self._scripts[name](keys=[], args=[self.prefix, *args])
        return await asyncio.wait_for(call, self.timeout)

    async def add(self, node: str, conn: Conn) -> int | None:
        n = await self._run("add", node, _conn(conn))
        return None if n is None else int(n)

    async def remove(self, node: str, conn: Conn) -> int | None:
        n = await self._run("remove", node, _conn(conn))
        return None if n is None else int(n)

    async def beat(self, node: str, ttl: float) -> bool:
        return bool(await self._run("beat", node, int(ttl * 1000)))

    async def sync(self, node: str, ttl: float, conns: Iterable[Conn]) -> SyncReply:
        state, firsts, lasts = await self._run(
            "sync", node, int(ttl * 1000), *(_conn(c) for c in conns)
        )
        return SyncReply(state.decode(), _pairs(firsts), _pairs(lasts))

    async def reap(self) -> list[User]:
        return _pairs(await self._run("reap", int(self.tombstone_ttl * 1000)))

    async def leave(self, node: str) -> list[User]:
        return _pairs(await self._run("leave", node))

    async def online(self, company_id: str) -> list[str]:
        users: list[bytes] = await asyncio.wait_for(
            self._redis.hkeys(f"{self.prefix}users:{company_id}"),  # type: ignore[arg-type]
            self.timeout,
        )
        return sorted(u.decode() for u in users)

    async def ping(self) -> None:
        await asyncio.wait_for(self._redis.ping(), self.timeout)

    async def close(self) -> None:
        await self._redis.aclose()


def _conn(conn: Conn) -> bytes:
    return orjson.dumps(list(conn))


def _pairs(flat: list[bytes]) -> list[User]:
    it = iter(x.decode() for x in flat)
    return unique(list(zip(it, it, strict=True)))


class RedisPresence(NodePresence):
    """Presence shared through Redis by every node started with the same ``--redis``."""

    def __init__(
        self, url: str, *, node: str, ttl: float = DEFAULT_TTL, prefix: str = "collab:presence:"
    ) -> None:
        super().__init__(RedisBackend(url, prefix=prefix), node=node, ttl=ttl)
