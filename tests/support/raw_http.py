"""A raw HTTP/1.1 client for tests that must send exactly these bytes (smuggling, pipelining)."""

from __future__ import annotations

import asyncio
import re


async def exchange(port: int, payload: bytes, read_timeout: float = 5.0) -> bytes:
    """Send `payload`, then read until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    chunks: list[bytes] = []
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), read_timeout)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        writer.close()
    return b"".join(chunks)


def status_codes(raw: bytes) -> list[int]:
    """Status codes of the responses in a raw byte stream (for pipelining checks)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]
