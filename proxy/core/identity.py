"""Bearer token -> `Identity`, or `InvalidToken`: the sidecar's one JWT verifier.

It runs on every request, so verdicts are cached per token (`TokenVerifier`). Key material
arrives already read and parsed (`proxy.keys.KeyMaterial`): nothing here touches files or
the environment. pyjwt checks the signature only; every claim (exp, nbf, iat, iss, aud, user,
role) is checked here against the injected clock, so the rules do not drift with pyjwt's
versions and tests move time by hand.

Rejection messages are fixed phrases (`MALFORMED`, `BAD_SIGNATURE` ...): they become the
401 body, so they never echo the token or a key.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import jwt

from policies.model import JwtPolicy
from proxy.clock import Clock
from proxy.core.token_cache import TokenCache
from proxy.errors import InvalidToken, KeysRefreshing
from proxy.keys import HMAC_ALGORITHMS, KeyMaterial, KeyRing

MALFORMED = "malformed token"
ALGORITHM_NOT_ALLOWED = "algorithm not allowed"
UNKNOWN_KEY = "unknown key id"
BAD_SIGNATURE = "bad signature"
EXPIRED = "token expired"
NOT_YET_VALID = "token not yet valid"
BAD_ISSUER = "invalid issuer"
BAD_AUDIENCE = "invalid audience"
MISSING_USER = "missing user claim"
INVALID_USER = "invalid user claim"
MISSING_ROLE = "missing role claim"
INVALID_ROLE = "invalid role claim"
KEYS_UNAVAILABLE = "signing keys unavailable"
NO_VERIFICATION = "no token verification is configured"

MAX_CACHED_HEADER = 4096
"""Longer `Authorization` values are looked up by their token's digest only."""
DEFAULT_CACHE_SIZE = 10_000
"""Tokens remembered per verifier, accepted and refused ones each."""
MAX_IDENTITY_BYTES = 256
"""Longest user id or role, in UTF-8 bytes (they become header values upstream)."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sent a request: the user and role of a verified token, or `ANONYMOUS`."""

    user_id: str
    role: str
    expires_at: float | None
    """The token's `exp` in unix seconds; None without an `exp` (or without a token)."""
    authenticated: bool


ANONYMOUS = Identity(user_id="", role="anonymous", expires_at=None, authenticated=False)


def identity_token_expiry(identity: Identity, leeway: float) -> float | None:
    """Unix time from which the identity's token is refused: `exp + leeway` (contract 9).

    The WebSocket hub compares it with `Clock.wall()` to send `auth_expired`; it is the same
    instant at which `TokenVerifier` starts refusing the token, so a socket never outlives
    what a plain request would be allowed.
    """
    if identity.expires_at is None:
        return None
    return identity.expires_at + leeway


