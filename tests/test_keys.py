"""Reading key material: env secret, PEM file, certificate, JWKS; every misconfiguration named."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from policies.model import JwtPolicy
from proxy.clock import FakeClock
from proxy.core.identity import TokenVerifier
from proxy.keys import KeyMaterialError, load_key_material

SECRET = "keys-test-secret-0123456789abcdef"
NOW = FakeClock().wall()
CLAIMS = {"sub": "u-1", "role": "admin", "exp": NOW + 600}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem(public_key: Any) -> bytes:
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def write(path: Path, data: bytes | dict[str, Any]) -> str:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return str(path)


def jwk(key: Any, **fields: Any) -> dict[str, Any]:
    algorithm = (
        RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) else ECAlgorithm
    )
    return {**algorithm.to_jwk(key, as_dict=True), **fields}


def accepts(policy: JwtPolicy, token: str, environ: dict[str, str] | None = None) -> bool:
    keys = load_key_material(policy, environ or {})
    return TokenVerifier(policy, keys, FakeClock()).verify_token(token).authenticated


def load_error(policy: JwtPolicy, environ: dict[str, str] | None = None) -> KeyMaterialError:
    with pytest.raises(KeyMaterialError) as caught:
        load_key_material(policy, environ or {})
    return caught.value


# --- HS* secret from the environment --------------------------------------------------------


def test_hs_secret_comes_from_the_named_variable() -> None:
    policy = JwtPolicy(secret_env="MY_SECRET")
    keys = load_key_material(policy, {"MY_SECRET": SECRET})
    assert keys.hmac_secret == SECRET.encode()
    assert SECRET not in repr(keys)
    assert accepts(policy, jwt.encode(CLAIMS, SECRET, algorithm="HS256"), {"MY_SECRET": SECRET})


def test_undecodable_environment_bytes_are_kept_exactly() -> None:
    raw = b"\xff" * 40
    keys = load_key_material(JwtPolicy(), {"JWT_SECRET": os.fsdecode(raw)})
    assert keys.hmac_secret == raw


@pytest.mark.parametrize("environ", [{}, {"JWT_SECRET": ""}])
def test_hs_without_its_variable_fails_to_load(environ: dict[str, str]) -> None:
    error = load_error(JwtPolicy(), environ)
    assert error.key_path == "auth.jwt.secret_env"
    assert "JWT_SECRET is not set" in str(error)


@pytest.mark.parametrize(
    ("algorithms", "secret"), [(("HS256",), "x" * 31), (("HS256", "HS512"), "y" * 63)]
)
def test_a_secret_shorter_than_the_rfc_minimum_loads_with_a_warning(
    algorithms: tuple[Any, ...], secret: str
) -> None:
    keys = load_key_material(JwtPolicy(algorithms=algorithms), {"JWT_SECRET": secret})
    assert keys.hmac_secret == secret.encode()
    assert len(keys.warnings) == 1 and "RFC 7518" in keys.warnings[0]
    assert secret not in keys.warnings[0]


def test_no_secret_is_needed_without_hs_algorithms(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    policy = JwtPolicy(
        algorithms=("RS256",), public_key_file=write(tmp_path / "k.pem", pem(rsa_key.public_key()))
    )
    assert load_key_material(policy, {}).hmac_secret is None


# --- PEM public key and certificate ---------------------------------------------------------


def test_rs256_verifies_with_a_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = write(tmp_path / "public.pem", pem(rsa_key.public_key()))
    policy = JwtPolicy(algorithms=("RS256",), public_key_file=path)
    assert accepts(policy, jwt.encode(CLAIMS, rsa_key, algorithm="RS256"))


def test_es256_verifies_with_a_pem_file(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = write(tmp_path / "public.pem", pem(ec_key.public_key()))
    policy = JwtPolicy(algorithms=("ES256",), public_key_file=path)
    assert accepts(policy, jwt.encode(CLAIMS, ec_key, algorithm="ES256"))


def test_a_pem_certificate_gives_its_public_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp.example")])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(rsa_key, hashes.SHA256())
    )
    path = write(tmp_path / "cert.pem", certificate.public_bytes(Encoding.PEM))
    policy = JwtPolicy(algorithms=("RS256",), public_key_file=path)
    assert accepts(policy, jwt.encode(CLAIMS, rsa_key, algorithm="RS256"))


# --- JWKS -----------------------------------------------------------------------------------


def test_jwks_keys_are_picked_by_kid(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = {
        "keys": [
            jwk(rsa_key.public_key(), kid="rsa", use="sig"),
            jwk(ec_key.public_key(), kid="ec", alg="ES256"),
            jwk(other.public_key(), kid="encryption", use="enc"),
        ]
    }
    policy = JwtPolicy(
        algorithms=("RS256", "ES256"), jwks_file=write(tmp_path / "j.json", document)
    )
    keys = load_key_material(policy, {})
    assert sorted(keys.jwks) == ["ec", "rsa"]
    assert accepts(policy, jwt.encode(CLAIMS, rsa_key, algorithm="RS256", headers={"kid": "rsa"}))
    assert accepts(policy, jwt.encode(CLAIMS, ec_key, algorithm="ES256", headers={"kid": "ec"}))


def test_a_private_jwk_keeps_only_its_public_half(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    path = write(tmp_path / "j.json", {"keys": [jwk(rsa_key, kid="k")]})
    keys = load_key_material(JwtPolicy(algorithms=("RS256",), jwks_file=path), {})
    assert isinstance(keys.jwks["k"].key, rsa.RSAPublicKey)


# --- misconfigurations ----------------------------------------------------------------------


def test_asymmetric_algorithm_without_any_key_file() -> None:
    error = load_error(JwtPolicy(algorithms=("RS256",)))
    assert error.key_path == "auth.jwt.algorithms"
    assert "RS256 needs public_key_file or jwks_file" in str(error)


def test_a_key_that_cannot_serve_a_listed_algorithm(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = write(tmp_path / "ec.pem", pem(ec_key.public_key()))
    error = load_error(JwtPolicy(algorithms=("RS256",), public_key_file=path))
    assert error.key_path == "auth.jwt.algorithms"
    assert "no key in public_key_file or jwks_file verifies RS256" in str(error)
    only_rs384 = {"keys": [jwk(rsa_key.public_key(), kid="a", alg="RS384")]}
    path = write(tmp_path / "j.json", only_rs384)
    assert "verifies RS256" in str(load_error(JwtPolicy(algorithms=("RS256",), jwks_file=path)))


@pytest.mark.parametrize("field", ["public_key_file", "jwks_file"])
def test_a_missing_file_is_named(tmp_path: Path, field: str) -> None:
    missing = str(tmp_path / "nowhere")
    error = load_error(JwtPolicy(algorithms=("RS256",), **{field: missing}))
    assert error.key_path == f"auth.jwt.{field}"
    assert f"cannot read {missing}" in error.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (lambda: b"-----BEGIN PUBLIC KEY-----\nnope\n", "holds no PEM public key or certificate"),
        (lambda: pem(rsa.generate_private_key(65537, 1024).public_key()), "1024 bits"),
        (lambda: pem(ed25519.Ed25519PrivateKey.generate().public_key()), "only RSA and EC"),
    ],
)
def test_unusable_pem_files_are_explained(
    tmp_path: Path, content: Callable[[], bytes], expected: str
) -> None:
    path = write(tmp_path / "key.pem", content())
    error = load_error(JwtPolicy(algorithms=("RS256",), public_key_file=path))
    assert error.key_path == "auth.jwt.public_key_file"
    assert expected in error.message


def _bad_jwks(rsa_key: rsa.RSAPrivateKey) -> list[tuple[bytes | dict[str, Any], str]]:
    good = jwk(rsa_key.public_key(), kid="a")
    return [
        (b"{not json", "is not JSON"),
        ({"no": "keys"}, 'no "keys" list'),
        ({"keys": ["string"]}, "key #0 is not an object"),
        ({"keys": [{**good, "kid": None}]}, "key #0 has no kid"),
        ({"keys": [good, good]}, "kid 'a' appears twice"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldA", "kid": "h"}]}, "is symmetric"),
        ({"keys": [{**good, "n": "!!"}]}, "is not a usable JWK"),
        ({"keys": [{**good, "alg": "ES256"}]}, "is not a usable JWK"),
        ({"keys": [{**good, "use": "enc"}]}, "holds no signature key"),
        ({"keys": []}, "holds no signature key"),
    ]


def test_unusable_jwks_files_are_explained(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    for index, (content, expected) in enumerate(_bad_jwks(rsa_key)):
        path = write(tmp_path / f"jwks{index}.json", content)
        error = load_error(JwtPolicy(algorithms=("RS256",), jwks_file=path))
        assert error.key_path == "auth.jwt.jwks_file"
        assert expected in str(error), (content, str(error))


def test_a_jwk_whose_alg_does_not_suit_its_key(
    tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """A JWK's declared `alg` must suit the key it holds: ES384 names another curve."""
    entry = jwk(ec_key.public_key(), kid="e", alg="ES384")
    error = load_error(
        JwtPolicy(algorithms=("ES256",), jwks_file=write(tmp_path / "j.json", {"keys": [entry]}))
    )
    assert "alg ES384 does not suit this key" in str(error)


def test_a_broken_private_jwk_is_not_quoted(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    private = jwk(rsa_key, kid="p")
    broken = {**private, "n": "!!"}
    error = load_error(
        JwtPolicy(algorithms=("RS256",), jwks_file=write(tmp_path / "j.json", {"keys": [broken]}))
    )
    assert private["d"] not in str(error)
    assert private["p"] not in str(error)
