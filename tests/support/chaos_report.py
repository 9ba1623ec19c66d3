"""What the chaos scenarios read from the sidecar, and their table (one row per scenario)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    requests: int
    errors: Counter[str]
    duplicated_sales: int
    normal_after_s: float
    """Seconds from the fault's end to normal (what "normal" is: `note`)."""
    note: str = ""


def format_table(rows: list[Row]) -> str:
    lines = [
        "| scenario | requests | client-visible errors (by kind) | duplicated sales"
        " | back to normal | note |",
        "|---|---:|---|---:|---:|---|",
    ]
    for row in rows:
        errors = ", ".join(f"{kind}: {n}" for kind, n in sorted(row.errors.items())) or "0"
        lines.append(
            f"| {row.scenario} | {row.requests} | {errors} | {row.duplicated_sales}"
            f" | {row.normal_after_s:.1f} s | {row.note} |"
        )
    return "\n".join(lines)


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
        return await resp.text()


async def metric(url: str, series: str) -> float:
    """The value of one exact series (`name{labels}`) in the sidecar's scrape; 0 if absent."""
    for line in (await scrape(url)).splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


async def wait_until(check: Callable[[], Awaitable[bool]], deadline_s: float = 10.0) -> float:
    """Poll `check` until it answers True; the moment it did. Fails past `deadline_s`."""
    end = time.monotonic() + deadline_s
    while not await check():
        assert time.monotonic() < end, f"{check.__doc__} not within {deadline_s}s"
        await asyncio.sleep(0.05)
    return time.monotonic()
