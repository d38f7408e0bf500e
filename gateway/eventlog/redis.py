"""The recovery log in Redis, shared by every node started with ``--redis``: a client that
dropped from one node recovers on any other.

- Packets are entries of one stream (``<prefix>log``), appended by one Lua script per batch:
  ``XADD`` (Redis assigns the offsets: ordered across nodes), then trimming by age
  (``XTRIM MINID``: older than the window, by Redis's own clock) and count (``XTRIM MAXLEN``).
  The script records the last trimmed id (``<prefix>gone``), so :meth:`since` knows exactly
  whether every entry after an offset is still there. Both keys expire when no node has
  appended for twice the window.
- The room and skipped sockets are fields of their own, so a scan decodes only the payloads
  of the session's packets (msgpack: binary attachments stay bytes).
- Sessions are ``<prefix>session:<pid>`` keys with a TTL (``SET PX``), taken with ``GETDEL``.

Every call is bounded by ``timeout``; a failure raises (``gateway.offsets.Sequencer`` then
delivers without offsets and marks a gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.eventlog import (
    DEFAULT_MAX_ENTRIES,
    Entry,
    Membership,
    Missed,
    Packet,
    SavedSession,
    decode_payload,
    encode_payload,
    format_offset,
    parse_offset,
)

#: Entries read per ``XRANGE`` while scanning.
PAGE = 512

_APPEND = """
local function older(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function gone(id)
  local current = redis.call('GET', KEYS[2])
  if (not current) or older(current, id) then redis.call('SET', KEYS[2], id) end
end
local ids = {}
for i = 4, #ARGV, 4 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*',
    'r', ARGV[i], 's', ARGV[i + 1], 'p', ARGV[i + 2], 'g', ARGV[i + 3])
end
local t = redis.call('TIME')
local min = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
if min > 0 then
  local bound = string.format('%d', min)
  local old = redis.call('XREVRANGE', KEYS[1], '(' .. bound .. '-0', '-', 'COUNT', 1)
  if #old > 0 then
    gone(old[1][1])
    redis.call('XTRIM', KEYS[1], 'MINID', bound)
  end
end
local cap = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
if len > cap then
  local cut = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - cap)
  gone(cut[#cut][1])
  redis.call('XTRIM', KEYS[1], 'MAXLEN', cap)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return ids
"""


class RedisRecoveryLog:
    """The log on the Redis at ``url``, under ``prefix``."""

    synchronous = False

    def __init__(
        self,
        url: str,
        *,
        window: float,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        prefix: str = "collab:recovery:",
        timeout: float = 2.0,
    ) -> None:
        self.url = url
        self.window = window
        self.max_entries = max_entries
        self.timeout = timeout
        self._stream = prefix + "log"
        self._gone = prefix + "gone"
        self._session = prefix + "session:"
        self._redis: Redis | None = None
        self._append: Any = None

    def _client(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("RedisRecoveryLog is not started")
        return self._redis

    async def start(self) -> None:
        if self._redis is not None:
            raise RuntimeError("RedisRecoveryLog already started")
        self._redis = Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._append = self._redis.register_script(_APPEND)

    async def stop(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            await redis.aclose()

    async def append(self, packets: Sequence[Packet]) -> list[str]:
        if not packets:
            return []
        window_ms = int(self.window * 1000)
        args: list[Any] = [window_ms, self.max_entries, 2 * window_ms + 60_000]
        for p in packets:
            args += [p.room, "\x00".join(p.skip), encode_payload(p), "1" if p.gap else ""]
        self._client()
        ids = await self._append(keys=[self._stream, self._gone], args=args)
        return [i.decode() for i in ids]

    async def since(self, offset: str, membership: Membership) -> Missed | None:
        start = parse_offset(offset)
        if start is None:
            return None
        redis = self._client()
        entries: list[Entry] = []
        end = offset
        while True:
            page: Any = await redis.xrange(self._stream, min="(" + end, max="+", count=PAGE)
            fields: dict[bytes, bytes]
            for raw_id, fields in page:
                end = raw_id.decode()
                key = parse_offset(end)
                assert key is not None, end
                if fields.get(b"g"):
                    return None
                skip = fields.get(b"s", b"")
                packet = Packet(
                    "",
                    (),
                    fields.get(b"r", b"").decode(),
                    tuple(skip.decode().split("\x00")) if skip else (),
                )
                if membership.receives(packet, key):
                    entries.append(
                        Entry(end, decode_payload(fields[b"p"], packet.room, packet.skip))
                    )
            if len(page) < PAGE:
                break
        # Checked after the scan: trimming only moves ``gone`` forward, so if it is still at
        # or before ``offset`` now, the scan missed nothing.
        raw_gone: Any = await redis.get(self._gone)
        gone = parse_offset(raw_gone.decode()) if raw_gone else None
        if gone is not None and start < gone:
            return None
        return Missed(entries, format_offset(parse_offset(end) or start))

    async def save_session(self, session: SavedSession, ttl: float) -> None:
        data = msgpack.packb(session.to_wire(), use_bin_type=True)
        await self._client().set(self._session + session.pid, data, px=max(1, int(ttl * 1000)))

    async def take_session(self, pid: str) -> SavedSession | None:
        data: Any = await self._client().getdel(self._session + pid)
        if data is None:
            return None
        return SavedSession.from_wire(msgpack.unpackb(data, raw=False))
