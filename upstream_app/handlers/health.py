"""Liveness: answers as long as the process serves HTTP (chaos never touches it)."""

from __future__ import annotations

from aiohttp import web

from upstream_app.responses import json_response

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Always `{"status": "ok"}`."""
    return json_response({"status": "ok"})
