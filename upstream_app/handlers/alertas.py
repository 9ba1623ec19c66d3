"""On-demand alert check for admins."""

from __future__ import annotations

from aiohttp import web

from upstream_app.auth import ADMIN, requires
from upstream_app.keys import CHECKER
from upstream_app.responses import json_response
from upstream_app.tokens import Principal

routes = web.RouteTableDef()


@routes.post("/api/v1/alertas/check")
@requires(ADMIN)
async def check_now(request: web.Request, principal: Principal) -> web.Response:
    """Run the low-stock and expiry checks now and publish every pending alert.

    An explicit request re-announces even what the periodic check announced recently.
    """
    alerts = await request.app[CHECKER].check(force=True)
    return json_response({"items": alerts, "total": len(alerts)})
