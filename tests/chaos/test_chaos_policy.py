"""The policy file corrupted under load (CONTRACT 9, reload): first text that is not YAML,
then YAML with a bad value. The running policy stays, no request fails, each rejection is
logged as FILE:LINE:COL, and the good file written afterwards is picked up."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Awaitable, Callable

import yaml

from tests.support.chaos_load import Load, duplicated_sales, errors_by_kind
from tests.support.chaos_report import Row, metric, scrape, wait_until
from tests.support.inventory_app import InventoryApp
from tests.support.policy_files import resilient_upstream
from tests.support.processes import Sidecar

BASELINE_S = 1.0
RELOAD_BOUND_S = 4.0
"""The contract's 2 s, with room for a loaded machine."""
NOT_YAML = b"version: 1\nroutes: [\n  {name: broken, path_prefix: /\n"
FAILED_RELOADS = 'resilience_proxy_policy_reloads_total{result="failure"}'


async def policy_hash(url: str) -> str:
    found = re.search(r'policy_info\{hash="([0-9a-f]{64})"\} 1\.0', await scrape(url))
    assert found, "policy_info missing"
    return found.group(1)


async def test_corrupted_policy_keeps_the_running_one_then_takes_the_good_one(
    inventory: InventoryApp, sidecar_factory: Callable[..., Sidecar], chaos_table: list[Row]
) -> None:
    sidecar = sidecar_factory(
        inventory.url, upstreams={"inventory": resilient_upstream(timeout="5s")}
    )
    config = sidecar.config
    running = hashlib.sha256(config.read_bytes()).hexdigest()
    doc = yaml.safe_load(config.read_text())

    def rejected(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            """the rejection counted"""
            return await metric(sidecar.url, FAILED_RELOADS) >= count

        return check

    load = Load(sidecar.url)
    load.start(deadline_s=60)
    await asyncio.sleep(BASELINE_S)
    config.write_bytes(NOT_YAML)
    await wait_until(rejected(1))
    doc["upstreams"]["inventory"]["timeout"] = "soon"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    await wait_until(rejected(2))
    assert await policy_hash(sidecar.url) == running
    doc["upstreams"]["inventory"]["timeout"] = "2s"
    good = yaml.safe_dump(doc, sort_keys=False).encode()
    config.write_bytes(good)
    written = time.monotonic()

    async def taken() -> bool:
        """the good file loaded"""
        return await policy_hash(sidecar.url) == hashlib.sha256(good).hexdigest()

    reload_s = await wait_until(taken, RELOAD_BOUND_S + 1) - written
    await load.settle(written, quiet_s=0.5)
    outcomes = await load.stop()
    errors = errors_by_kind(outcomes)
    duplicates = duplicated_sales(inventory.db, load)
    chaos_table.append(
        Row("policy file: not YAML, then a bad value, then good", len(outcomes), errors,
            duplicates, reload_s, "normal: the good file loaded, after it was written")
    )  # fmt: skip
    assert errors == {}
    assert duplicates == 0
    assert reload_s < RELOAD_BOUND_S
    log = sidecar.proc.output()
    name = re.escape(config.name)
    assert re.search(rf"{name}:\d+:\d+: \(syntax\)", log), log[-2000:]
    assert re.search(rf"{name}:\d+:\d+: upstreams\.inventory\.timeout", log), log[-2000:]
