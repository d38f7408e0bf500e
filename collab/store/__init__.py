"""Document stores: the :class:`Store` Protocol, its backends, and :func:`open_store`, which
picks a backend from a URL so that configuration is one string.

``memory://`` is the single-process reference, a SQLite file the embedded durable default, and
``redis://`` the multi-node one.
"""

from __future__ import annotations

from collab.store.base import Store
from collab.store.memory import MemoryStore
from collab.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "open_store"]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def open_store(url: str) -> Store:
    """The store a URL names, not yet started (``await store.start()`` or ``async with``).

    - ``memory://`` — :class:`MemoryStore`;
    - ``sqlite:///abs/path.db`` (absolute), ``sqlite://relative.db`` (relative to the working
      directory), or a bare path ending in ``.db``, ``.sqlite`` or ``.sqlite3`` —
      :class:`SQLiteStore`;
    - ``redis://`` / ``rediss://`` — :class:`collab.store.redis.RedisStore` (``?prefix=``
      sets its key prefix).

    Anything else is a ``ValueError``. Messages never repeat the URL, which may hold a password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        if url.lower().endswith(_SQLITE_SUFFIXES):
            return SQLiteStore(url)
        raise ValueError(
            "store URL has no scheme and is not a .db/.sqlite/.sqlite3 path; expected "
            "memory://, sqlite:///path.db, a *.db path or redis://host"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise ValueError("memory:// takes no host or path")
        return MemoryStore()
    if scheme == "sqlite":
        if not rest:
            raise ValueError("sqlite:// needs a path: sqlite:///abs/path.db or sqlite://rel.db")
        return SQLiteStore(rest)
    if scheme in ("redis", "rediss"):
        return _open_redis(url)
    raise ValueError(
        f"unknown store URL scheme {scheme!r}; expected memory://, sqlite:// or redis://"
    )


def _open_redis(url: str) -> Store:
    """The one place the Redis backend plugs in (import it lazily: it pulls in a client).

    A malformed URL is a ``ValueError`` that does not repeat it.
    """
    from collab.store.redis import RedisStore

    return RedisStore(url)
