"""The token verifier: what it accepts, what it refuses and why, and what it remembers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.jwk import OctKey

from policies.model import JwtPolicy
from proxy.clock import FakeClock
from proxy.core.identity import ANONYMOUS, Identity, TokenVerifier, identity_token_expiry
from proxy.errors import InvalidToken
from proxy.keys import KeyMaterial, VerificationKey

SECRET = b"unit-test-secret-0123456789abcdef"
NOW = FakeClock().wall()
RSA_ALGS = frozenset({"RS256"})
HS_KEYS = KeyMaterial(hmac_secret=SECRET)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for NOW; a change to None drops the claim."""
    base: dict[str, Any] = {"sub": "u-1", "role": "viewer", "exp": NOW + 3600, "iat": NOW}
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def hs256(payload: dict[str, Any] | bytes, header: Any = None, secret: bytes = SECRET) -> str:
    """A hand-made HS256 token, so header and payload can be anything at all."""
    header = {"alg": "HS256", "typ": "JWT"} if header is None else header
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(raw)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def verifier(
    clock: FakeClock | None = None,
    keys: KeyMaterial = HS_KEYS,
    cache_size: int = 100,
    **policy: Any,
) -> TokenVerifier:
    return TokenVerifier(JwtPolicy(**policy), keys, clock or FakeClock(), cache_size=cache_size)


def outcome(check: TokenVerifier, token: str) -> str:
    """ "accepted", or the message of the refusal."""
    try:
        check.verify(f"Bearer {token}")
    except InvalidToken as error:
        return error.message
    return "accepted"


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts signature verifications, to tell a cache hit from a fresh verification."""
    calls: list[int] = []
    original = jwt.PyJWS.decode_complete

    def counting(self: jwt.PyJWS, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(jwt.PyJWS, "decode_complete", counting)
    yield calls


def test_pyjwt_token_gives_its_identity() -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier().verify(f"Bearer {token}") == Identity("u-1", "viewer", NOW + 3600, True)


def test_joserfc_token_verifies_too() -> None:
    token = jose_jwt.encode({"alg": "HS256"}, claims(role="admin"), OctKey.import_key(SECRET))
    assert verifier().verify(f"Bearer {token}".encode()).role == "admin"


@pytest.mark.parametrize("prefix", ["Bearer ", "bearer ", "BEARER ", "Bearer   ", "  Bearer\t"])
def test_bearer_is_case_insensitive_in_str_and_bytes(prefix: str) -> None:
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    check = verifier()
    assert check.verify(prefix + token).user_id == "u-1"
    assert check.verify((prefix + token).encode()).user_id == "u-1"


def test_integer_user_claim_reads_as_text_and_claim_names_follow_the_policy() -> None:
    token = jwt.encode(claims(sub=None, uid=42, role=None, grp="admin"), SECRET, algorithm="HS256")
    identity = verifier(user_claim="uid", role_claim="grp").verify(f"Bearer {token}")
    assert (identity.user_id, identity.role) == ("42", "admin")


def test_token_without_exp_has_no_expiry_and_stays_valid() -> None:
    clock = FakeClock()
    check = verifier(clock)
    token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
    assert check.verify(f"Bearer {token}").expires_at is None
    clock.advance(10 * 365 * 86400)
    assert check.verify(f"Bearer {token}").user_id == "u-1"


@pytest.mark.parametrize(
    "header", [None, b"", "", "   ", "Basic dXNlcjpwYXNz", b"Digest username=x", "Token abc"]
)
def test_no_bearer_token_is_anonymous(header: bytes | str | None) -> None:
    assert verifier().verify(header) is ANONYMOUS
    assert Identity("", "anonymous", None, False) == ANONYMOUS


@pytest.mark.parametrize("header", ["Bearer", "Bearer   ", b"bearer"])
def test_bearer_without_a_token_is_malformed(header: str | bytes) -> None:
    with pytest.raises(InvalidToken, match="malformed token"):
        verifier().verify(header)


@pytest.mark.parametrize(
    ("exp_offset", "expected"),
    [(-29.9, "accepted"), (-30.0, "token expired"), (-3600, "token expired"), (10, "accepted")],
)
def test_exp_is_checked_with_leeway(exp_offset: float, expected: str) -> None:
    token = jwt.encode(claims(exp=NOW + exp_offset), SECRET, algorithm="HS256")
    assert outcome(verifier(leeway=30.0), token) == expected


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_nbf_and_iat_in_the_future_are_refused_beyond_leeway(claim: str) -> None:
    soon = jwt.encode(claims(**{claim: NOW + 29}), SECRET, algorithm="HS256")
    later = jwt.encode(claims(**{claim: NOW + 31}), SECRET, algorithm="HS256")
    assert outcome(verifier(leeway=30.0), soon) == "accepted"
    assert outcome(verifier(leeway=30.0), later) == "token not yet valid"


@pytest.mark.parametrize(
    "exp", [b'"tomorrow"', b"true", b"null", b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 400]
)
def test_non_numeric_or_non_finite_dates_are_malformed(exp: bytes) -> None:
    payload = b'{"sub": "u", "role": "r", "exp": ' + exp + b"}"
    assert outcome(verifier(), hs256(payload)) == "malformed token"


def test_wrong_key_is_a_bad_signature() -> None:
    token = jwt.encode(claims(), b"another-secret-0123456789abcdefgh", algorithm="HS256")
    assert outcome(verifier(), token) == "bad signature"


def test_a_weak_secret_still_verifies_without_warning_per_token() -> None:
    """The app being fronted signs with the secret it has: a short one works (warned once
    at load by proxy.keys), and pyjwt's per-token warning stays quiet."""
    keys = KeyMaterial(hmac_secret=b"short", warnings=("weak",))
    with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
        token = jwt.encode(claims(), b"short", algorithm="HS256")
    assert verifier(keys=keys).verify(f"Bearer {token}").authenticated


