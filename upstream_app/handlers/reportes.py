"""Aggregate reports for staff."""

from __future__ import annotations

from aiohttp import web

from upstream_app.auth import STAFF, requires
from upstream_app.clock import utc_today
from upstream_app.keys import DATABASE, SETTINGS
from upstream_app.responses import json_response
from upstream_app.store.reportes import inventory_report, sales_report
from upstream_app.tokens import Principal

routes = web.RouteTableDef()


@routes.get("/api/v1/reportes/ventas")
@requires(STAFF)
async def sales(request: web.Request, principal: Principal) -> web.Response:
    """Sales, units and revenue, in all and per product."""
    return json_response(await request.app[DATABASE].run(sales_report))


@routes.get("/api/v1/reportes/inventario")
@requires(STAFF)
async def inventory(request: web.Request, principal: Principal) -> web.Response:
    """Stock units and value, low-stock products, lots near expiry."""
    today, days = utc_today(), request.app[SETTINGS].expiry_days
    report = await request.app[DATABASE].run(lambda conn: inventory_report(conn, today, days))
    return json_response(report)
