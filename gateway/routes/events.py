"""``POST /api/events``: ERP events from backend services, ``{event, companyId, userId?, data}``.

Needs a token with role ``service`` (401 without a valid token, 403 for any other role). A
service is trusted for every company: it names the company per event. The event goes through
the gateway's :class:`~gateway.publisher.LocalPublisher`, i.e. the catalogue's validation
(422 with ``error.fields``) and routing, like any publisher.

A service sends the same token with every event, so its signature is checked once
(:func:`service_identity`): at a low rate, verifying it was the largest part of the gateway's
own time per publish (~0.4 ms of ~1 ms before the first recipient's write).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from collab.errors import CollabError, ErrorCode, invalid
from gateway.auth import Identity
from gateway.context import GATEWAY
from gateway.routes.middleware import authenticate
from gateway.wire import parse_payload

SERVICE_ROLE = "service"
#: The wall clock a remembered token's ``exp`` is checked against (PyJWT's is the same).
clock: Callable[[], float] = time.time


@dataclass(frozen=True, slots=True)
class PublishRequest:
    event: str
    company_id: str
    data: Any
    user_id: str | None = None


def service_identity(request: web.Request) -> Identity:
    """The identity of the request's bearer token, as :func:`authenticate` finds it, with the
    signature of a service's token checked only the first time it is seen.

    The gateway's verifier remembers it (:meth:`gateway.auth.TokenVerifier.remembered`):
    while unexpired and not revoked; otherwise it is verified again, which gives the same
    refusal as without the cache. Only tokens that verified, with role ``service``, are
    remembered."""
    verifier = request.app[GATEWAY].verifier
    header = request.headers.get("Authorization")
    if header:
        known = verifier.remembered(header, clock())
        if known is not None:
            return known
    identity = authenticate(request)
    if header and identity.role == SERVICE_ROLE:
        verifier.remember(header, identity)
    return identity


async def post_event(request: web.Request) -> web.Response:
    identity = service_identity(request)
    if identity.role != SERVICE_ROLE:
        raise CollabError(ErrorCode.FORBIDDEN, "publishing events needs a token with role service")
    try:
        body = await request.json()
    except ValueError:
        raise invalid("the body must be a JSON object") from None
    p = parse_payload(PublishRequest, body)
    gw = request.app[GATEWAY]
    route = await gw.publisher.publish(p.event, p.company_id, p.data, p.user_id)
    answer: dict[str, Any] = {"ok": True, "event": p.event, "route": route.room_kind}
    if route.user_id is not None:
        answer["userId"] = route.user_id
    return web.json_response(answer)