@pytest.mark.parametrize("alg", ["none", "None", "HS384", "", 5, ["HS256"], None])
def test_algorithms_outside_the_policy_are_refused(alg: Any) -> None:
    header = {"typ": "JWT"} if alg is None else {"alg": alg}
    assert outcome(verifier(), hs256(claims(), header=header)) == "algorithm not allowed"


def test_unsigned_alg_none_token_is_refused() -> None:
    header = b64(b'{"alg":"none","typ":"JWT"}')
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    assert outcome(verifier(), token) == "algorithm not allowed"


def test_rs256_token_is_refused_when_only_hs256_is_listed(
    rsa_keys: tuple[rsa.RSAPrivateKey, ...],
) -> None:
    token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
    keys = KeyMaterial(SECRET, VerificationKey(rsa_keys[0].public_key(), RSA_ALGS))
    assert outcome(verifier(keys=keys), token) == "algorithm not allowed"


def test_hs256_signed_with_the_public_key_pem_is_refused(
    rsa_keys: tuple[rsa.RSAPrivateKey, ...],
) -> None:
    """The classic key confusion: the public key, public by definition, used as HMAC secret."""
    public = rsa_keys[0].public_key()
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    forged = hs256(claims(role="admin"), secret=pem)
    both = KeyMaterial(SECRET, VerificationKey(public, RSA_ALGS))
    assert outcome(verifier(keys=both, algorithms=("HS256", "RS256")), forged) == "bad signature"
    rsa_only = KeyMaterial(None, VerificationKey(public, RSA_ALGS))
    assert outcome(verifier(keys=rsa_only, algorithms=("HS256", "RS256")), forged) == (
        "algorithm not allowed"
    )


