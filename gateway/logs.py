"""Structured logs: one JSON object per line, to stderr and optionally a file.

The gateway logs one line per connection, disconnection, refused handshake and conflict
(:func:`event`), plus errors with their traces; aiohttp's per-request access log is off (every
long-polling request would be a line). :func:`configure` is called by the CLI; an embedding
application keeps its own logging setup and still gets the fields in ``record.fields``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson

from collab.model import iso

log = logging.getLogger("gateway")


def event(name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line: ``{"msg": name, **fields}``."""
    log.log(level, name, extra={"fields": fields})


class JsonFormatter(logging.Formatter):
    """Formats a record as a single JSON line (timestamp, level, logger, msg, fields, trace)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def configure(level: str = "INFO", log_file: str | None = None) -> None:
    """Route every log record through :class:`JsonFormatter` to stderr (and ``log_file``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    formatter = JsonFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
