"""The token verifier's key material (`KeyMaterial`) and its reading, once per policy load.

Reading happens at load or reload, never per request; the value objects live here, in layer
0, so the pure verifier (`proxy.core.identity`) takes them without touching files.

The HS* secret comes from the environment variable named by `auth.jwt.secret_env`; public
keys from `public_key_file` (a PEM public key or certificate) and `jwks_file` (a JWKS whose
keys are picked by `kid`). Everything is checked here, so a policy that could not verify a
single token fails to load with a message naming the key at fault, instead of answering
401 to everyone:
- an HS* secret shorter than its hash (RFC 7518 section 3.2) and an RSA key under 2048 bits
  are refused, as pyjwt recommends; the verifier then never warns on the request path;
- every listed RS/ES algorithm needs a key able to verify it;
- JWKS keys marked `use: enc` are skipped (they are not for signatures); in a `jwks_file`
  any other key that cannot be used (no `kid`, symmetric, unsupported type or curve) is an
  error, not a skip. A JWKS fetched from `jwks_url` is the identity provider's to publish:
  there such a key is skipped with a warning, so one exotic key never hides the good ones.
No message carries key material: pyjwt's JWK errors quote the whole JWK (private parts
included), so ours replace them.

Keys that change (`jwks_url`, key files rewritten) reach the verifier through a `KeyRing`:
the holder of the current `KeyMaterial`, replaced whole, whose version the verifier checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

if TYPE_CHECKING:  # annotation only: this module and `policies` are both layer 0
    from policies.model import JwtPolicy

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})

SECRET_PATH = "auth.jwt.secret_env"
PUBLIC_KEY_PATH = "auth.jwt.public_key_file"
JWKS_PATH = "auth.jwt.jwks_file"
JWKS_URL_PATH = "auth.jwt.jwks_url"
ALGORITHMS_PATH = "auth.jwt.algorithms"

_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_MIN_BITS = 2048
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512"})
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A parsed public key and the algorithms it may verify (decided where it was read)."""

    key: Any = field(repr=False)
    """A `cryptography` RSA or EC public key object."""
    algorithms: frozenset[str]


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    """Every key a verifier may use; built once per policy load by `load_key_material`."""

    hmac_secret: bytes | None = None
    """The HS* key; only ever used for HS* tokens."""
    public_key: VerificationKey | None = None
    """The PEM key: used for RS/ES tokens without a `kid`, or when there is no JWKS."""
    jwks: Mapping[str, VerificationKey] = field(default_factory=lambda: MappingProxyType({}))
    """kid -> key; a token naming a kid absent from it is refused."""
    warnings: tuple[str, ...] = ()
    """Weaknesses worth a log line at load (never the key itself)."""

    def __repr__(self) -> str:
        secret = None if self.hmac_secret is None else "<hidden>"
        return (
            f"KeyMaterial(hmac_secret={secret}, public_key={self.public_key!r}, "
            f"jwks_kids={sorted(self.jwks)!r})"
        )


class KeyRing:
    """The key material in use now; `replace` swaps it whole and bumps `version`.

    `available` is False while a `jwks_url` has not been fetched yet: tokens that need a
    public key are then refused as "signing keys unavailable". `on_unknown_kid`, set by the
    JWKS refresher, is asked when a token names a kid the set lacks: it answers an awaitable
    when an early refresh runs (the token is judged again after it), else None.
    """

    __slots__ = ("available", "material", "on_unknown_kid", "version")

    def __init__(self, material: KeyMaterial, available: bool = True) -> None:
        self.material = material
        self.available = available
        self.version = 0
        self.on_unknown_kid: Callable[[str], object | None] | None = None

    def replace(self, material: KeyMaterial, available: bool = True) -> None:
        self.material = material
        self.available = available
        self.version += 1


class KeyMaterialError(Exception):
    """Key material missing or unusable; `key_path` names the policy key at fault."""

    def __init__(self, key_path: str, message: str) -> None:
        super().__init__(f"{key_path}: {message}")
        self.key_path = key_path
        self.message = message


def load_key_material(jwt_policy: JwtPolicy | None, environ: Mapping[str, str]) -> KeyMaterial:
    """Every key `jwt_policy` needs, read and checked; `KeyMaterialError` otherwise.

    No `auth.jwt` (identity off): no key at all. With a `jwks_url`, its keys are not known
    yet: they join through `with_fetched_jwks` once fetched.
    """
    if jwt_policy is None:
        return KeyMaterial()
    hmac_algorithms = [alg for alg in jwt_policy.algorithms if alg in HMAC_ALGORITHMS]
    secret = None
    notes: list[str] = []
    if hmac_algorithms:
        secret = _hmac_secret(jwt_policy.secret_env, hmac_algorithms, environ)
        weak = weak_secret_warning(jwt_policy.secret_env, secret, hmac_algorithms)
        if weak is not None:
            notes.append(weak)
    public_key = None
    if jwt_policy.public_key_file is not None:
        public_key = _read_public_key(jwt_policy.public_key_file)
    jwks = {} if jwt_policy.jwks_file is None else _read_jwks(jwt_policy.jwks_file)
    if jwt_policy.jwks_url is None:
        _check_every_algorithm_has_a_key(jwt_policy, [public_key, *jwks.values()])
    return KeyMaterial(
        hmac_secret=secret,
        public_key=public_key,
        jwks=MappingProxyType(jwks),
        warnings=tuple(notes),
    )