def test_rs256_and_es256_verify_with_their_public_keys(
    rsa_keys: tuple[rsa.RSAPrivateKey, ...], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    rs_keys = KeyMaterial(public_key=VerificationKey(rsa_keys[0].public_key(), RSA_ALGS))
    es_keys = KeyMaterial(public_key=VerificationKey(ec_key.public_key(), frozenset({"ES256"})))
    rs_token = jwt.encode(claims(), rsa_keys[0], algorithm="RS256")
    es_token = jwt.encode(claims(), ec_key, algorithm="ES256")
    assert verifier(keys=rs_keys, algorithms=("RS256",)).verify_token(rs_token).authenticated
    assert verifier(keys=es_keys, algorithms=("ES256",)).verify_token(es_token).authenticated
    # A listed algorithm the key cannot serve: an ES256 token against the RSA key.
    assert outcome(verifier(keys=rs_keys, algorithms=("RS256", "ES256")), es_token) == (
        "algorithm not allowed"
    )


def test_jwks_key_is_picked_by_kid(
    rsa_keys: tuple[rsa.RSAPrivateKey, ...], ec_key: ec.EllipticCurvePrivateKey
) -> None:
    first, second = rsa_keys
    jwks = MappingProxyType(
        {
            "one": VerificationKey(first.public_key(), RSA_ALGS),
            "two": VerificationKey(second.public_key(), RSA_ALGS),
        }
    )
    check = verifier(keys=KeyMaterial(jwks=jwks), algorithms=("RS256",))

    def signed(key: rsa.RSAPrivateKey, kid: str | None) -> str:
        headers = None if kid is None else {"kid": kid}
        return jwt.encode(claims(), key, algorithm="RS256", headers=headers)

    assert check.verify_token(signed(second, "two")).authenticated
    assert check.verify_token(signed(first, "one")).authenticated
    assert outcome(check, signed(first, "two")) == "bad signature"
    assert outcome(check, signed(first, "three")) == "unknown key id"
    assert outcome(check, signed(first, None)) == "unknown key id"
    # Without a kid, the PEM key is the one used.
    with_pem = KeyMaterial(public_key=VerificationKey(ec_key.public_key(), frozenset({"ES256"})))
    check = verifier(keys=replace(with_pem, jwks=jwks), algorithms=("RS256", "ES256"))
    assert check.verify_token(jwt.encode(claims(), ec_key, algorithm="ES256")).authenticated
    assert check.verify_token(signed(second, "two")).authenticated


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "accepted"),
        ({"iss": "https://evil.example"}, "invalid issuer"),
        ({"iss": None}, "invalid issuer"),
        ({"aud": ["other", "inventory"]}, "accepted"),
        ({"aud": "other"}, "invalid audience"),
        ({"aud": ["other"]}, "invalid audience"),
        ({"aud": None}, "invalid audience"),
        ({"sub": None}, "missing user claim"),
        ({"sub": ""}, "invalid user claim"),
        ({"sub": True}, "invalid user claim"),
        ({"sub": ["u"]}, "invalid user claim"),
        ({"role": None}, "missing role claim"),
        ({"role": ""}, "invalid role claim"),
        ({"role": ["admin"]}, "invalid role claim"),
    ],
)
def test_claims_are_checked(changes: dict[str, Any], expected: str) -> None:
    valid = {"iss": "https://idp.example", "aud": "inventory"}
    token = jwt.encode(claims(**{**valid, **changes}), SECRET, algorithm="HS256")
    check = verifier(issuer="https://idp.example", audience="inventory")
    assert outcome(check, token) == expected
    if expected in ("invalid issuer", "invalid audience"):
        assert outcome(verifier(), token) == "accepted"  # unset in the policy: not checked


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "only.two",
        "a.b.c.d",
        "!!!!.e30.c2ln",
        f"{b64(b'not json')}.{b64(b'{}')}.c2ln",
        f"{b64(b'[1]')}.{b64(b'{}')}.c2ln",
        f"{b64(b'[' * 5000)}.{b64(b'{}')}.c2ln",
        hs256(b"not json"),
        hs256(b"[1, 2]"),
        hs256(b"[" * 5000 + b"]" * 5000),
        hs256(claims(), header={"alg": "HS256", "kid": 7}),
        hs256(claims(), header={"alg": "HS256", "crit": ["exp"], "exp": 1}),
        hs256(claims(), header={"alg": "HS256", "b64": False, "crit": ["b64"]}),
        "ébc.déf.ghi",
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert outcome(verifier(), token) == "malformed token"


def _bad_tokens() -> list[str]:
    return [
        jwt.encode(claims(), b"another-secret-0123456789abcdefgh", algorithm="HS256"),
        jwt.encode(claims(exp=NOW - 3600), SECRET, algorithm="HS256"),
        hs256(claims(), header={"alg": "none"}),
        hs256(b"not json"),
        "not-a-jwt-at-all",
    ]


