"""Who is asking: the verified token's identity, or anonymous, or 401.

The identity headers sent upstream are built here from the verified claims only; the
client's own `X-User-Id`/`X-User-Role` were already dropped by the forwarding rules.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from proxy.core.identity import ANONYMOUS, Identity
from proxy.errors import AuthRequired, Forbidden, InvalidToken, KeysRefreshing

if TYPE_CHECKING:
    from proxy.pipeline.runtime import Runtime
    from proxy.server.request import Headers, RequestHead


def identify(head: RequestHead, runtime: Runtime) -> Identity:
    """`invalid_token: anonymous` turns a bad token into no token; `reject` answers 401."""
    authorization = head.authorization
    if authorization is None:
        return ANONYMOUS
    try:
        return runtime.verifier.verify(authorization)
    except KeysRefreshing:
        raise  # the Identify stage waits for the refresh, then `identify_after_refresh`
    except InvalidToken:
        if runtime.policy.auth.invalid_token == "anonymous":
            return ANONYMOUS
        raise


def identify_after_refresh(head: RequestHead, runtime: Runtime) -> Identity:
    """`identify` once the early key refresh its token started has ended (the Identify
    stage waits for it): a token whose `kid` is still unknown had its chance."""
    try:
        return identify(head, runtime)
    except KeysRefreshing as again:  # yet another refresh
        if runtime.policy.auth.invalid_token == "anonymous":
            return ANONYMOUS
        raise InvalidToken(again.message) from None


ADMIN_TOKEN_USER = "admin-token"
"""The user id of a request authorized by `admin.token_env` (it names no person)."""


def identity_headers(identity: Identity) -> Headers:
    if not identity.authenticated:
        return []
    return [
        (b"x-user-id", identity.user_id.encode("utf-8", "replace")),
        (b"x-user-role", identity.role.encode("utf-8", "replace")),
    ]


def require_token(head: RequestHead, runtime: Runtime) -> Identity:
    """A verified token, whatever `invalid_token` says: the sidecar's own API needs one."""
    by_token = admin_token_identity(head, runtime)
    if by_token is not None:
        return by_token
    authorization = head.authorization
    if authorization is None:
        raise AuthRequired("this endpoint needs a bearer token")
    identity = runtime.verifier.verify(authorization)
    if not identity.authenticated:
        raise AuthRequired("this endpoint needs a bearer token")
    return identity


def admin_token_identity(head: RequestHead, runtime: Runtime) -> Identity | None:
    """`Authorization: Bearer $<admin.token_env>` (compared in constant time), or None."""
    expected = runtime.admin_token
    authorization = head.authorization
    if expected is None or authorization is None:
        return None
    scheme, _, value = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), expected):
        return None
    role = runtime.policy.admin.roles[0] if runtime.policy.admin.roles else "admin"
    return Identity(user_id=ADMIN_TOKEN_USER, role=role, expires_at=None, authenticated=True)


def require_admin(head: RequestHead, runtime: Runtime) -> Identity:
    """An admin: the admin token, or a verified token with a role of `admin.roles`."""
    by_token = admin_token_identity(head, runtime)
    if by_token is not None:
        return by_token
    identity = require_token(head, runtime)
    if identity.role not in runtime.policy.admin.roles:
        raise Forbidden("this endpoint needs an admin role")
    return identity
