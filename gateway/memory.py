"""Giving freed memory back to the operating system, and forgetting state nobody needs.

CPython keeps what it frees: objects of up to 512 bytes in its own arenas (1 MiB each, returned
only once entirely empty), larger ones (event payloads, websocket frames, Yjs states, zlib
buffers) in glibc's heap, whose free chunks stay resident until ``malloc_trim``. After a busy
period the gateway's own tables shrink back (recovery log, held sessions, live documents: each
expires on its own clock), but its RSS would not follow. Measured by ``benchmarks/soak.py``
(1,000 clients): after every retained state had expired, glibc held 14 MiB of free chunks and
``malloc_trim(0)`` gave back 11 MiB of them in one run, 1-2 MiB a minute in others (the rest of
the excess is CPython's partly used arenas, which no call returns). ``gc.collect()``
beforehand changed nothing (the cyclic collector had already run), so it is not done.

:func:`maintain` runs in the background (``gateway.app``): every :data:`INTERVAL` seconds it
prunes expired throttle and reconnection entries and trims the heap, in a worker thread (a
trim walks the heap: a few milliseconds for a hundred MiB, which the event loop need not wait
for). Where glibc is absent (musl, macOS, Windows) trimming is skipped quietly.

Debugging where memory goes (off by default): with ``COLLAB_MEMORY_DEBUG`` naming a folder,
:func:`install_debug` makes the gateway write, on each ``SIGUSR1``, a numbered report there:
CPython's allocator statistics (``sys._debugmallocstats``: arenas, pools, free blocks per size
class), a census (the gateway's tables and their sizes, the objects the garbage collector
tracks by type, and how the small ones spread over the allocator's 1-MiB address ranges: a
range that holds a few live objects pins its arena), and a ``tracemalloc`` snapshot when the
gateway runs with ``PYTHONTRACEMALLOC``. ``benchmarks/soak.py --debug-memory`` uses it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import signal
import sys
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger("gateway.memory")

#: Seconds between two passes.
INTERVAL = 60.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once; None where it cannot be."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is no such function."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> int:
        return int(trim(0))

    return call


async def maintain(gw: Gateway, interval: float = INTERVAL) -> None:
    """Forever: prune, then give freed heap memory back (cancelled with the gateway's tasks)."""
    trim = malloc_trim()
    while True:
        await asyncio.sleep(interval)
        try:
            gw.typing.prune()
            gw.metrics.prune()
            if trim is not None:
                await asyncio.to_thread(trim)
        except Exception:  # never let maintenance die
            log.exception("memory maintenance failed")


#: The environment variable naming the folder of :func:`install_debug`'s reports.
DEBUG_ENV = "COLLAB_MEMORY_DEBUG"
#: Objects larger than this come from glibc, not from CPython's arenas.
SMALL_OBJECT = 512
ARENA_BITS = 20


def install_debug(gw: Gateway) -> Path | None:
    """With :data:`DEBUG_ENV` set: write a report (:func:`dump`) on every ``SIGUSR1``; the
    folder, or None (nothing installed)."""
    folder = os.environ.get(DEBUG_ENV)
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    count = iter(range(1, 1_000_000))

    def on_signal() -> None:
        try:
            dump(gw, path, f"{next(count):02d}")
        except Exception:
            log.exception("memory debug report failed")

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_signal)
    log.warning("memory debug reports on SIGUSR1 go to %s", path)
    return path


