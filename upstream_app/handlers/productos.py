"""Products: anyone signed in reads them, admins create and edit them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from upstream_app import payloads, validation
from upstream_app.auth import ADMIN, ANY_ROLE, requires
from upstream_app.errors import bad_request
from upstream_app.keys import DATABASE, PUBLISHER
from upstream_app.responses import json_response
from upstream_app.store import productos
from upstream_app.store.lotes import lots_of
from upstream_app.tokens import Principal

routes = web.RouteTableDef()

MAX_PRICE = 1_000_000_000
MAX_UNITS = 1_000_000_000


@routes.get("/api/v1/productos")
@requires(ANY_ROLE)
async def list_products(request: web.Request, principal: Principal) -> web.Response:
    """A page of products with their stock."""
    page = validation.page(request)
    items, total = await request.app[DATABASE].run(lambda conn: productos.list_products(conn, page))
    return json_response({"items": items, "total": total})


@routes.get(r"/api/v1/productos/{producto_id:\d+}")
@requires(ANY_ROLE)
async def get_product(request: web.Request, principal: Principal) -> web.Response:
    """One product with its lots that still hold units, first to expire first."""
    producto_id = validation.path_id(request, "producto_id")
    product = await request.app[DATABASE].run(
        lambda conn: {
            **productos.get_product(conn, producto_id),
            "lotes": lots_of(conn, producto_id),
        }
    )
    return json_response(product)


@routes.post("/api/v1/productos")
@requires(ADMIN)
async def create_product(request: web.Request, principal: Principal) -> web.Response:
    """Create a product (`nombre`, `precio`, optional `umbral_min` and `descripcion`)."""
    fields = _fields(await validation.read_object(request), partial=False)
    product = await request.app[DATABASE].run(lambda conn: productos.create_product(conn, fields))
    _announce(request, product, "creado")
    return json_response(product, status=201)


@routes.put(r"/api/v1/productos/{producto_id:\d+}")
@requires(ADMIN)
async def update_product(request: web.Request, principal: Principal) -> web.Response:
    """Change any of `nombre`, `descripcion`, `precio`, `umbral_min`."""
    producto_id = validation.path_id(request, "producto_id")
    changes = _fields(await validation.read_object(request), partial=True)
    product = await request.app[DATABASE].run(
        lambda conn: productos.update_product(conn, producto_id, changes)
    )
    _announce(request, product, "actualizado")
    return json_response(product)


def _fields(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The editable columns present in `body`; stock is not one (it comes from lots)."""
    fields: dict[str, Any] = {}
    if not partial or "nombre" in body:
        fields["nombre"] = validation.text(body, "nombre", max_len=120)
    if "descripcion" in body:
        fields["descripcion"] = validation.text(body, "descripcion", min_len=0, max_len=2000)
    if not partial or "precio" in body:
        precio = validation.number(body, "precio", minimum=0, maximum=MAX_PRICE)
        fields["precio_centavos"] = round(precio * 100)
    if "umbral_min" in body:
        fields["umbral_min"] = validation.integer(body, "umbral_min", minimum=0, maximum=MAX_UNITS)
    elif not partial:
        fields["umbral_min"] = 0
    if not fields:
        raise bad_request("nothing to change: give nombre, descripcion, precio or umbral_min")
    return fields


def _announce(request: web.Request, product: dict[str, Any], accion: str) -> None:
    data = {
        "accion": accion,
        "precio": product["precio"],
        "stock": product["stock"],
        "umbral_min": product["umbral_min"],
    }
    request.app[PUBLISHER].publish(
        payloads.inventory_update("producto", product["producto_id"], product["nombre"], data)
    )
