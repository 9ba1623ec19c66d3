"""Tokens for tests, signed with the suite's JWT_SECRET."""

from __future__ import annotations

import time

import jwt

from tests.support.processes import TEST_SECRET


def token(sub: str = "7", role: str = "viewer", ttl: float = 3600, **claims: object) -> str:
    now = int(time.time())
    payload = {"sub": sub, "role": role, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(payload, TEST_SECRET, algorithm="HS256")


def bearer(sub: str = "7", role: str = "viewer", **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(sub, role, **claims)}"}
