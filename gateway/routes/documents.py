"""``GET /api/documents/{id}`` and ``GET /api/resources/{id}``: the current state, for a user
of the owning company (401 without a valid token, 403 for another company's, 404 unknown)."""

from __future__ import annotations

from aiohttp import web

from collab.model import Kind
from gateway.context import GATEWAY
from gateway.routes.middleware import authenticate


async def get_document(request: web.Request) -> web.Response:
    return await _get(request, "document")


async def get_resource(request: web.Request) -> web.Response:
    return await _get(request, "resource")


async def _get(request: web.Request, kind: Kind) -> web.Response:
    identity = authenticate(request)
    doc_id = request.match_info["id"]
    view = await request.app[GATEWAY].engine.get(kind, doc_id, company_id=identity.company_id)
    id_field = "documentId" if kind == "document" else "resourceId"
    return web.json_response({id_field: doc_id, "version": view.version, "data": view.data})
