"""The role guard: handlers declare which roles may call them.

The role comes only from this app's own verification of the Bearer token. Headers such as
`X-User-Role` (which the sidecar may add) are never consulted.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from upstream_app.errors import ApiError
from upstream_app.keys import SETTINGS
from upstream_app.tokens import ROLES, InvalidToken, Principal, verify_token

AuthedHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]

ANY_ROLE = ROLES
STAFF = ("admin", "vendedor")
ADMIN = ("admin",)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="upstream_app"'}


def requires(roles: tuple[str, ...]) -> Callable[[AuthedHandler], Handler]:
    """Wrap a handler so it runs only for a verified caller holding one of `roles`."""

    def decorate(handler: AuthedHandler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            principal = authenticate(request)
            if principal.role not in roles:
                raise ApiError(403, "forbidden", f"role {principal.role!r} may not do this")
            return await handler(request, principal)

        return guarded

    return decorate


def authenticate(request: web.Request) -> Principal:
    """Verify the Bearer token of `request`; 401 when it is missing or invalid."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "a Bearer token is required", _CHALLENGE)
    try:
        return verify_token(request.app[SETTINGS].jwt_secret, token.strip())
    except InvalidToken as exc:
        raise ApiError(401, "invalid_token", f"invalid token: {exc}", _CHALLENGE) from None
