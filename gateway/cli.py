"""``collab-gateway``: serve the gateway, mint a token to try it, or show a document's history.

::

    collab-gateway [serve] [--port 3001] [--store collab.db] [--jwt-secret S] ...
    collab-gateway token --sub U --company C [--name N] [--role R] [--ttl SECONDS]
    collab-gateway history DOCUMENT [--kind resource] [--store collab.db] [--json] [--limit N]

Every flag is also a ``COLLAB_*`` variable (``gateway.config``). Serving without a JWT secret
or public key is refused unless ``--dev``, which generates a throwaway secret and prints a
ready token. ``--dev`` also serves the demo page at ``/demo`` (``--no-demo`` to turn it off,
``--demo`` to serve it without ``--dev``).

``history`` reads the configured store directly (no gateway needed; with SQLite it may run
beside a gateway using the same file: WAL lets both in).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web

from gateway import logs
from gateway.auth import mint_token
from gateway.config import Settings, SettingsError, add_arguments, settings_from

DEV_USER, DEV_COMPANY, DEV_TTL = "dev-user", "dev-company", 24 * 3600
MIN_SECRET_BYTES = 32

NO_KEY = (
    "refusing to start: no JWT secret or public key configured. Set --jwt-secret "
    "(COLLAB_JWT_SECRET) or --jwt-public-key-file (COLLAB_JWT_PUBLIC_KEY_FILE), or pass --dev "
    "to generate a throwaway secret for trying things out."
)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``collab-gateway`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    if args[:1] == ["token"]:
        return token(args[1:], env)
    if args[:1] == ["history"]:
        return history(args[1:], env)
    if args[:1] == ["serve"]:
        args = args[1:]
    return serve(args, env)


def _settings(
    parser: argparse.ArgumentParser, args: Sequence[str], env: Mapping[str, str]
) -> tuple[Settings, argparse.Namespace]:
    namespace = parser.parse_args(list(args))
    try:
        return settings_from(namespace, env), namespace
    except SettingsError as exc:
        parser.error(str(exc))


def serve(args: Sequence[str], env: Mapping[str, str]) -> int:
    """Run the gateway until interrupted."""
    parser = argparse.ArgumentParser(
        prog="collab-gateway", description="Serve the collab Socket.IO gateway."
    )
    add_arguments(parser)
    settings, _ = _settings(parser, args, env)
    if not settings.has_jwt_key:
        if not settings.dev:
            print(f"collab-gateway: {NO_KEY}", file=sys.stderr)
            return 2
        settings = replace(settings, jwt_secret=secrets.token_urlsafe(32))
        _print_dev_token(settings)
    elif settings.dev and settings.demo_enabled and settings.jwt_secret:
        print(
            "collab-gateway: warning: --dev with a configured secret: the demo page's "
            "POST /demo/token mints tokens signed with it for anyone who can reach this port",
            file=sys.stderr,
        )
    if settings.demo_enabled:
        host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
        print(f"demo page: http://{host}:{settings.port}/demo", flush=True)
    logs.configure(settings.log_level, settings.log_file)
    _warn_short_secret(settings)
    from gateway.app import create_app  # imported late: `token` needs none of the server

    try:
        app = create_app(settings)
    except (SettingsError, ValueError) as exc:
        print(f"collab-gateway: {exc}", file=sys.stderr)
        return 2
    logs.event("starting", host=settings.host, port=settings.port, store=_store_kind(settings))
    try:
        loop = new_event_loop(settings.event_loop)
    except SettingsError as exc:
        print(f"collab-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        web.run_app(
            app, host=settings.host, port=settings.port, access_log=None, print=None, loop=loop
        )
    except OSError as exc:  # the port is taken, the interface does not exist, ...
        print(
            f"collab-gateway: cannot listen on {settings.host}:{settings.port}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


def token(args: Sequence[str], env: Mapping[str, str]) -> int:
    """Print a token signed with the configured secret."""
    parser = argparse.ArgumentParser(
        prog="collab-gateway token",
        description="Print a JWT signed with the configured secret (--jwt-secret).",
    )
    parser.add_argument("--sub", required=True, help="user id (sub claim)")
    parser.add_argument("--company", required=True, help="company id (companyId claim)")
    parser.add_argument("--name", help="display name (name claim)")
    parser.add_argument("--role", help="role claim (service: may POST /api/events)")
    parser.add_argument("--ttl", type=float, default=3600.0, help="seconds valid (default 3600)")
    add_arguments(parser)
    settings, ns = _settings(parser, args, env)
    if not settings.jwt_secret:
        print(
            "collab-gateway token: needs the shared secret (--jwt-secret or COLLAB_JWT_SECRET); "
            "tokens for a public key are signed by their private key's owner",
            file=sys.stderr,
        )
        return 2
    algorithm = next((a for a in settings.jwt_algorithms if a.startswith("HS")), "HS256")
    print(
        mint_token(
            settings.jwt_secret,
            sub=ns.sub,
            company_id=ns.company,
            name=ns.name,
            role=ns.role,
            ttl=ns.ttl,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithm=algorithm,
        )
    )
    return 0


def history(args: Sequence[str], env: Mapping[str, str]) -> int:
    """Print a document's retained version history from the configured store."""
    parser = argparse.ArgumentParser(
        prog="collab-gateway history",
        description="Print a document's version history (who wrote each version, when, how, "
        "and what conflicted), read from the store directly.",
    )
    parser.add_argument("document", metavar="DOCUMENT", help="the document (or resource) id")
    parser.add_argument(
        "--kind", choices=("document", "resource"), default="document", help="default document"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per version")
    parser.add_argument("--limit", type=int, metavar="N", help="only the last N versions")
    parser.add_argument(
        "--store",
        metavar="STORE",
        help="the store to read, as the gateway's --store (env COLLAB_STORE; default collab.db)",
    )
    settings, ns = _settings(parser, args, env)
    from collab.store import SQLiteStore, open_store

    try:
        store = open_store(settings.store)
        if isinstance(store, SQLiteStore) and not Path(store.path).is_file():
            # opening it would create an empty database: say what is wrong instead
            raise ValueError(f"no store file {store.path!r} (set --store or COLLAB_STORE)")
        return asyncio.run(_history(store, ns.kind, ns.document, ns.json, ns.limit))
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"collab-gateway history: {exc}", file=sys.stderr)
        return 2


