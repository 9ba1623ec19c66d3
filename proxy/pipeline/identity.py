"""Who is asking: the verified token's identity, or anonymous, or 401.

The identity headers sent upstream are built here from the verified claims only; the
client's own `X-User-Id`/`X-User-Role` were already dropped by the forwarding rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.core.identity import ANONYMOUS, Identity
from proxy.errors import AuthRequired, Forbidden, InvalidToken

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
    except InvalidToken:
        if runtime.policy.auth.invalid_token == "anonymous":
            return ANONYMOUS
        raise


def identity_headers(identity: Identity) -> Headers:
    if not identity.authenticated:
        return []
    return [
        (b"x-user-id", identity.user_id.encode("utf-8", "replace")),
        (b"x-user-role", identity.role.encode("utf-8", "replace")),
    ]


def require_token(head: RequestHead, runtime: Runtime) -> Identity:
    """A verified token, whatever `invalid_token` says: the sidecar's own API needs one."""
    authorization = head.authorization
    if authorization is None:
        raise AuthRequired("this endpoint needs a bearer token")
    identity = runtime.verifier.verify(authorization)
    if not identity.authenticated:
        raise AuthRequired("this endpoint needs a bearer token")
    return identity


def require_admin(head: RequestHead, runtime: Runtime) -> Identity:
    identity = require_token(head, runtime)
    if identity.role not in runtime.policy.admin.roles:
        raise Forbidden("this endpoint needs an admin role")
    return identity
