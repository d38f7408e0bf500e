"""``POST /api/events``: ERP events from backend services, ``{event, companyId, userId?, data}``.

Needs a token with role ``service`` (401 without a valid token, 403 for any other role). A
service is trusted for every company: it names the company per event. The event goes through
the gateway's :class:`~gateway.publisher.LocalPublisher`, i.e. the catalogue's validation
(422 with ``error.fields``) and routing, like any publisher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from collab.errors import CollabError, ErrorCode, invalid
from gateway.context import GATEWAY
from gateway.routes.middleware import authenticate
from gateway.wire import parse_payload

SERVICE_ROLE = "service"


@dataclass(frozen=True, slots=True)
class PublishRequest:
    event: str
    company_id: str
    data: Any
    user_id: str | None = None


async def post_event(request: web.Request) -> web.Response:
    identity = authenticate(request)
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
