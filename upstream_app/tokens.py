"""HS256 access tokens: issued at login, verified on every protected request."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ROLES = ("admin", "vendedor", "viewer")
_ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is missing a claim, expired, tampered with or not HS256."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by a token this app can verify."""

    sub: str
    role: str


def issue_token(secret: str, *, sub: str, role: str, ttl: float, now: float | None = None) -> str:
    """Sign a token carrying `sub`, `role`, `iat` and `exp`."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": sub, "role": role, "iat": issued, "exp": issued + int(ttl)}
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_token(secret: str, token: str) -> Principal:
    """Return the caller proven by `token`; only HS256 is accepted, whatever the header says."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    role = claims.get("role")
    return Principal(sub=str(claims["sub"]), role=role if isinstance(role, str) else "")