def _hmac_secret(env_name: str, algorithms: Sequence[str], environ: Mapping[str, str]) -> bytes:
    value = environ.get(env_name)
    if not value:
        needs = ", ".join(algorithms)
        raise KeyMaterialError(SECRET_PATH, f"environment variable {env_name} is not set ({needs})")
    # surrogateescape gives back the exact bytes of an os.environ value that is not UTF-8.
    return value.encode("utf-8", "surrogateescape")


def weak_secret_warning(env_name: str, secret: bytes, algorithms: Sequence[str]) -> str | None:
    """A secret under RFC 7518's minimum still works (the app it fronts signs with it), but
    operators hear about it once at load rather than tokens failing in production."""
    strictest = max(algorithms, key=_HMAC_MIN_BYTES.__getitem__)
    needed = _HMAC_MIN_BYTES[strictest]
    if len(secret) >= needed:
        return None
    return (
        f"{env_name} holds {len(secret)} bytes; {strictest} should have at least {needed} "
        "(RFC 7518 section 3.2)"
    )


def _read(path: str, key_path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyMaterialError(key_path, f"cannot read {path}: {exc.strerror or exc}") from None


def _read_public_key(path: str) -> VerificationKey:
    data = _read(path, PUBLIC_KEY_PATH)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyMaterialError(
            PUBLIC_KEY_PATH, f"{path} holds no PEM public key or certificate"
        ) from None
    return _verification_key(key, None, PUBLIC_KEY_PATH, path)


def _read_jwks(path: str) -> dict[str, VerificationKey]:
    keys, _ = parse_jwks(_read(path, JWKS_PATH), path, JWKS_PATH, skip_unusable=False)
    return keys


def parse_jwks(
    data: bytes, label: str, key_path: str, *, skip_unusable: bool
) -> tuple[dict[str, VerificationKey], list[str]]:
    """kid -> key of a JWKS document, and a warning per key skipped (`skip_unusable`)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyMaterialError(key_path, f"{label} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise KeyMaterialError(key_path, f'{label} is not a JWKS (no "keys" list)')
    keys: dict[str, VerificationKey] = {}
    skipped: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise KeyMaterialError(key_path, f"{label}: key #{index} is not an object")
        if entry.get("use") == "enc":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise KeyMaterialError(key_path, f"{label}: key #{index} has no kid")
        if kid in keys:
            raise KeyMaterialError(key_path, f"{label}: kid {kid!r} appears twice")
        try:
            keys[kid] = _jwk(entry, f"{label}: key {kid!r}", key_path)
        except KeyMaterialError as error:
            if not skip_unusable:
                raise
            skipped.append(f"{error.message}: skipped")
    if not keys:
        raise KeyMaterialError(key_path, f"{label} holds no signature key")
    return keys, skipped


def with_fetched_jwks(base: KeyMaterial, fetched: Mapping[str, VerificationKey]) -> KeyMaterial:
    """`base` (the secret, the PEM key, a jwks_file) joined by the keys of a jwks_url."""
    return KeyMaterial(
        hmac_secret=base.hmac_secret,
        public_key=base.public_key,
        jwks=MappingProxyType({**base.jwks, **fetched}),
        warnings=base.warnings,
    )


def _jwk(entry: dict[str, Any], label: str, key_path: str) -> VerificationKey:
    if entry.get("kty") == "oct":
        raise KeyMaterialError(key_path, f"{label} is symmetric; HS* keys come from secret_env")
    if entry.get("kty") not in ("RSA", "EC"):
        raise KeyMaterialError(
            key_path, f"{label}: only RSA and EC (P-256, P-384, P-521) keys are supported"
        )
    try:
        parsed = jwt.PyJWK(entry)
    except jwt.PyJWTError:
        raise KeyMaterialError(key_path, f"{label} is not a usable JWK") from None
    return _verification_key(parsed.key, entry.get("alg"), key_path, label)


def _verification_key(key: Any, jwk_alg: str | None, key_path: str, label: str) -> VerificationKey:
    """The algorithms a key may verify, from its type and curve (and the JWK's `alg`)."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _RSA_MIN_BITS:
            raise KeyMaterialError(
                key_path, f"{label}: RSA key of {key.key_size} bits, at least 2048 needed"
            )
        algorithms = _RSA_ALGORITHMS
    elif isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _EC_ALGORITHMS:
        algorithms = frozenset({_EC_ALGORITHMS[key.curve.name]})
    else:
        raise KeyMaterialError(
            key_path, f"{label}: only RSA and EC (P-256, P-384, P-521) keys are supported"
        )
    if jwk_alg is not None:
        if jwk_alg not in algorithms:
            raise KeyMaterialError(key_path, f"{label}: alg {jwk_alg} does not suit this key")
        algorithms = frozenset({jwk_alg})
    return VerificationKey(key=key, algorithms=algorithms)


def _check_every_algorithm_has_a_key(
    jwt_policy: JwtPolicy, keys: list[VerificationKey | None]
) -> None:
    available = [key for key in keys if key is not None]
    for alg in jwt_policy.algorithms:
        if alg in HMAC_ALGORITHMS or any(alg in key.algorithms for key in available):
            continue
        if not available:
            raise KeyMaterialError(ALGORITHMS_PATH, f"{alg} needs public_key_file or jwks_file")
        raise KeyMaterialError(
            ALGORITHMS_PATH, f"no key in public_key_file or jwks_file verifies {alg}"
        )
