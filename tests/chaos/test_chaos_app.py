"""The app crashes (SIGKILL, restarted on its port) or freezes (SIGSTOP, SIGCONT) under load.

Clients see the sidecar's own errors while the app is away (never a hung or dropped
request), no sale is made twice, and the breaker's probe brings traffic back within
seconds of the app's return, long before its 60 s `recovery_timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from tests.support.chaos_load import Load, duplicated_sales, errors_by_kind, time_to_normal
from tests.support.chaos_report import Row, metric
from tests.support.inventory_app import InventoryApp
from tests.support.policy_files import resilient_upstream
from tests.support.processes import Sidecar

BASELINE_S = 1.0
KILLED_S = 2.0
FROZEN_S = 4.0
"""Longer than an attempt's three tries (1 s each): shorter, and the retries hide it all."""
RECOVERY_BOUND_S = 10.0
"""Generous for a loaded 2-core machine; the point is "seconds, not recovery_timeout (60 s)"."""
WHILE_AWAY = {"502 upstream_unavailable", "503 circuit_open", "504 upstream_timeout"}
"""What the sidecar answers while the app is away: its own errors, fast."""
ANSWER_LOST = "409 idempotency_key_answer_lost"
"""A sale committed just before the crash, its answer lost: the app says so, never resells."""


async def run_outage(
    sidecar: Sidecar, fault: Callable[[], None], lasting_s: float, end: Callable[[], None]
) -> tuple[Load, float]:
    """Load, `fault()`, `lasting_s`, `end()` (in a thread: it may wait for the app); the
    load and the seconds from `end()` back to normal."""
    load = Load(sidecar.url)
    load.start(deadline_s=60)
    await asyncio.sleep(BASELINE_S)
    fault()
    await asyncio.sleep(lasting_s)
    await asyncio.to_thread(end)
    fault_end = time.monotonic()
    await load.settle(fault_end)
    outcomes = await load.stop()
    return load, time_to_normal(outcomes, fault_end)


async def test_app_killed_and_restarted_recovers_in_seconds(
    inventory: InventoryApp, sidecar_factory: Callable[..., Sidecar], chaos_table: list[Row]
) -> None:
    sidecar = sidecar_factory(inventory.url, upstreams={"inventory": resilient_upstream()})
    load, normal_after = await run_outage(sidecar, inventory.kill, KILLED_S, inventory.start)
    errors = errors_by_kind(load.outcomes)
    duplicates = duplicated_sales(inventory.db, load)
    chaos_table.append(
        Row("app SIGKILL, restarted", len(load.outcomes), errors, duplicates, normal_after,
            "normal: every request succeeds (app back at 0)")
    )  # fmt: skip
    assert set(errors) <= WHILE_AWAY | {ANSWER_LOST}, errors
    assert errors["503 circuit_open"] > 0  # the breaker opened while the app was down
    assert duplicates == 0
    assert normal_after < RECOVERY_BOUND_S
    probe_ok = 'resilience_proxy_breaker_probes_total{breaker="inventory",result="success"}'
    assert await metric(sidecar.url, probe_ok) >= 1


async def test_app_frozen_then_resumed_recovers_in_seconds(
    inventory: InventoryApp, sidecar_factory: Callable[..., Sidecar], chaos_table: list[Row]
) -> None:
    sidecar = sidecar_factory(inventory.url, upstreams={"inventory": resilient_upstream()})
    load, normal_after = await run_outage(sidecar, inventory.freeze, FROZEN_S, inventory.thaw)
    errors = errors_by_kind(load.outcomes)
    duplicates = duplicated_sales(inventory.db, load)
    chaos_table.append(
        Row("app SIGSTOP, SIGCONT", len(load.outcomes), errors, duplicates, normal_after,
            "normal: every request succeeds (SIGCONT at 0)")
    )  # fmt: skip
    assert set(errors) <= WHILE_AWAY, errors
    assert errors["504 upstream_timeout"] > 0  # attempts timed out while the app was frozen
    assert duplicates == 0
    assert normal_after < RECOVERY_BOUND_S
