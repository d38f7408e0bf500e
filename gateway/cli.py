"""``collab-gateway``: serve the gateway, or mint a token to try it.

::

    collab-gateway [serve] [--port 3001] [--store collab.db] [--jwt-secret S] ...
    collab-gateway token --sub U --company C [--name N] [--role R] [--ttl SECONDS]

Every flag is also a ``COLLAB_*`` variable (``gateway.config``). Serving without a JWT secret
or public key is refused unless ``--dev``, which generates a throwaway secret and prints a
ready token.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

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
        web.run_app(app, host=settings.host, port=settings.port, access_log=None, print=None)
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
