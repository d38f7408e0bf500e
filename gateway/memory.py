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
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger("gateway.memory")

#: Seconds between two passes.
INTERVAL = 60.0


def malloc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is no such function."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
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


__all__ = ["INTERVAL", "maintain", "malloc_trim"]
