"""RESP, the Redis protocol, for the commands this sidecar sends itself.

Encoding by hand, because it runs per decision: redis-py's generic encoder cost more than
everything else on the Redis path together. Lone surrogates (a hostile token's user id)
encode and decode back, so no key is ever unencodable.
"""

from __future__ import annotations


def bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def utf8(text: str) -> bytes:
    """Any str, lone surrogates from a hostile token included, encodes and decodes back."""
    return text.encode("utf-8", "surrogatepass")


def bulks(*parts: bytes) -> bytes:
    return b"".join(map(bulk, parts))


def command(*parts: bytes) -> bytes:
    """One RESP command."""
    return b"*%d\r\n%s" % (len(parts), bulks(*parts))