def dump(gw: Gateway, folder: Path, name: str) -> None:
    """Write ``<name>-mallocstats.txt``, ``<name>-census.json`` and, when tracing,
    ``<name>.tracemalloc`` to ``folder``; ``<name>.done`` last."""
    with _stderr_to(folder / f"{name}-mallocstats.txt"):
        sys._debugmallocstats()
    census = {
        "tables": tables(gw),
        "mappings": resident_mappings(),
        "mallinfo": mallinfo(),
        **object_census(),
        "referrers": referrer_chains(),
    }
    if os.environ.get(DEBUG_ENV + "_COLLECT"):
        census["garbage"] = garbage_census()
    (folder / f"{name}-census.json").write_text(json.dumps(census, indent=1))
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(folder / f"{name}.tracemalloc"))
    (folder / f"{name}.done").write_text("")


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """File descriptor 2 (where C code prints) redirected to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with path.open("wb") as f:
            os.dup2(f.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _len(obj: Any, *path: Any) -> int | None:
    with contextlib.suppress(Exception):
        for step in path:
            obj = obj[step] if not isinstance(step, str) else getattr(obj, step)
        return len(obj)
    return None


def tables(gw: Gateway) -> dict[str, Any]:
    """The sizes of what the gateway and the libraries under it keep per socket, room or
    document (None where a table is not there)."""
    manager = gw.sio.manager
    eio = gw.sio.eio
    recovery = gw.recovery
    rooms = getattr(manager, "rooms", {}).get("/", {})
    out: dict[str, Any] = {
        "sessions": len(gw.sessions),
        "sio.rooms": len(rooms),
        "sio.room members": sum(len(r) for r in rooms.values()),
        "sio.eio_to_sid": _len(manager, "eio_to_sid"),
        "sio.callbacks": _len(manager, "callbacks"),
        "sio.pending_disconnect": _len(manager, "pending_disconnect"),
        "sio.environ": _len(gw.sio, "environ"),
        "eio.sockets": _len(eio, "sockets"),
        "recovery": recovery.stats(),
        "recovery.handshakes": _len(recovery, "_handshakes"),
        "recovery.sockets": _len(recovery, "_sockets"),
        "recovery.by_eio": _len(recovery, "_by_eio"),
        "recovery.holds": _len(recovery, "_holds"),
        "recovery.log entries": _len(recovery, "log", "_entries"),
        "recovery.log sessions": _len(recovery, "log", "_sessions"),
        "engine.live": gw.engine.live_documents,
        "engine.locks": _len(gw.engine, "_locks"),
        "engine.tails": _len(gw.engine, "_tails"),
        "engine.tasks": _len(gw.engine, "_tasks"),
        "typing": len(gw.typing),
        "metrics.closed_at": _len(gw.metrics, "_closed_at"),
        "gateway.tasks": _len(gw, "_tasks"),
        "asyncio.tasks": len(asyncio.all_tasks()),
        "gc.counts": gc.get_count(),
        "gc.stats": gc.get_stats(),
    }
    with contextlib.suppress(Exception):
        out["guard.entries"] = gw.guard.entries()
    return out


def object_census(top: int = 60) -> dict[str, Any]:
    """The objects the garbage collector tracks and the untracked ones they refer to
    directly (strings, numbers, bytes), by type; and the small ones by 1-MiB address range
    (an arena spans one or two), the sparsest ranges first, with their types. (It allocates
    as it counts, after listing the objects, so that its own are not counted; the process
    is not quite the same afterwards.)"""
    objects = gc.get_objects()
    seen: set[int] = set()
    types: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    ranges: dict[int, Counter[str]] = {}
    range_bytes: Counter[int] = Counter()

    containers: dict[int, Any] = {}  # id -> a container over 4 KiB

    def count(obj: Any) -> None:
        name = type(obj).__qualname__
        size = sys.getsizeof(obj, 0)
        types[name] += 1
        sizes[name] += size
        if size > 4096 and isinstance(obj, CONTAINERS):
            containers[id(obj)] = obj
        if size <= SMALL_OBJECT:
            r = id(obj) >> ARENA_BITS
            ranges.setdefault(r, Counter())[name] += 1
            range_bytes[r] += size

    for obj in objects:
        if id(obj) not in seen:
            seen.add(id(obj))
            count(obj)
        for ref in gc.get_referents(obj):
            if not gc.is_tracked(ref) and id(ref) not in seen:
                seen.add(id(ref))
                count(ref)
    del objects
    held = sorted(containers.values(), key=lambda o: -sys.getsizeof(o, 0))[:20]
    containers.clear()
    big = [
        {"type": type(o).__qualname__, "bytes": sys.getsizeof(o, 0), "len": len(o)} for o in held
    ]
    for entry, o in zip(big, held, strict=True):
        entry["in"] = _holder(o, held)
    del held
    sparse = sorted(ranges, key=lambda r: range_bytes[r])
    return {
        "objects": sum(types.values()),
        "bytes": sum(sizes.values()),
        "types": [[t, n, sizes[t]] for t, n in types.most_common(top)],
        "largest_containers": big,
        "ranges": len(ranges),
        "range_bytes_histogram": _histogram(range_bytes.values()),
        "sparse_ranges": [
            {
                "range": hex(r << ARENA_BITS),
                "bytes": range_bytes[r],
                "types": ranges[r].most_common(8),
            }
            for r in sparse[:top]
        ],
    }


def resident_mappings() -> dict[str, Any]:
    """Resident KiB by kind of mapping (``/proc/self/smaps``): glibc's main heap, anonymous
    mappings (CPython's arenas, glibc's thread arenas and large blocks: the kernel merges
    neighbours, so sizes do not tell them apart), files; empty where there is no ``/proc``."""
    kinds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    kind = "other"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                start, end = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                if name == "[heap]":
                    kind = "heap"
                elif name.startswith("["):
                    kind = name
                elif name:
                    kind = "files"
                else:
                    kind = "anonymous"
                counts[kind] += 1
                sizes[kind] += (end - start) // 1024
            elif head[0] == "Rss:":
                kinds[kind] += int(head[1])
    return {
        k: {"rss_kib": kinds[k], "size_kib": sizes[k], "mappings": counts[k]} for k in sorted(kinds)
    }


def mallinfo() -> dict[str, int]:
    """glibc's ``mallinfo2()`` over all its arenas: bytes taken from the system by brk/sbrk
    (``arena``) and mmap (``hblkhd``), in use (``uordblks``), free (``fordblks``), trimmable at
    the top (``keepcost``); empty without glibc 2.33+."""

    names = (
        "arena",
        "ordblks",
        "smblks",
        "hblks",
        "hblkhd",
        "usmblks",
        "fsmblks",
        "uordblks",
        "fordblks",
        "keepcost",
    )

    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in names]

    fn = getattr(_libc(), "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = Info
    info = fn()
    return {name: int(getattr(info, name)) for name in names}


#: Types whose instances exist per connection: any left once every client has gone is
#: a candidate leak (or cyclic garbage not yet collected), whose referrers are reported.
PER_CONNECTION = (
    "AsyncSocket",
    "PseudoSocket",
    "RequestHandler",
    "WebSocketResponse",
    "Request",
    "traceback",
    "OSError",
    "Task",
    "frame",
    "Session",
    "Tracked",
)


def _describe(obj: Any) -> str:
    name = type(obj).__qualname__
    if isinstance(obj, dict):
        keys = list(obj)[:4]
        return f"dict{keys!r}"[:120]
    if type(obj).__name__ == "frame":
        return f"frame {obj.f_code.co_qualname} {obj.f_code.co_filename}:{obj.f_lineno}"
    if type(obj).__name__ == "coroutine":
        return f"coroutine {obj.__qualname__}"
    if type(obj).__name__ == "cell":
        return "cell"
    if type(obj).__name__ == "function":
        return f"function {obj.__qualname__}"
    return name


_OWN: set[Any] = set()


def referrer_chains(per_type: int = 3, depth: int = 6) -> dict[str, list[list[str]]]:
    """For a few instances of each :data:`PER_CONNECTION` type, a chain of referrers (the
    first one that is not this function's own bookkeeping, ``depth`` steps up): what keeps
    them alive."""
    wanted = set(PER_CONNECTION)
    found: dict[str, list[Any]] = {}
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in wanted and len(found.setdefault(name, [])) < per_type:
            found[name].append(obj)
    out: dict[str, list[list[str]]] = {}
    for name, objs in found.items():
        chains = out.setdefault(name, [])
        for obj in objs:
            chain = [_describe(obj)]
            seen = {id(obj), id(objs), id(found), id(chains)}
            current = obj
            for _ in range(depth):
                refs = [
                    r
                    for r in gc.get_referrers(current)
                    if id(r) not in seen and not (type(r).__name__ == "frame" and r.f_code in _OWN)
                ]
                if not refs:
                    chain.append("(no referrer: garbage)")
                    break
                current = refs[0]
                seen.add(id(current))
                more = f" (+{len(refs) - 1})" if len(refs) > 1 else ""
                chain.append(_describe(current) + more)
            chains.append(chain)
        del objs[:]
    return out


def garbage_census() -> dict[str, Any]:
    """Collect, keeping what was unreachable (``gc.DEBUG_SAVEALL``), count it by type, then
    free it: how much of what lingered was cyclic garbage (this changes the process: it runs
    a full collection)."""
    flags = gc.get_debug()
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
    finally:
        gc.set_debug(flags)
    types = Counter(type(o).__qualname__ for o in gc.garbage)
    del gc.garbage[:]
    gc.collect()
    return {"unreachable": found, "types": types.most_common(40)}


#: The containers :func:`object_census` lists when large (they never shrink by themselves).
CONTAINERS = (dict, set, list, collections.deque, bytearray)


def _holder(obj: Any, *ignore: Any) -> str:
    """Where ``obj`` is kept: ``Type.attribute``, ``module.name``, ``Type[key]``, or its
    referrers' types (``ignore``: lists of the caller's that hold it too)."""
    skip = {id(x) for x in ignore}
    names = []
    for ref in gc.get_referrers(obj):
        if id(ref) in skip or type(ref).__name__ in ("frame", "cell"):
            continue
        if isinstance(ref, dict):
            key = next((k for k, v in ref.items() if v is obj), None)
            owners = [o for o in gc.get_referrers(ref) if getattr(o, "__dict__", None) is ref]
            if owners:
                names.append(f"{type(owners[0]).__qualname__}.{key}")
            elif "__name__" in ref:
                names.append(f"{ref['__name__']}.{key}")
            else:
                names.append(f"dict[{key!r}]")
        else:
            attrs = getattr(ref, "__dict__", None)
            key = next((k for k, v in attrs.items() if v is obj), None) if attrs else None
            if key is None:
                slots = getattr(type(ref), "__slots__", ())
                key = next((k for k in slots if getattr(ref, k, None) is obj), None)
            names.append(type(ref).__qualname__ + (f".{key}" if key else ""))
    return ", ".join(names[:4]) or "?"


def _histogram(values: Any) -> dict[str, int]:
    """How many values fall under 4 KiB, 16 KiB, 64 KiB, 256 KiB, 1 MiB, more."""
    edges = (4096, 16384, 65536, 262144, 1 << 20)
    out = {f"<{e // 1024}K": 0 for e in edges} | {">=1M": 0}
    for v in values:
        for e in edges:
            if v < e:
                out[f"<{e // 1024}K"] += 1
                break
        else:
            out[">=1M"] += 1
    return out


_OWN.update({referrer_chains.__code__, object_census.__code__, dump.__code__})

__all__ = [
    "DEBUG_ENV",
    "INTERVAL",
    "dump",
    "install_debug",
    "maintain",
    "malloc_trim",
]
