"""The demo page (``/demo``) and the small HTTP API it needs.

Installed by ``gateway.app.create_app`` only when ``Settings.demo_enabled`` (``--demo``, or
``--dev`` without ``--no-demo``). The page itself is static: built from ``web/`` by
``npm run build`` into ``gateway/static/demo/`` (committed, so no Node is needed at run time).

Routes:

- ``GET /demo`` (and ``/demo/``): the page; ``/demo/assets/*`` its script and styles.
- ``GET /demo/config``: ``{tokens}`` — whether the page may mint its own tokens.
- ``POST /demo/token`` ``{user, company, name?}``: a user token signed with the configured
  secret. **Only in dev mode** (``--dev``): without it the route does not exist (404), so a
  gateway with a real secret never hands out tokens, even with ``--demo``. Never a ``role``.
- ``GET /api/documents``: the caller's company's documents (id, strategy, text fields,
  version, title), newest first.
- ``GET /api/presence``: the caller's company's users with at least one connection (names as
  known to this node's sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from collab.errors import CollabError, ErrorCode, invalid
from gateway.auth import mint_token
from gateway.context import GATEWAY
from gateway.routes.middleware import authenticate
from gateway.wire import parse_payload

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "demo"
#: Lifetime of a demo token: a working day.
TOKEN_TTL = 8 * 3600
#: Longest user id, company id or name a demo token accepts.
MAX_ID = 64
#: Documents listed at most (the newest).
MAX_LISTED = 200

#: The page loads only its own script and styles and talks only to this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
NOT_BUILT = (
    "The demo page is not built. Run `npm ci && npm run build` in web/ "
    "(it writes gateway/static/demo/)."
)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    user: str
    company: str
    name: str | None = None


def install(app: web.Application) -> None:
    """Add the demo routes (the token route only in dev mode)."""
    gw = app[GATEWAY]
    app.router.add_get("/demo", page)
    app.router.add_get("/demo/", page)
    app.router.add_get("/demo/config", config)
    if gw.settings.dev:
        app.router.add_post("/demo/token", token)
    app.router.add_get("/api/documents", list_documents)
    app.router.add_get("/api/presence", presence)
    assets = STATIC_DIR / "assets"
    if assets.is_dir():
        app.router.add_static("/demo/assets", assets)


async def page(request: web.Request) -> web.StreamResponse:
    index = STATIC_DIR / "index.html"
    if not index.is_file():
        return web.Response(status=503, text=NOT_BUILT)
    return web.FileResponse(
        index,
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def config(request: web.Request) -> web.Response:
    return web.json_response({"tokens": request.app[GATEWAY].settings.dev})


async def token(request: web.Request) -> web.Response:
    settings = request.app[GATEWAY].settings
    if not settings.dev or not settings.jwt_secret:  # belt and braces: not even registered
        raise CollabError(ErrorCode.NOT_FOUND, "demo tokens exist only in dev mode")
    try:
        body = await request.json()
    except ValueError:
        raise invalid("the body must be a JSON object") from None
    p = parse_payload(TokenRequest, body)
    for name, value in (("user", p.user), ("company", p.company), ("name", p.name)):
        if value is not None and not (0 < len(value.strip()) <= MAX_ID):
            raise invalid(f"{name} must be 1 to {MAX_ID} characters", field=name)
    user, company = p.user.strip(), p.company.strip()
    name = p.name.strip() if p.name else user
    signed = mint_token(
        settings.jwt_secret,
        sub=user,
        company_id=company,
        name=name,
        ttl=TOKEN_TTL,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )
    return web.json_response({"token": signed, "userId": user, "companyId": company, "name": name})


async def list_documents(request: web.Request) -> web.Response:
    identity = authenticate(request)
    engine = request.app[GATEWAY].engine
    metas = await engine.store.list_documents(identity.company_id, "document")
    metas = sorted(metas, key=lambda m: m.created_at, reverse=True)[:MAX_LISTED]
    out: list[dict[str, Any]] = []
    for meta in metas:
        try:
            view = await engine.get("document", meta.id, company_id=identity.company_id)
        except CollabError:
            continue  # deleted or unreadable since it was listed
        title = view.data.get("title")
        out.append(
            {
                "documentId": meta.id,
                "strategy": meta.strategy,
                "textFields": list(meta.text_fields),
                "version": view.version,
                "title": title if isinstance(title, str) else "",
                "createdBy": meta.created_by,
                "createdAt": meta.created_at,
                "pendingConflicts": len(view.conflicts),
            }
        )
    return web.json_response({"documents": out})


async def presence(request: web.Request) -> web.Response:
    identity = authenticate(request)
    gw = request.app[GATEWAY]
    names: dict[str, str] = {}
    for sid in gw.sessions.sids():
        session = gw.sessions.get(sid)
        if session is not None and session.identity.company_id == identity.company_id:
            names[session.identity.user_id] = session.identity.display_name
    users = await gw.presence.online(identity.company_id)
    return web.json_response({"users": [{"userId": u, "name": names.get(u, u)} for u in users]})
