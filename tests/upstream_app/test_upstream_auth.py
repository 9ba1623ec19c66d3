"""Registration, login and the role checks, through real HTTP."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from upstream_harness import JWT_SECRET, Api

SEED_ROLES = {"admin": "admin", "vendedor": "vendedor", "viewer": "viewer"}


@pytest.mark.parametrize("username", sorted(SEED_ROLES))
async def test_seed_users_log_in_with_the_env_password(api: Api, username: str) -> None:
    reply = await api.call(
        "POST",
        "/api/v1/auth/login",
        json_body={"username": username, "password": "seed-password-for-tests"},
    )
    assert reply.status == 200
    assert reply.body["token_type"] == "bearer"
    assert reply.body["expires_in"] == 3600
    claims = jwt.decode(reply.body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["role"] == SEED_ROLES[username]
    assert claims["sub"].isdigit()
    assert claims["exp"] - claims["iat"] == 3600


async def test_register_then_login_as_viewer(api: Api) -> None:
    username = f"user_{uuid.uuid4().hex[:12]}"
    reply = await api.call(
        "POST", "/api/v1/auth/register", json_body={"username": username, "password": "s3cret-pw"}
    )
    assert reply.status == 201
    assert reply.body["username"] == username
    assert reply.body["role"] == "viewer"
    login = await api.call(
        "POST", "/api/v1/auth/login", json_body={"username": username, "password": "s3cret-pw"}
    )
    assert login.status == 200
    claims = jwt.decode(login.body["access_token"], JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == str(reply.body["usuario_id"])
    assert claims["role"] == "viewer"


async def test_password_spaces_are_kept(api: Api) -> None:
    username, password = f"user_{uuid.uuid4().hex[:12]}", "  spaced pass  "
    body = {"username": username, "password": password}
    assert (await api.call("POST", "/api/v1/auth/register", json_body=body)).status == 201
    assert await api.token(username, password=password)
    stripped = {"username": username, "password": password.strip()}
    assert (await api.call("POST", "/api/v1/auth/login", json_body=stripped)).status == 401


async def test_register_taken_username_is_409(api: Api) -> None:
    reply = await api.call(
        "POST", "/api/v1/auth/register", json_body={"username": "admin", "password": "whatever-1"}
    )
    assert reply.status == 409
    assert reply.body["error"] == "username_taken"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "ab", "password": "long-enough"},
        {"username": "has space", "password": "long-enough"},
        {"username": "fine_name", "password": "short"},
        {"username": "fine_name"},
        {"username": 5, "password": "long-enough"},
        ["not", "an", "object"],
    ],
)
async def test_register_bad_body_is_400(api: Api, body: object) -> None:
    reply = await api.call("POST", "/api/v1/auth/register", json_body=body)
    assert reply.status == 400
    assert set(reply.body) == {"error", "message"}


async def test_register_invalid_json_is_400(api: Api) -> None:
    async with api.http.post(f"{api.app.url}/api/v1/auth/register", data=b"{nope") as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_json"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "admin", "password": "wrong-password"},
        {"username": "nobody-here", "password": "seed-password-for-tests"},
    ],
)
async def test_bad_credentials_are_401(api: Api, body: dict[str, str]) -> None:
    reply = await api.call("POST", "/api/v1/auth/login", json_body=body)
    assert reply.status == 401
    assert reply.body["error"] == "invalid_credentials"


async def test_missing_token_is_401(api: Api) -> None:
    reply = await api.call("GET", "/api/v1/productos")
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-a-jwt",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer " + jwt.encode({"sub": "1", "role": "admin", "exp": 2**40}, "other-secret" * 4),
        "Bearer " + jwt.encode({"sub": "1", "role": "admin", "exp": 1}, JWT_SECRET),
    ],
)
async def test_bad_token_is_401(api: Api, authorization: str) -> None:
    reply = await api.call("GET", "/api/v1/productos", headers={"Authorization": authorization})
    assert reply.status == 401


async def test_token_minted_elsewhere_with_the_shared_secret_is_accepted(api: Api) -> None:
    # What `python -m proxy token --sub alice --role vendedor` produces.
    now = int(time.time())
    claims = {"sub": "alice", "role": "vendedor", "iat": now, "exp": now + 60}
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    reply = await api.call(
        "GET", "/api/v1/reportes/ventas", headers={"Authorization": f"Bearer {token}"}
    )
    assert reply.status == 200


async def test_viewer_cannot_sell(api: Api) -> None:
    reply = await api.sell(1, 1, user="viewer")
    assert reply.status == 403
    assert reply.body["error"] == "forbidden"


async def test_x_user_role_header_is_ignored(api: Api) -> None:
    forged = {"X-User-Role": "admin", "X-User-Id": "1"}
    as_viewer = await api.call(
        "POST",
        "/api/v1/ventas",
        user="viewer",
        headers=forged,
        json_body={"producto_id": 1, "cantidad": 1},
    )
    assert as_viewer.status == 403
    anonymous = await api.call("GET", "/api/v1/reportes/ventas", headers=forged)
    assert anonymous.status == 401


async def test_unknown_role_is_403(api: Api) -> None:
    token = jwt.encode({"sub": "9", "role": "ops", "exp": 2**40}, JWT_SECRET, algorithm="HS256")
    reply = await api.call("GET", "/api/v1/productos", headers={"Authorization": f"Bearer {token}"})
    assert reply.status == 403
