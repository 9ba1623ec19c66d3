"""Header rules of a forwarding proxy, as pure functions over raw bytes.

Names arrive lower-cased once by the server; values are passed through as bytes so nothing
is decoded on the hot path. The rules are RFC 9110 section 7.6.1 (hop-by-hop) plus the
forwarding headers the contract promises (X-Forwarded-*, X-Request-Id, identity).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Final

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Set by the sidecar from its own knowledge; a client's copy is never believed (a valid
# `traceparent` is continued, with the sidecar's span as the parent: proxy/core/tracecontext).
REPLACED_ON_REQUEST: frozenset[bytes] = frozenset(
    {
        b"x-user-id",
        b"x-user-role",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
    }
)

# Framing headers the server rewrites itself on a response.
FRAMING: frozenset[bytes] = frozenset({b"content-length", b"transfer-encoding"})

Headers = list[tuple[bytes, bytes]]


def connection_tokens(headers: Headers) -> frozenset[bytes]:
    """Header names listed in `Connection` (hop-by-hop for this message only)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


def strip_hop_by_hop(headers: Headers, extra_drop: frozenset[bytes] = frozenset()) -> Headers:
    """Headers minus every hop-by-hop one (fixed list and those named by `Connection`)."""
    named = connection_tokens(headers) if any(n == b"connection" for n, _ in headers) else ()
    return [
        (name, value)
        for name, value in headers
        if name not in HOP_BY_HOP and name not in extra_drop and name not in named
    ]


_HEX_PAIRS: Final = tuple(b"%02x" % n for n in range(256))


class _RequestIds:
    """32 hex digits: 16 random ones, then a count of the ids made so far.

    Unique across processes (64 random bits) and within one (the count), without a
    getrandom() system call per request. The first 30 digits change once every 256 ids;
    in between an id is one concatenation (bytes formatting cost a microsecond).
    """

    def __init__(self) -> None:
        self.random = os.urandom(8).hex().encode()
        self.made = int.from_bytes(os.urandom(4), "big") << 8
        self.prefix = b""
        """The first 30 digits, set when `made` is a multiple of 256 (as it starts)."""

    def next(self) -> bytes:
        low = self.made & 0xFF
        if low == 0:
            self.prefix = b"%s%014x" % (self.random, self.made >> 8)
        self.made += 1
        return self.prefix + _HEX_PAIRS[low]


_REQUEST_IDS: Final = _RequestIds()


def new_request_id() -> bytes:
    """A fresh X-Request-Id (see `_RequestIds`)."""
    return _REQUEST_IDS.next()


class TrustedProxies:
    """Which peers' X-Forwarded-For is believed, and the client IP that follows from it."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._cache: dict[str, bool] = {}

    def is_trusted(self, ip: str) -> bool:
        known = self._cache.get(ip)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            trusted = False
        else:
            trusted = any(address in net for net in self._networks)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[ip] = trusted
        return trusted

    def forwarded_for(self, peer_ip: str, sent: bytes | None) -> tuple[bytes, str]:
        """The X-Forwarded-For to send upstream and the client IP.

        From a trusted peer the peer is appended to what it sent and the client is the first
        untrusted address counted from the right; from anyone else the header is replaced by
        the peer's address (so a client cannot forge its IP to dodge a per-IP limit).
        """
        peer = peer_ip.encode()
        if sent is None or not self.is_trusted(peer_ip):
            return peer, peer_ip
        chain = [part.strip().decode("latin-1") for part in sent.split(b",") if part.strip()]
        chain.append(peer_ip)
        client = chain[0]
        for address in reversed(chain):
            if not self.is_trusted(address):
                client = address
                break
        return sent + b", " + peer, client
