"""Structured logs: one JSON object per line, fields included, traces kept."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from gateway import logs


def test_json_lines_to_a_file(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    path = tmp_path / "gateway.log"
    try:
        logs.configure("INFO", str(path))
        logs.event("connect", sid="s1", userId="u1", companyId="c1")
        try:
            raise ValueError("boom")
        except ValueError:
            logs.log.exception("failed")
        for handler in root.handlers:
            handler.flush()
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    connect, failed = lines
    assert connect["msg"] == "connect"
    assert (connect["sid"], connect["userId"], connect["companyId"]) == ("s1", "u1", "c1")
    assert connect["level"] == "info" and connect["logger"] == "gateway"
    assert connect["ts"].endswith("Z")
    assert failed["level"] == "error" and "ValueError: boom" in failed["exc"]
