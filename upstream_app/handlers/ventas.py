"""Sales: staff sell, anyone signed in reads the history."""

from __future__ import annotations

from aiohttp import web

from upstream_app import payloads, validation
from upstream_app.auth import ANY_ROLE, STAFF, requires
from upstream_app.keys import CHECKER, DATABASE, PUBLISHER
from upstream_app.responses import json_response
from upstream_app.store.ventas import list_sales, record_sale
from upstream_app.tokens import Principal

routes = web.RouteTableDef()

MAX_UNITS_PER_SALE = 1_000_000


@routes.post("/api/v1/ventas")
@requires(STAFF)
async def create_sale(request: web.Request, principal: Principal) -> web.Response:
    """Sell `cantidad` units of `producto_id`, first-expiring lots first; 409 if short."""
    body = await validation.read_object(request)
    producto_id = validation.integer(body, "producto_id", minimum=1, maximum=validation.MAX_ID)
    cantidad = validation.integer(body, "cantidad", minimum=1, maximum=MAX_UNITS_PER_SALE)
    sale = await request.app[DATABASE].run(
        lambda conn: record_sale(conn, producto_id, cantidad, principal.sub)
    )
    data = {
        "venta_id": sale.venta["venta_id"],
        "cantidad": cantidad,
        "stock_anterior": sale.stock_anterior,
        "stock_nuevo": sale.stock_nuevo,
    }
    request.app[PUBLISHER].publish(
        payloads.inventory_update("venta", producto_id, sale.producto_nombre, data)
    )
    request.app[CHECKER].sale_recorded(producto_id, sale)
    return json_response({**sale.venta, "stock_restante": sale.stock_nuevo}, status=201)


@routes.get("/api/v1/ventas")
@requires(ANY_ROLE)
async def get_sales(request: web.Request, principal: Principal) -> web.Response:
    """A page of sales, newest first; `?producto_id=N` keeps one product's."""
    page = validation.page(request)
    producto_id = validation.query_id(request, "producto_id")
    items, total = await request.app[DATABASE].run(lambda conn: list_sales(conn, page, producto_id))
    return json_response({"items": items, "total": total})