@pytest.mark.parametrize("token", _bad_tokens())
def test_the_token_never_appears_in_the_error(token: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        verifier().verify(f"Bearer {token}")
    error = caught.value
    for shown in (str(error), repr(error), error.body().decode(), repr(error.fields)):
        assert token not in shown
        for segment in token.split("."):
            assert len(segment) < 8 or segment not in shown
    assert error.status == 401
    assert ("WWW-Authenticate", 'Bearer error="invalid_token"') in error.headers


def test_key_material_repr_hides_the_secret() -> None:
    assert SECRET.decode() not in repr(HS_KEYS)
    assert SECRET.decode() not in repr(verifier())


# Every refusal the 401 body may carry.
_MESSAGES = {"malformed token", "algorithm not allowed", "unknown key id", "bad signature"}
_MESSAGES |= {"token expired", "token not yet valid", "invalid issuer", "invalid audience"}
_MESSAGES |= {
    "missing user claim",
    "invalid user claim",
    "missing role claim",
    "invalid role claim",
}
_JWT_CHARS = st.text(alphabet="abcXYZ019-_=.", max_size=60)


@given(header=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_any_header_value_is_anonymous_an_identity_or_invalid_token(header: bytes | str) -> None:
    try:
        assert verifier().verify(header) is ANONYMOUS
    except InvalidToken as error:
        assert error.message in _MESSAGES


@given(token=st.one_of(st.text(max_size=200), _JWT_CHARS, st.lists(_JWT_CHARS).map(".".join)))
def test_any_bearer_token_is_refused_with_a_known_message(token: str) -> None:
    assert outcome(verifier(), f"x{token}") in _MESSAGES


def test_a_cached_token_is_not_verified_again(decode_calls: list[int]) -> None:
    check = verifier()
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    first = check.verify(f"Bearer {token}")
    assert check.verify(f"bearer {token}".encode()) == first
    assert check.verify_token(token) == first
    assert len(decode_calls) == 1


def test_a_refused_token_is_not_verified_again(decode_calls: list[int]) -> None:
    check = verifier()
    forged = hs256(claims(), secret=b"forged-secret-0123456789abcdefghij")
    for _ in range(3):
        assert outcome(check, forged) == "bad signature"
    assert len(decode_calls) == 1


def test_a_cached_token_is_never_served_past_exp_plus_leeway(decode_calls: list[int]) -> None:
    clock = FakeClock()
    check = verifier(clock, leeway=30.0)
    token = jwt.encode(claims(exp=NOW + 60), SECRET, algorithm="HS256")
    identity = check.verify_token(token)
    deadline = identity_token_expiry(identity, 30.0)
    assert deadline == NOW + 90
    clock.advance(89.999)
    assert check.verify_token(token) == identity
    assert len(decode_calls) == 1
    clock.advance(0.001)
    assert clock.wall() == deadline
    assert outcome(check, token) == "token expired"


def test_a_header_seen_before_is_never_served_past_exp_plus_leeway(
    decode_calls: list[int],
) -> None:
    clock = FakeClock()
    check = verifier(clock, leeway=30.0)
    header = b"Bearer " + jwt.encode(claims(exp=NOW + 60), SECRET, algorithm="HS256").encode()
    identity = check.verify(header)
    clock.advance(89.999)
    assert check.verify(header) == identity
    assert len(decode_calls) == 1
    clock.advance(0.001)
    with pytest.raises(InvalidToken, match="token expired"):
        check.verify(header)


def test_not_yet_valid_is_not_remembered() -> None:
    clock = FakeClock()
    check = verifier(clock, leeway=30.0)
    token = jwt.encode(claims(nbf=NOW + 100), SECRET, algorithm="HS256")
    assert outcome(check, token) == "token not yet valid"
    clock.advance(70)
    assert check.verify_token(token).authenticated


def test_the_cache_is_bounded(decode_calls: list[int]) -> None:
    check = verifier(cache_size=2)
    tokens = [jwt.encode(claims(sub=f"u{n}"), SECRET, algorithm="HS256") for n in range(3)]
    for token in tokens:
        check.verify_token(token)
    check.verify_token(tokens[2])
    assert len(decode_calls) == 3
    check.verify_token(tokens[0])  # evicted by the third: verified again
    assert len(decode_calls) == 4


def test_token_expiry_is_none_without_exp() -> None:
    assert identity_token_expiry(ANONYMOUS, 30.0) is None
    assert identity_token_expiry(Identity("u", "r", 100.0, True), 30.0) == 130.0


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"sub": "1\r\nX-Injected: yes"}, "invalid user claim"),
        ({"sub": "1\n"}, "invalid user claim"),
        ({"sub": "a\x00b"}, "invalid user claim"),
        ({"sub": "tab\there"}, "invalid user claim"),
        ({"sub": "del\x7f"}, "invalid user claim"),
        ({"sub": "u" * 257}, "invalid user claim"),
        ({"sub": "ñ" * 129}, "invalid user claim"),  # 258 bytes in UTF-8
        ({"sub": 10**300}, "invalid user claim"),
        ({"role": "admin\r\nX-Injected: yes"}, "invalid role claim"),
        ({"role": "r" * 257}, "invalid role claim"),
        ({"sub": "u" * 256, "role": "ñ" * 128}, "accepted"),
        ({"sub": "José Núñez"}, "accepted"),
    ],
)
def test_identity_values_must_be_valid_header_values(
    changes: dict[str, Any], expected: str
) -> None:
    token = jwt.encode(claims(**changes), SECRET, algorithm="HS256")
    assert outcome(verifier(), token) == expected


@given(st.text(max_size=300))
def test_an_accepted_user_id_is_always_a_safe_header_value(sub: str) -> None:
    token = hs256(claims(sub=sub))
    try:
        identity = verifier().verify(f"Bearer {token}")
    except InvalidToken:
        return
    raw = identity.user_id.encode("utf-8")
    assert len(raw) <= 256
    assert not any(byte < 0x20 or byte == 0x7F for byte in raw)
