"""The admin switch for fault injection."""

from __future__ import annotations

from aiohttp import web

from upstream_app.auth import ADMIN, requires
from upstream_app.chaos import parse_settings
from upstream_app.keys import CHAOS
from upstream_app.responses import json_response
from upstream_app.tokens import Principal
from upstream_app.validation import read_object

routes = web.RouteTableDef()


@routes.post("/api/v1/_chaos")
@requires(ADMIN)
async def set_chaos(request: web.Request, principal: Principal) -> web.Response:
    """Replace the chaos settings (`{}` turns chaos off) and answer the ones now active."""
    state = request.app[CHAOS]
    state.settings = parse_settings(await read_object(request))
    return json_response(state.settings.to_dict())


@routes.get("/api/v1/_chaos")
@requires(ADMIN)
async def get_chaos(request: web.Request, principal: Principal) -> web.Response:
    """The active chaos settings."""
    return json_response(request.app[CHAOS].settings.to_dict())
