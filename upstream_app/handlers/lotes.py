"""Lots: staff receive stock as lots with an expiry date."""

from __future__ import annotations

from aiohttp import web

from upstream_app import payloads, validation
from upstream_app.auth import STAFF, requires
from upstream_app.clock import utc_today
from upstream_app.errors import bad_request
from upstream_app.keys import CHECKER, DATABASE, PUBLISHER
from upstream_app.responses import json_response
from upstream_app.store.lotes import add_lot
from upstream_app.tokens import Principal

routes = web.RouteTableDef()

MAX_UNITS = 1_000_000_000


@routes.post("/api/v1/lotes")
@requires(STAFF)
async def create_lot(request: web.Request, principal: Principal) -> web.Response:
    """Add `cantidad` units of `producto_id` expiring on `fecha_vencimiento` (not in the past)."""
    body = await validation.read_object(request)
    producto_id = validation.integer(body, "producto_id", minimum=1, maximum=validation.MAX_ID)
    cantidad = validation.integer(body, "cantidad", minimum=1, maximum=MAX_UNITS)
    vence = validation.iso_date(body, "fecha_vencimiento")
    if vence < utc_today():
        raise bad_request("fecha_vencimiento is in the past")
    added = await request.app[DATABASE].run(
        lambda conn: add_lot(conn, producto_id, cantidad, vence)
    )
    data = {
        "lote_id": added.lote["lote_id"],
        "cantidad": cantidad,
        "fecha_vencimiento": added.lote["fecha_vencimiento"],
        "stock_anterior": added.stock_anterior,
        "stock_nuevo": added.stock_nuevo,
    }
    request.app[PUBLISHER].publish(
        payloads.inventory_update("lote", producto_id, added.producto_nombre, data)
    )
    request.app[CHECKER].lot_added(added)
    return json_response({**added.lote, "stock": added.stock_nuevo}, status=201)
