"""Which state changes raise which of the sidecar's own alerts (CONTRACT 13)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from proxy.core.events import BreakerTransition
from proxy.hub.events import parse_event
from proxy.hub.operational import (
    OperationalAlerts,
    breaker_alert,
    reload_alert,
    storage_alert,
)
from tests.hub.hubkit import wait_for


def moved(from_state: str, to_state: str, reason: str = "failure_threshold") -> BreakerTransition:
    return BreakerTransition("inventory", from_state, to_state, 0.0, reason)


@pytest.mark.parametrize(
    ("from_state", "to_state", "expected"),
    [
        ("closed", "open", "circuit_breaker_open"),
        ("closed", "forced_open", "circuit_breaker_open"),
        ("forced_closed", "forced_open", "circuit_breaker_open"),
        ("open", "half_open", None),
        ("half_open", "open", None),
        ("open", "forced_open", None),
        ("half_open", "closed", "circuit_breaker_closed"),
        ("open", "closed", "circuit_breaker_closed"),
        ("forced_open", "forced_closed", "circuit_breaker_closed"),
        ("closed", "forced_closed", None),
    ],
)
def test_an_outage_alerts_when_it_starts_and_when_it_ends(
    from_state: str, to_state: str, expected: str | None
) -> None:
    event = breaker_alert(moved(from_state, to_state))
    assert (event and event["alert_type"]) == expected


def test_every_transition_pairs_opens_with_closes() -> None:
    """Over any walk through the states, opens and closes alternate, starting with open."""
    walk = ["closed", "open", "half_open", "open", "half_open", "closed", "forced_open",
            "forced_closed", "forced_open", "closed"]  # fmt: skip
    kinds = []
    for a, b in itertools.pairwise(walk):
        event = breaker_alert(moved(a, b))
        if event:
            kinds.append(event["alert_type"])
    assert kinds == ["circuit_breaker_open", "circuit_breaker_closed"] * 3


def test_the_alerts_are_valid_events_with_the_contracts_severities() -> None:
    events: list[dict[str, Any]] = [
        breaker_alert(moved("closed", "open")) or {},
        breaker_alert(moved("half_open", "closed", "success_threshold")) or {},
        storage_alert(True, "memory"),
        storage_alert(False, "memory"),
        reload_alert("p.yaml", ("p.yaml:3:5: server.lisen: unknown key", "second")),
    ]
    severities = {}
    for event in events:
        parse_event(orjson.dumps(event), 0.0)  # raises if it is not a valid alert
        severities[event["alert_type"]] = event["severity"]
    assert severities == {
        "circuit_breaker_open": "critical",
        "circuit_breaker_closed": "info",
        "storage_fallback": "warning",
        "storage_recovered": "info",
        "policy_reload_failed": "warning",
    }
    opened = events[0]
    assert opened["data"]["breaker"] == "inventory"
    assert opened["data"]["reason"] == "failure_threshold"
    assert events[4]["message"] == "p.yaml:3:5: server.lisen: unknown key"


async def test_nothing_is_published_while_disabled_and_a_failure_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[dict[str, Any]] = []

    async def publish(event: dict[str, Any]) -> int:
        if event["alert_type"] == "storage_fallback":
            raise ConnectionError("broker down")
        published.append(event)
        return len(published)

    alerts = OperationalAlerts(publish)
    alerts.breaker_transition(moved("closed", "open"))
    alerts.enabled = True
    alerts.breaker_transition(moved("closed", "open"))
    alerts.breaker_transition(moved("open", "half_open"))
    alerts.storage_fallback(True)
    alerts.reload_failed("p.yaml", ("bad",))
    await wait_for(lambda: len(published) == 2 and "could not be published" in caplog.text)
    assert [e["alert_type"] for e in published] == [
        "circuit_breaker_open",
        "policy_reload_failed",
    ]
    assert "storage_fallback could not be published" in caplog.text