async def _history(store: Any, kind: Any, doc_id: str, as_json: bool, limit: int | None) -> int:
    from collab.engine import Engine
    from collab.errors import CollabError
    from collab.model import doc_key

    async with Engine(store) as engine:
        try:
            meta, rows = await engine.history(kind, doc_id)
        except CollabError as exc:
            print(f"collab-gateway history: {exc.message}", file=sys.stderr)
            return 1
        stored = await engine.store.load(doc_key(kind, doc_id))
    conflicts = list(stored.conflicts) if stored else []
    floor = stored.checkpoint.version if stored else 0
    if limit is not None and limit >= 0:
        rows = rows[-limit:] if limit else []
    if as_json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k != "clocks"}, ensure_ascii=False))
        return 0
    print(_history_header(meta, floor, stored.version if stored else 0, len(rows)))
    if rows:
        print()
        print(_table(rows))
    if conflicts:
        print()
        print(f"pending conflicts ({len(conflicts)}):")
        for c in conflicts:
            who = _who(c.author.user_id, c.author.name)
            fields = ", ".join(c.conflicted_fields) or "-"
            print(f"  {c.conflict_id}  by {who} at {_when(c.at)}, from v{c.base_version}: {fields}")
    return 0


def _history_header(meta: Any, floor: int, version: int, shown: int) -> str:
    fields = ", ".join(meta.text_fields) or "none"
    lines = [
        f"{meta.kind} {meta.id!r} of company {meta.company_id!r}: version {version}, "
        f"strategy {meta.strategy}, text fields: {fields}",
        f"created {_when(meta.created_at)} UTC by {meta.created_by or '?'}",
    ]
    if floor > 0:
        lines.append(f"versions up to {floor} are compacted into a checkpoint (not listed)")
    if version == 0:
        lines.append("no versions written yet")
    elif shown == 0:
        lines.append("no versions to show")
    return "\n".join(lines)


_COLUMNS = ("version", "when (UTC)", "who", "via", "status", "base", "conflicted", "opId")


def _table(rows: list[dict[str, Any]]) -> str:
    cells = [
        (
            str(r.get("version", "")),
            _when(r.get("at")),
            _who(r.get("by"), r.get("name")),
            str(r.get("via") or "-"),
            str(r.get("status") or "-"),
            str(r.get("base", "-")),
            ", ".join(r.get("conflicted") or ()) or "-",
            str(r.get("opId") or "-"),
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(_COLUMNS)]
    right = {0, 5}  # numbers

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(_COLUMNS), line(["-" * w for w in widths]), *map(line, cells)])


def _when(ms: Any) -> str:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _who(user_id: Any, name: Any) -> str:
    user_id = str(user_id or "?")
    return f"{name} ({user_id})" if name and name != user_id else user_id


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The event loop ``--event-loop`` asks for: uvloop when installed (``auto``)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise SettingsError("--event-loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _print_dev_token(settings: Settings) -> None:
    assert settings.jwt_secret
    dev_token = mint_token(
        settings.jwt_secret,
        sub=DEV_USER,
        company_id=DEV_COMPANY,
        name="Dev User",
        ttl=DEV_TTL,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    print(
        "collab-gateway --dev: generated a throwaway JWT secret (tokens die with this process)\n"
        f"token for user {DEV_USER} of company {DEV_COMPANY}, valid 24 h:\n{dev_token}",
        flush=True,
    )


def _warn_short_secret(settings: Settings) -> None:
    secret = settings.jwt_secret
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        logs.event(
            "short JWT secret",
            level=logging.WARNING,
            bytes=len(secret.encode()),
            recommended=MIN_SECRET_BYTES,
        )
    # Said once above; PyJWT would otherwise repeat it on every token.
    warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


def _store_kind(settings: Settings) -> str:
    scheme, sep, _ = settings.store.partition("://")
    return scheme if sep else "sqlite"


if __name__ == "__main__":
    raise SystemExit(main())
