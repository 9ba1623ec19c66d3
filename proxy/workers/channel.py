"""The supervisor <-> worker channel: length-prefixed orjson messages on asyncio streams.

One message is a JSON object with a type `t`; a 4-byte big-endian length precedes it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

HEADER = struct.Struct(">I")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""A scrape of many series is a few hundred kB; anything near this is a bug."""

Message = dict[str, Any]


async def receive(reader: asyncio.StreamReader) -> Message | None:
    """The next message, or None once the other end has closed (or died)."""
    try:
        head = await reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(head)
        if size > MAX_MESSAGE_BYTES:
            raise ValueError(f"channel message of {size} bytes")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message = orjson.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a channel message is a JSON object")
    return message


def send(writer: asyncio.StreamWriter, message: Message) -> None:
    """Queue one message (never blocks; the stream buffers)."""
    if writer.is_closing():
        return
    data = orjson.dumps(message)
    writer.write(HEADER.pack(len(data)) + data)
