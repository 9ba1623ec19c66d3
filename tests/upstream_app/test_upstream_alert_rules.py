"""When alerts fire and how often they repeat, with a fake clock and a recording publisher."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from upstream_app import payloads
from upstream_app.alerts import AlertChecker, AnnounceThrottle
from upstream_app.clock import utc_today
from upstream_app.db import Database
from upstream_app.seed import prepare_database
from upstream_app.store.lotes import LotAdded
from upstream_app.store.ventas import SaleRecorded

REALERT_S = 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("alerts") / "seeded.db"
    assert prepare_database(path, "pw-unit-tests")
    return path


def make_checker(db: Path) -> tuple[AlertChecker, Recorder, FakeClock]:
    clock, recorder = FakeClock(), Recorder()
    checker = AlertChecker(
        Database(db),
        recorder,
        expiry_days=7,
        throttle=AnnounceThrottle(REALERT_S, clock),
    )
    return checker, recorder, clock


def test_throttle_allows_once_per_interval() -> None:
    clock = FakeClock()
    throttle = AnnounceThrottle(10.0, clock)
    assert throttle.due("a")
    throttle.mark("a")
    assert not throttle.due("a")
    assert throttle.due("b")
    clock.now += 9.9
    assert not throttle.due("a")
    clock.now += 0.1
    assert throttle.due("a")


async def test_periodic_check_announces_seeded_alerts_then_waits(seeded_db: Path) -> None:
    checker, recorder, clock = make_checker(seeded_db)
    first = await checker.check()
    kinds = sorted(event["alert_type"] for event in first)
    assert kinds.count("stock_bajo") == 4
    assert kinds.count("producto_proximo_vencer") == 5
    assert recorder.events == first

    assert await checker.check() == []
    clock.now += REALERT_S - 1
    assert await checker.check() == []
    clock.now += 1
    assert len(await checker.check()) == 9


async def test_forced_check_ignores_the_interval(seeded_db: Path) -> None:
    checker, _, _ = make_checker(seeded_db)
    assert len(await checker.check()) == 9
    assert len(await checker.check(force=True)) == 9


def _sale(before: int, after: int, umbral: int) -> SaleRecorded:
    return SaleRecorded({}, "Zinc", umbral, before, after)


@pytest.mark.parametrize(
    ("before", "after", "crosses"),
    [(10, 9, True), (12, 0, True), (10, 10, False), (11, 10, False), (9, 8, False)],
)
def test_sale_alerts_only_when_crossing_the_threshold(
    seeded_db: Path, before: int, after: int, crosses: bool
) -> None:
    checker, recorder, _ = make_checker(seeded_db)
    checker.sale_recorded(4, _sale(before, after, umbral=10))
    expected = [payloads.stock_bajo(4, "Zinc", after, 10)] if crosses else []
    assert recorder.events == expected


async def test_crossing_counts_as_the_announcement(seeded_db: Path) -> None:
    checker, recorder, _ = make_checker(seeded_db)
    checker.sale_recorded(4, _sale(10, 4, umbral=10))
    await checker.check()
    zinc = [e for e in recorder.events if e["data"].get("producto_id") == 4]
    assert [e["alert_type"] for e in zinc] == ["stock_bajo"]


@pytest.mark.parametrize(
    ("days", "severity"),
    [(0, "critical"), (3, "critical"), (4, "warning"), (7, "warning"), (8, None)],
)
def test_new_lot_near_expiry_alerts_at_once(
    seeded_db: Path, days: int, severity: str | None
) -> None:
    checker, recorder, _ = make_checker(seeded_db)
    vence = (utc_today() + timedelta(days=days)).isoformat()
    lote = {"lote_id": 99, "producto_id": 4, "cantidad": 5, "fecha_vencimiento": vence}
    checker.lot_added(LotAdded(lote, "Zinc", 0, 5))
    assert [e["severity"] for e in recorder.events] == ([severity] if severity else [])
