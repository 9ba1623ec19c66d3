"""A route's CORS rule, compiled once per policy load into the header lines it answers with.

Pure: an `Origin` value in, rendered header lines (or a refusal) out. Origins are compared
case-insensitively as whole values (`https://app.example.com`, port included), the way
browsers send them; `*` allows any origin. With `*` and no credentials the answer says `*`,
otherwise it names the origin (and `Vary: Origin` tells caches the answer depends on it).
"""

from __future__ import annotations

from typing import Final

from policies.model import CorsPolicy

ANY: Final = b"*"


class CorsRule:
    """What the sidecar says to a browser on one route."""

    __slots__ = ("any_origin", "credentials", "origins", "preflight_lines", "simple_lines")

    def __init__(self, policy: CorsPolicy) -> None:
        self.any_origin = "*" in policy.allow_origins
        self.origins = frozenset(o.lower().encode() for o in policy.allow_origins if o != "*")
        self.credentials = policy.allow_credentials
        credentials = b"access-control-allow-credentials: true\r\n" if self.credentials else b""
        self.preflight_lines = b"".join(
            [
                b"access-control-allow-methods: %s\r\n" % _joined(policy.allow_methods),
                b"access-control-allow-headers: %s\r\n" % _joined(policy.allow_headers)
                if policy.allow_headers
                else b"",
                b"access-control-max-age: %d\r\n" % int(policy.max_age),
                credentials,
            ]
        )
        """Sent on an allowed preflight's answer, after the origin lines."""
        expose = _joined(policy.expose_headers)
        self.simple_lines = (
            b"access-control-expose-headers: %s\r\n" % expose if expose else b""
        ) + credentials
        """Sent on any other answer to an allowed origin, after the origin lines."""

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin.lower() in self.origins

    def origin_lines(self, origin: bytes) -> bytes:
        """`Access-Control-Allow-Origin` (the origin, or `*`) and `Vary: Origin`."""
        allowed = ANY if self.any_origin and not self.credentials else origin
        return b"access-control-allow-origin: %s\r\nvary: Origin\r\n" % allowed

    def preflight(self, origin: bytes) -> bytes | None:
        """The header lines of the 204 answering a preflight from `origin`; None: refused."""
        if not self.allows(origin):
            return None
        return self.origin_lines(origin) + self.preflight_lines

    def simple(self, origin: bytes | None) -> bytes:
        """The header lines an answer to `origin` carries (none for a disallowed origin)."""
        if origin is None or not self.allows(origin):
            return b""
        return self.origin_lines(origin) + self.simple_lines


def _joined(values: tuple[str, ...]) -> bytes:
    return ", ".join(values).encode()
