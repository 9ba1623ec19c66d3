"""The verifier reading keys that change through a `KeyRing` (pure: no I/O, fake clock)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from policies.model import JwtPolicy
from proxy.clock import FakeClock
from proxy.core.identity import KEYS_UNAVAILABLE, NO_VERIFICATION, UNKNOWN_KEY, TokenVerifier
from proxy.errors import InvalidToken, KeysRefreshing
from proxy.keys import KeyMaterial, KeyMaterialError, KeyRing, parse_jwks, with_fetched_jwks

CLOCK = FakeClock()
POLICY = JwtPolicy(algorithms=("RS256",), jwks_url="http://127.0.0.1:1/jwks")


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in "ab"}


def jwks(keys: dict[str, rsa.RSAPrivateKey], *kids: str, extra: Any = ()) -> bytes:
    entries = [
        {**RSAAlgorithm.to_jwk(keys[kid].public_key(), as_dict=True), "kid": kid} for kid in kids
    ]
    import json

    return json.dumps({"keys": [*entries, *extra]}).encode()


def material(data: bytes) -> KeyMaterial:
    fetched, _ = parse_jwks(data, "test", "auth.jwt.jwks_url", skip_unusable=True)
    return with_fetched_jwks(KeyMaterial(), fetched)


def signed(keys: dict[str, rsa.RSAPrivateKey], kid: str, sub: str = "u") -> str:
    claims = {"sub": sub, "role": "viewer", "exp": CLOCK.wall() + 600}
    return jwt.encode(claims, keys[kid], algorithm="RS256", headers={"kid": kid})


def refusal(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify_token(token)
    return caught.value


def test_until_a_first_set_tokens_are_refused_as_keys_unavailable(keys) -> None:
    ring = KeyRing(KeyMaterial(), available=False)
    verifier = TokenVerifier(POLICY, ring, CLOCK)
    token = signed(keys, "a")
    assert refusal(verifier, token).message == KEYS_UNAVAILABLE
    ring.replace(material(jwks(keys, "a")))
    assert verifier.verify_token(token).user_id == "u"  # the refusal was not remembered


def test_new_keys_drop_every_cached_verdict(keys) -> None:
    ring = KeyRing(material(jwks(keys, "a", "b")))
    verifier = TokenVerifier(POLICY, ring, CLOCK)
    token_a, token_b = signed(keys, "a"), signed(keys, "b")
    assert verifier.verify(f"Bearer {token_a}".encode()).authenticated
    assert verifier.verify_token(token_b).authenticated
    ring.replace(material(jwks(keys, "b")))  # a rotated out
    assert refusal(verifier, token_a).message == UNKNOWN_KEY
    with pytest.raises(InvalidToken):
        verifier.verify(f"Bearer {token_a}".encode())
    assert verifier.verify_token(token_b).authenticated


def test_an_unknown_kid_asks_for_an_early_refresh_and_may_wait_for_it(keys) -> None:
    ring = KeyRing(material(jwks(keys, "a")))
    asked: list[str] = []
    waiter = object()
    answers = [waiter, None]
    ring.on_unknown_kid = lambda kid: asked.append(kid) or answers.pop(0)
    verifier = TokenVerifier(POLICY, ring, CLOCK)
    token_b = signed(keys, "b")
    with pytest.raises(KeysRefreshing) as caught:
        verifier.verify_token(token_b)
    assert caught.value.waiter is waiter and caught.value.status == 401
    ring.replace(material(jwks(keys, "a", "b")))  # what the refresh brought
    assert verifier.verify_token(token_b).authenticated
    assert asked == ["b"]
    # No refresh allowed now: refused, and the verdict is kept until the keys change.
    token_c = jwt.encode({"sub": "u", "role": "r"}, keys["a"], algorithm="RS256",
                         headers={"kid": "c"})  # fmt: skip
    assert refusal(verifier, token_c).message == UNKNOWN_KEY
    assert refusal(verifier, token_c).message == UNKNOWN_KEY
    assert asked == ["b", "c"]


def test_without_auth_jwt_nothing_is_verified(keys) -> None:
    verifier = TokenVerifier(None, KeyMaterial(), CLOCK)
    assert not verifier.verify(b"Bearer whatever").authenticated
    assert not verifier.verify(f"Bearer {signed(keys, 'a')}".encode()).authenticated
    assert refusal(verifier, signed(keys, "a")).message == NO_VERIFICATION


def test_a_fetched_jwks_skips_unsupported_keys_with_a_warning(keys) -> None:
    okp = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    data = jwks(keys, "a", extra=[{**okp, "kid": "ed"}])
    fetched, skipped = parse_jwks(data, "http://idp/jwks", "auth.jwt.jwks_url", skip_unusable=True)
    assert sorted(fetched) == ["a"]
    assert len(skipped) == 1 and "'ed'" in skipped[0] and "only RSA and EC" in skipped[0]
    assert okp["x"] not in skipped[0]
    with pytest.raises(KeyMaterialError):  # a jwks_file stays strict
        parse_jwks(data, "keys.json", "auth.jwt.jwks_file", skip_unusable=False)