class _Rejected(Exception):
    """A verdict against a token; a `lasting` one holds for as long as the keys do."""

    def __init__(self, message: str, *, lasting: bool = True, waiter: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.lasting = lasting
        self.waiter = waiter
        """An early key refresh under way: the token is worth judging again after it."""


class TokenVerifier:
    """Turns an `Authorization` value into an `Identity`, or raises `InvalidToken`.

    Choices where the contract is silent (Envoy's `jwt_authn` behaves alike but for roles):
    - No header, or another scheme (`Basic ...`): `ANONYMOUS`. Those credentials are meant
      for the upstream (the header is forwarded unchanged); they are no JWT of ours.
    - `Bearer` is matched case-insensitively; `Bearer` with nothing after it is malformed.
    - The header `alg` must be one the policy lists, checked before any key is chosen: HS*
      tokens are verified with the HMAC secret only, RS/ES tokens with a public key only, so
      `alg: none` and HS/RS key confusion cannot succeed.
    - With a JWKS, a token's `kid` picks the key (unknown kid: refused); a token without
      `kid` uses the PEM key, and is refused if there is none.
    - `exp`, `nbf`, `iat` are optional but, when present, must be finite numbers and are
      checked with `leeway`; `iss`/`aud` only when the policy sets them (`aud` may be a list).
    - The user claim must be a non-empty string or an integer (read as text); user and
      role must be valid header values (`is_header_value`), as they are sent upstream.
    - A token without the role claim is refused (`missing role claim`) rather than demoted
      to `anonymous`: a signed token lacking it is minted for something else or read with
      the wrong `role_claim`, and a silent demotion would hide that behind odd rate limits.
      Operators who want leniency set `auth.invalid_token: anonymous`.

    - Without `auth.jwt` (identity off) every request is anonymous, whatever it carries;
      `verify_token` (a WebSocket `auth`) is refused with `NO_VERIFICATION`.
    - Keys come through a `KeyRing`: when its version moves (a key file rewritten, a JWKS
      fetched) every cached verdict is dropped. A token whose `kid` the ring lacks asks
      the ring for an early refresh; one under way is raised as `KeysRefreshing`, so the
      caller may wait for it and ask again. Until a `jwks_url` was fetched once, tokens
      needing a public key get `KEYS_UNAVAILABLE` (not cached).

    Verdicts are cached by a 16-byte BLAKE2b digest of the token, which keeps each entry's
    size fixed whatever a client sends: accepted tokens until `exp + leeway` (never later),
    refused ones for as long as the verdict holds (all but "not yet valid", which time
    cures). An accepted token is also remembered by the whole `Authorization` value it came
    in (up to `MAX_CACHED_HEADER` bytes, in a cache of its own), so a client sending the same
    header again costs one lookup: a bytes key hashes once, where a digest per request cost
    more than the rest of the identity stage. A reload builds a new verifier, so nothing
    cached outlives the keys or the policy it was decided with.
    """

    __slots__ = (
        "_accepted",
        "_algorithms",
        "_by_header",
        "_cache_size",
        "_clock",
        "_enabled",
        "_jws",
        "_keys",
        "_policy",
        "_refused",
        "_ring",
        "_version",
        "_weak_key",
    )

    def __init__(
        self,
        jwt_policy: JwtPolicy | None,
        keys: KeyMaterial | KeyRing,
        clock: Clock,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._policy = jwt_policy if jwt_policy is not None else JwtPolicy()
        self._enabled = jwt_policy is not None
        self._ring = keys if isinstance(keys, KeyRing) else KeyRing(keys)
        self._version = self._ring.version
        self._keys = self._ring.material
        self._clock = clock
        self._algorithms = frozenset(self._policy.algorithms)
        # Only the listed algorithms exist for this instance. A short HS secret is accepted
        # (proxy.keys warns once at load); pyjwt's per-call warning about it is silenced.
        self._jws = jwt.PyJWS(algorithms=list(self._policy.algorithms))
        self._weak_key = bool(self._keys.warnings)
        self._cache_size = cache_size
        self._accepted: TokenCache[Identity] = TokenCache(cache_size)
        self._by_header: TokenCache[Identity] = TokenCache(cache_size)
        self._refused: TokenCache[str] = TokenCache(cache_size)

    def _follow_ring(self) -> None:
        """New keys: take them, and forget every verdict made with the old ones."""
        ring = self._ring
        self._version = ring.version
        self._keys = ring.material
        self._weak_key = bool(self._keys.warnings)
        self._accepted = TokenCache(self._cache_size)
        self._by_header = TokenCache(self._cache_size)
        self._refused = TokenCache(self._cache_size)

    def verify(self, authorization: bytes | str | None) -> Identity:
        """The identity an `Authorization` header value proves (`ANONYMOUS` if none)."""
        if authorization is None or not self._enabled:
            return ANONYMOUS
        if self._ring.version != self._version:
            self._follow_ring()
        header = None
        if isinstance(authorization, bytes):
            if len(authorization) <= MAX_CACHED_HEADER:
                header = authorization
                known = self._by_header.get(header, self._clock.wall())
                if known is not None:
                    return known
            authorization = authorization.decode("latin-1")
        parts = authorization.split(maxsplit=1)
        if not parts or parts[0].lower() != "bearer":
            return ANONYMOUS
        identity = self.verify_token(parts[1] if len(parts) == 2 else "")
        if header is not None and identity.authenticated:
            until = identity_token_expiry(identity, self._policy.leeway)
            self._by_header.put(header, identity, math.inf if until is None else until)
        return identity

    def verify_token(self, token: str) -> Identity:
        """The identity a bare token proves (WebSocket `auth` message or subprotocol)."""
        if not self._enabled:
            raise InvalidToken(NO_VERIFICATION)
        if self._ring.version != self._version:
            self._follow_ring()
        token = token.strip()
        if not token or not token.isascii():
            raise InvalidToken(MALFORMED)
        raw = token.encode("ascii")
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        now = self._clock.wall()
        identity = self._accepted.get(digest, now)
        if identity is not None:
            return identity
        refusal = self._refused.get(digest, now)
        if refusal is not None:
            raise InvalidToken(refusal)
        try:
            identity, valid_until = self._verify_uncached(raw, now)
        except _Rejected as rejected:
            if rejected.waiter is not None:
                raise KeysRefreshing(rejected.message, rejected.waiter) from None
            if rejected.lasting:
                self._refused.put(digest, rejected.message, math.inf)
            raise InvalidToken(rejected.message) from None
        self._accepted.put(digest, identity, valid_until)
        return identity

    def _verify_uncached(self, raw: bytes, now: float) -> tuple[Identity, float]:
        try:
            header = self._jws.get_unverified_header(raw)
        except jwt.PyJWTError:
            raise _Rejected(MALFORMED) from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _Rejected(ALGORITHM_NOT_ALLOWED)
        key = self._key_for(alg, header.get("kid"))
        try:
            if self._weak_key:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
                    decoded = self._jws.decode_complete(raw, key, algorithms=[alg])
            else:
                decoded = self._jws.decode_complete(raw, key, algorithms=[alg])
            payload = decoded["payload"]
        except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
            raise _Rejected(BAD_SIGNATURE) from None
        except jwt.PyJWTError:
            raise _Rejected(MALFORMED) from None
        return self._identity_from(_claims(payload), now)

    def _key_for(self, alg: str, kid: str | None) -> Any:
        """The one key allowed to verify `alg`: never a public key for HS*, nor the reverse."""
        keys = self._keys
        if alg in HMAC_ALGORITHMS:
            if keys.hmac_secret is None:
                raise _Rejected(ALGORITHM_NOT_ALLOWED)
            return keys.hmac_secret
        ring = self._ring
        if not ring.available:
            raise _Rejected(KEYS_UNAVAILABLE, lasting=False)
        if kid is not None and (keys.jwks or ring.on_unknown_kid is not None):
            chosen = keys.jwks.get(kid)
        else:
            chosen = keys.public_key
        if chosen is None:
            hook = ring.on_unknown_kid
            if kid is not None and hook is not None:
                raise _Rejected(UNKNOWN_KEY, waiter=hook(kid))
            raise _Rejected(UNKNOWN_KEY)
        if alg not in chosen.algorithms:
            raise _Rejected(ALGORITHM_NOT_ALLOWED)
        return chosen.key

    def _identity_from(self, claims: dict[str, Any], now: float) -> tuple[Identity, float]:
        """Check the claims at `now`; the identity and the instant it stops being valid."""
        policy = self._policy
        leeway = policy.leeway
        exp = _numeric_date(claims, "exp")
        if exp is not None and now >= exp + leeway:
            raise _Rejected(EXPIRED)
        for name in ("nbf", "iat"):
            moment = _numeric_date(claims, name)
            if moment is not None and moment > now + leeway:
                raise _Rejected(NOT_YET_VALID, lasting=False)
        if policy.issuer is not None and claims.get("iss") != policy.issuer:
            raise _Rejected(BAD_ISSUER)
        if policy.audience is not None and not _audience_matches(
            claims.get("aud"), policy.audience
        ):
            raise _Rejected(BAD_AUDIENCE)
        identity = Identity(
            user_id=_user_id(claims, policy.user_claim),
            role=_role(claims, policy.role_claim),
            expires_at=exp,
            authenticated=True,
        )
        return identity, math.inf if exp is None else exp + leeway


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except (ValueError, RecursionError):
        raise _Rejected(MALFORMED) from None
    if not isinstance(claims, dict):
        raise _Rejected(MALFORMED)
    return claims


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim as float; JSON's NaN/Infinity and huge ints are malformed."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Rejected(MALFORMED)
    try:
        number = float(value)
    except OverflowError:
        raise _Rejected(MALFORMED) from None
    if not math.isfinite(number):
        raise _Rejected(MALFORMED)
    return number


def _audience_matches(aud: Any, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in aud


def _user_id(claims: dict[str, Any], name: str) -> str:
    if name not in claims:
        raise _Rejected(MISSING_USER)
    value = claims[name]
    if isinstance(value, str) and value and is_header_value(value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        if len(text) <= MAX_IDENTITY_BYTES:
            return text
    raise _Rejected(INVALID_USER)


def _role(claims: dict[str, Any], name: str) -> str:
    if name not in claims:
        raise _Rejected(MISSING_ROLE)
    value = claims[name]
    if isinstance(value, str) and value and is_header_value(value):
        return value
    raise _Rejected(INVALID_ROLE)


def is_header_value(text: str) -> bool:
    """Can `text` go upstream as X-User-Id / X-User-Role as it is (CONTRACT 14)?

    No control character (CR and LF would inject header lines, NUL cuts them) and at most
    `MAX_IDENTITY_BYTES` in UTF-8: such a claim makes the token invalid, never a header.
    """
    if len(text) > MAX_IDENTITY_BYTES:
        return False
    if len(text.encode("utf-8", "replace")) > MAX_IDENTITY_BYTES:
        return False
    for char in text:
        code = ord(char)
        if code < 0x20 or code == 0x7F:
            return False
    return True
