"""The hub's observer calls on the metrics object reach their series."""

from __future__ import annotations

from proxy.metrics import Metrics


def sample(metrics: Metrics, line_start: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start}")


def test_events_delivered_counts_messages_per_channel() -> None:
    metrics = Metrics()
    metrics.events_delivered("alerts", 3)
    metrics.events_delivered("alerts", 2)
    assert sample(metrics, 'resilience_proxy_events_delivered_total{channel="alerts"}') == 5.0
