"""Registration and login."""

from __future__ import annotations

import asyncio
import re

from aiohttp import web

from upstream_app import validation
from upstream_app.errors import ApiError, bad_request
from upstream_app.keys import DATABASE, SETTINGS
from upstream_app.passwords import burn_time, hash_password, verify_password
from upstream_app.responses import json_response
from upstream_app.store.usuarios import create_user, find_user
from upstream_app.tokens import issue_token

routes = web.RouteTableDef()

_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")


@routes.post("/api/v1/auth/register")
async def register(request: web.Request) -> web.Response:
    """Create a `viewer` account; 409 when the username is taken."""
    body = await validation.read_object(request)
    username = validation.text(body, "username", min_len=3, max_len=64)
    if not _USERNAME.match(username):
        raise bad_request("username may only contain letters, digits, '_', '.' and '-'")
    password = validation.text(body, "password", min_len=8, max_len=128, strip=False)
    password_hash = await asyncio.to_thread(hash_password, password)
    user = await request.app[DATABASE].run(
        lambda conn: create_user(conn, username, password_hash, "viewer")
    )
    return json_response(user, status=201)


@routes.post("/api/v1/auth/login")
async def login(request: web.Request) -> web.Response:
    """Trade a username and password for a bearer token; 401 on bad credentials."""
    body = await validation.read_object(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise bad_request("username and password must be strings")
    user = await request.app[DATABASE].run(lambda conn: find_user(conn, username))
    if user is None:
        await asyncio.to_thread(burn_time, password)
        raise _invalid_credentials()
    if not await asyncio.to_thread(verify_password, password, user["password_hash"]):
        raise _invalid_credentials()
    settings = request.app[SETTINGS]
    token = issue_token(
        settings.jwt_secret, sub=str(user["usuario_id"]), role=user["role"], ttl=settings.token_ttl
    )
    return json_response(
        {"access_token": token, "token_type": "bearer", "expires_in": int(settings.token_ttl)}
    )


def _invalid_credentials() -> ApiError:
    # A fresh instance per raise: re-raising one shared exception would grow its traceback.
    return ApiError(401, "invalid_credentials", "wrong username or password")
