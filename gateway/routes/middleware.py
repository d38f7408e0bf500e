"""HTTP middlewares: CORS for the configured origins, and errors as the wire's JSON shape.

Socket.IO's own path (``/socket.io/``) is left to python-engineio, which applies the same
origins (``cors_allowed_origins``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from collab.errors import CollabError, ErrorCode
from gateway.auth import AuthenticationFailed, Identity, bearer
from gateway.context import GATEWAY
from gateway.wire import http_status, to_wire_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SOCKETIO_PATH = "/socket.io"


def cors(origins: tuple[str, ...]) -> Middleware:
    """Allow cross-origin requests from ``origins`` (``*``: any); none: same origin only."""
    any_origin = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.path.startswith(SOCKETIO_PATH) or not origin:
            return await handler(request)
        allowed = any_origin or origin in origins
        if allowed and request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": "600",
                },
            )
        else:
            response = await handler(request)
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    return middleware


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Any error of a route as ``{ok: false, error: {code, message}}`` with its HTTP status."""
    if request.path.startswith(SOCKETIO_PATH):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        error = to_wire_error(exc, context=f"{request.method} {request.path}")
        status = http_status(error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)


def authenticate(request: web.Request) -> Identity:
    """The identity of a request's ``Authorization: Bearer`` token (``unauthenticated``)."""
    gw = request.app[GATEWAY]
    try:
        return gw.verifier.verify(bearer(request.headers.get("Authorization")))
    except AuthenticationFailed as exc:
        raise CollabError(ErrorCode.UNAUTHENTICATED, exc.message) from None
