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


def command_parts(encoded: bytes) -> list[bytes]:
    """The arguments of one encoded command, for a client that takes arguments rather than
    bytes (the cluster client, which routes each command by its keys)."""
    head, _, rest = encoded.partition(b"\r\n")
    if head[:1] != b"*":
        raise ValueError("not a RESP command")
    parts: list[bytes] = []
    position = 0
    for _ in range(int(head[1:])):
        end = rest.index(b"\r\n", position)
        if rest[position : position + 1] != b"$":
            raise ValueError("not a RESP bulk string")
        size = int(rest[position + 1 : end])
        start = end + 2
        parts.append(rest[start : start + size])
        position = start + size + 2
    return parts
