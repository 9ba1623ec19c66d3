"""Password hashing and token signing, without a server."""

from __future__ import annotations

import time

import jwt
import pytest

from upstream_app.passwords import hash_password, verify_password
from upstream_app.tokens import InvalidToken, issue_token, verify_token

SECRET = "unit-test-secret-0123456789abcdef0123"


def test_scrypt_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password("same") != hash_password("same")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "bcrypt$1$2$3$c2FsdA==$a2V5",
        "scrypt$16384$8$1$not base64!$a2V5",
        "scrypt$x$8$1$$",
    ],
)
def test_malformed_hash_never_matches(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_tampered_hash_does_not_match() -> None:
    parts = hash_password("pw-123456").split("$")
    parts[5] = hash_password("other-pw").split("$")[5]  # same salt and parameters, other key
    assert not verify_password("pw-123456", "$".join(parts))


def test_token_round_trip_carries_the_contract_claims() -> None:
    token = issue_token(SECRET, sub="7", role="vendedor", ttl=60, now=1_000_000)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"sub": "7", "role": "vendedor", "iat": 1_000_000, "exp": 1_000_060}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_verify_returns_the_principal() -> None:
    principal = verify_token(SECRET, issue_token(SECRET, sub="3", role="admin", ttl=60))
    assert (principal.sub, principal.role) == ("3", "admin")


def test_expired_token_is_rejected() -> None:
    token = issue_token(SECRET, sub="3", role="admin", ttl=10, now=time.time() - 100)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, token)


def test_other_secret_is_rejected() -> None:
    token = issue_token("another-secret-0123456789abcdef0123", sub="3", role="admin", ttl=60)
    with pytest.raises(InvalidToken):
        verify_token(SECRET, token)


def test_unsigned_token_is_rejected() -> None:
    claims = {"sub": "3", "role": "admin", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, key="", algorithm="none")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, token)


def test_token_without_exp_is_rejected() -> None:
    token = jwt.encode({"sub": "3", "role": "admin"}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidToken, match="exp"):
        verify_token(SECRET, token)
