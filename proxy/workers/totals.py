"""One `/metrics` for all workers: snapshots of each worker's registry, summed.

- counters and histograms: the sum over live workers, plus what dead workers had reached
  at their last snapshot (so a restart does not take a total back);
- `websocket_connections` and `in_flight`: summed over live workers;
- `storage_fallback_active`: the highest over live workers (1 while any worker's store is
  on its fallback: each worker guards its own Redis connection, and `/readyz` lists
  `redis` under `degraded` on every worker then too);
- `circuit_breaker_state` and `circuit_breaker_transitions_total`: the supervisor's
  shared breakers (a worker's own rows only for the store's per-worker `redis` breaker);
- every other gauge (`policy_info`, `process_*` gauges): the scraping worker's own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from proxy.metrics import BREAKER_STATES, PREFIX

Family = list[Any]
"""`[name, type, documentation, [[sample_name, labels, value], ...]]`, JSON-ready."""
SampleKey = tuple[str, tuple[tuple[str, str], ...]]

SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})
SUMMED_GAUGES = frozenset({PREFIX + "websocket_connections", PREFIX + "in_flight"})
HIGHEST_GAUGES = frozenset({PREFIX + "storage_fallback_active"})
SHARED = frozenset({PREFIX + "circuit_breaker_state", PREFIX + "circuit_breaker_transitions"})


def snapshot(registry: CollectorRegistry) -> list[Family]:
    """A worker's registry as plain data for the channel."""
    return [
        [f.name, f.type, f.documentation, [[s.name, s.labels, s.value] for s in f.samples]]
        for f in registry.collect()
    ]


class Table:
    """Families by name, each with its samples by (sample name, labels), in first-seen order."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, dict[SampleKey, float]]] = {}

    def add(self, family: Family, how: str = "sum", skip_shared: frozenset[str] = SHARED,
            shared_names: Iterable[str] = ()) -> None:  # fmt: skip
        """`how`: "sum" the samples into the table's, take the "highest", or "set" them."""
        name, kind, doc, samples = family
        entry = self.families.get(name)
        if entry is None:
            entry = self.families[name] = (kind, doc, {})
        values = entry[2]
        shared = set(shared_names)
        for sample_name, labels, value in samples:
            if name in skip_shared and labels.get("breaker") in shared:
                continue
            key = (sample_name, tuple(labels.items()))
            before = values.get(key)
            if before is None or how == "set":
                values[key] = float(value)
            elif how == "sum":
                values[key] = before + float(value)
            else:
                values[key] = max(before, float(value))

    def collect(self) -> Iterator[Metric]:
        for name, (kind, doc, values) in self.families.items():
            metric = Metric(name, doc, kind)
            for (sample_name, labels), value in values.items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(cast(Collector, self))
        return generate_latest(registry)


def combined(family: Family) -> str | None:
    """How the live workers' samples of a family make one ("sum", "highest"); None: the
    scraping worker's own."""
    if family[1] in SUMMED_TYPES or family[0] in SUMMED_GAUGES:
        return "sum"
    return "highest" if family[0] in HIGHEST_GAUGES else None


def retire(into: Table, families: list[Family], shared_names: Iterable[str]) -> None:
    """Keep what a dead worker's counters had reached (its gauges left with it)."""
    for family in families:
        if family[1] in SUMMED_TYPES and family[0] not in SHARED:
            into.add(family, shared_names=shared_names)


def merge(
    workers: list[list[Family]],
    scraper: list[Family],
    retired: Table,
    shared: list[Family],
    shared_names: Iterable[str],
) -> bytes:
    """The text of one scrape: the rules in this module's docstring."""
    names = list(shared_names)
    table = Table()
    for family in scraper:  # its order first: the scrape reads like a single worker's
        if combined(family) is None:
            table.add(family, how="set", shared_names=names)
    for families in workers:
        for family in families:
            how = combined(family)
            if how is not None:
                table.add(family, how=how, shared_names=names)
    for name, (kind, doc, values) in retired.families.items():
        samples = [[s, dict(labels), v] for (s, labels), v in values.items()]
        table.add([name, kind, doc, samples], shared_names=names)
    for family in shared:
        table.add(family, shared_names=())
    return table.render()


def shared_families(
    states: dict[str, str], transitions: dict[tuple[str, str, str], int], restarts: int,
    workers: int,
) -> list[Family]:  # fmt: skip
    """The supervisor's own series: shared breaker states and transitions, restarts."""
    state_samples = [
        [PREFIX + "circuit_breaker_state", {"breaker": name, "state": s}, 1 if s == now else 0]
        for name, now in states.items()
        for s in BREAKER_STATES
    ]
    transition_samples = [
        [PREFIX + "circuit_breaker_transitions_total", {"breaker": b, "from": f, "to": t}, n]
        for (b, f, t), n in transitions.items()
    ]
    return [
        [PREFIX + "circuit_breaker_state", "gauge", "1 for the breaker's current state",
         state_samples],
        [PREFIX + "circuit_breaker_transitions", "counter", "Breaker state changes",
         transition_samples],
        [PREFIX + "worker_restarts", "counter", "Workers restarted after dying",
         [[PREFIX + "worker_restarts_total", {}, restarts]]],
        [PREFIX + "workers", "gauge", "Worker processes serving",
         [[PREFIX + "workers", {}, workers]]],
    ]  # fmt: skip
