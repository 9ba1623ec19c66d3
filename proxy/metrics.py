"""The one importer of prometheus_client: every series of CONTRACT section 7.

Other modules report through these methods (or subscribe them to core events); label values
are policy names or fixed vocabularies, never a user id, token, IP or raw path. Series whose
labels the policy determines are created at zero by `prime()`, so they exist from the first
scrape. Children are cached: `labels()` costs a lock and a dict walk per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Final, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from policies.model import Policy
from proxy.core.events import BreakerTransition
from proxy.core.window import RuleResult

PREFIX = "resilience_proxy_"
CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "forced_closed")
ATTEMPT_OUTCOMES = ("success", "failure", "timeout", "connect_failure")
BREAKER_OUTCOMES = ("success", "failure", "rejected", "shadow_rejected")
DECISIONS = ("allowed", "limited", "shadow_limited")
CHANNELS = ("notifications", "alerts")
EVENT_TYPES = frozenset({"alert", "inventory_update"})
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)
# From half a millisecond (a cached fast path) to 30 s (the longest sensible deadline).
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
_BUCKETS: Final = len(LATENCY_BUCKETS)
_BOUNDS: Final = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class LatencySeries:
    """One label set's latency histogram, as per-bucket counts summed up at scrape."""

    __slots__ = ("counts", "labels", "seconds")

    def __init__(self, labels: tuple[str, str]) -> None:
        self.labels = labels
        self.counts = [0] * (_BUCKETS + 1)
        """Per-bucket counts (not cumulative), then the +Inf bucket."""
        self.seconds = 0.0

    def observe_seconds(self, seconds: float) -> None:
        # A scan from the smallest bound: most requests stop at the first (no bisect call,
        # which would box the bounds).
        i = 0
        while i < _BUCKETS and seconds > LATENCY_BUCKETS[i]:
            i += 1
        self.counts[i] += 1
        self.seconds += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, out = 0.0, []
        for bound, count in zip(_BOUNDS, list(self.counts), strict=True):
            cumulative += count
            out.append((bound, cumulative))
        return out


class RouteSeries(LatencySeries):
    """One (route, method) pair's request counts by status code and its latency histogram."""

    __slots__ = ("codes",)

    def __init__(self, labels: tuple[str, str]) -> None:
        super().__init__(labels)
        self.codes: dict[int, int] = {}

    def observe(self, code: int, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.observe_seconds(seconds)


class AnswerCounts:
    """An upstream's answered attempts, by whether the answer counts as a failure (5xx):
    each one is an `upstream_attempts_total` and a `circuit_breaker_calls_total` sample."""

    __slots__ = ("failed", "ok")

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0


class HotPathCollector:
    """The series touched on every request, kept as plain dict counters.

    A prometheus `Collector` by its `collect()` (not by inheritance, so that it compiles
    as a native class: its dicts are read on every request).

    prometheus_client's `Counter.inc` + `Histogram.observe` cost about 5 us per request on
    this hardware (a lock, label lookups); a dict increment costs a tenth of that. The
    families are built from the dicts only when Prometheus scrapes.
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], RouteSeries] = {}
        """By (route, method label); unknown methods share the label `other`."""
        self.attempts: dict[tuple[str, str], int] = {}
        self.breaker_calls: dict[tuple[str, str], int] = {}
        self.answers: dict[str, AnswerCounts] = {}
        """Answered attempts by upstream: added to `attempts` and `breaker_calls` at scrape."""
        self.decisions: dict[tuple[str, str], int] = {}
        """Primed at zero; the counts are in `rules`, added at scrape."""
        self.rules: dict[str, dict[str, int]] = {}
        """Per rule, its decisions by label (a str key, not a fresh tuple per request)."""
        self.attempt_seconds: dict[str, dict[str, LatencySeries]] = {}
        """By upstream, then outcome: each attempt's time to its response head (or failure);
        nested so that no tuple key is built per attempt."""
        self.in_flight: Callable[[], int] | None = None
        """Reads the requests being proxied at scrape (the pipeline's own count)."""

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            PREFIX + "requests_total", "Requests answered", labels=["route", "method", "code"]
        )
        series = list(self.series.values())
        for one in series:
            for code, value in list(one.codes.items()):
                requests.add_metric([*one.labels, str(code)], value)
        yield requests
        duration = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from request head to response end",
            labels=["route", "method"],
        )
        for one in series:
            duration.add_metric(list(one.labels), one.buckets(), one.seconds)
        yield duration
        per_attempt = HistogramMetricFamily(
            PREFIX + "upstream_duration_seconds",
            "Time of one upstream attempt, to its response head",
            labels=["upstream", "outcome"],
        )
        for by_outcome in list(self.attempt_seconds.values()):
            for latency in list(by_outcome.values()):
                per_attempt.add_metric(list(latency.labels), latency.buckets(), latency.seconds)
        yield per_attempt
        if self.in_flight is not None:
            gauge = GaugeMetricFamily(PREFIX + "in_flight", "Requests being proxied")
            gauge.add_metric([], self.in_flight())
            yield gauge
        attempts, breaker_calls = dict(self.attempts), dict(self.breaker_calls)
        for upstream, answers in list(self.answers.items()):
            for totals in (attempts, breaker_calls):
                for outcome, count in (("success", answers.ok), ("failure", answers.failed)):
                    key = (upstream, outcome)
                    totals[key] = totals.get(key, 0) + count
        decisions = dict(self.decisions)
        for rule, by_decision in list(self.rules.items()):
            for decision, count in list(by_decision.items()):
                decisions[(rule, decision)] = decisions.get((rule, decision), 0) + count
        for name, doc, label_names, values in (
            ("upstream_attempts_total", "Attempts sent upstream", ["upstream", "outcome"],
             attempts),
            ("circuit_breaker_calls_total", "Calls through a breaker", ["breaker", "outcome"],
             breaker_calls),
            ("rate_limit_decisions_total", "Rate-limit decisions per rule", ["rule", "decision"],
             decisions),
        ):  # fmt: skip
            family = CounterMetricFamily(PREFIX + name, doc, labels=label_names)
            for labels, value in list(values.items()):
                family.add_metric(labels, value)
            yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # `_created` series double the scrape and no rule uses them
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.hot = HotPathCollector()
        r.register(cast(Collector, self.hot))
        ProcessCollector(registry=r)  # the standard process_* series, unprefixed
        self.spans_dropped: Counter | None = None
        """`trace_spans_dropped_total`, declared once an OTLP endpoint is configured."""
        self.retries = Counter(
            p + "retries_total", "Retries made", ["upstream", "reason"], registry=r
        )
        self.budget_exhausted = Counter(
            p + "retry_budget_exhausted_total", "Retries refused by the retry budget",
            ["upstream"], registry=r,
        )  # fmt: skip
        self.breaker_state = Gauge(
            p + "circuit_breaker_state", "1 for the breaker's current state", ["breaker", "state"],
            registry=r,
        )  # fmt: skip
        self.breaker_transitions = Counter(
            p + "circuit_breaker_transitions_total", "Breaker state changes",
            ["breaker", "from", "to"], registry=r,
        )  # fmt: skip
        self.fallback = Gauge(
            p + "storage_fallback_active", "1 while the store runs on its fallback", ["backend"],
            registry=r,
        )  # fmt: skip
        self.ws_connections = Gauge(
            p + "websocket_connections", "Open WebSocket connections", ["channel"], registry=r
        )
        self.events_published = Counter(
            p + "events_published_total", "Events accepted for fan-out", ["type"], registry=r
        )
        self.delivered_events = Counter(
            p + "events_delivered_total", "Event messages queued to clients", ["channel"],
            registry=r,
        )  # fmt: skip
        self.slow_consumers = Counter(
            p + "websocket_slow_consumer_disconnects_total",
            "Clients closed with 1013 for falling behind", ["channel"], registry=r,
        )  # fmt: skip
        self.sink_deliveries = Counter(
            p + "sink_deliveries_total", "Alert deliveries to sinks", ["sink", "outcome"],
            registry=r,
        )  # fmt: skip
        self.reloads = Counter(p + "policy_reloads_total", "Policy reloads", ["result"], registry=r)
        self.policy_info = Gauge(
            p + "policy_info", "The loaded policy (SHA-256 of the file)", ["hash"], registry=r
        )
        self.jwks_refreshes = Counter(
            p + "jwks_refreshes_total", "Fetches of auth.jwt.jwks_url", ["result"], registry=r
        )
        self.breaker_probes = Counter(
            p + "breaker_probes_total", "Health probes of open breakers", ["breaker", "result"],
            registry=r,
        )  # fmt: skip
        self.connections_refused = Counter(
            p + "connections_refused_total",
            "Client connections closed at once: server.max_connections reached", registry=r,
        )  # fmt: skip
        self.tunnels = Gauge(
            p + "tunnels", "Open upgraded connections relayed to upstreams", ["route"],
            registry=r,
        )  # fmt: skip
        self._series: dict[str, dict[bytes, RouteSeries]] = {}
        """By route, then method: two lookups on keys that hash fast (a route name's hash is
        kept by the string), where a (route, method) key was a tuple made and hashed per
        request."""
        for result in ("success", "failure"):
            self.reloads.labels(result)
        for channel in CHANNELS:
            self.ws_connections.labels(channel)
            self.delivered_events.labels(channel)
            self.slow_consumers.labels(channel)

    # -- priming -----------------------------------------------------------------------------
    def prime(self, policy: Policy, breaker_states: Mapping[str, str]) -> None:
        """Create every policy-determined series at zero (first scrape shows them all)."""
        for name, state in breaker_states.items():
            self.set_breaker_state(name, state)
            for outcome in BREAKER_OUTCOMES:
                self.hot.breaker_calls.setdefault((name, outcome), 0)
        for name, upstream in policy.upstreams.items():
            for outcome in ATTEMPT_OUTCOMES:
                self.hot.attempts.setdefault((name, outcome), 0)
            for reason in ("connect-failure", "timeout", "status"):
                self.retries.labels(name, reason)
            self.budget_exhausted.labels(name)
            if upstream.circuit_breaker.probe is not None:
                for result in ("success", "failure"):
                    self.breaker_probes.labels(name, result)
        rules = [f"role:{role}" for role in policy.rate_limits.roles]
        rules += [rule.name for rule in policy.rate_limits.endpoints]
        for rule in rules:
            for decision in DECISIONS:
                self.hot.decisions.setdefault((rule, decision), 0)
        for sink in policy.alerts.sinks:
            for outcome in ("success", "failure", "dropped"):
                self.sink_deliveries.labels(sink.upstream, outcome)
        if policy.storage.backend == "redis":
            self.fallback.labels("redis")
        for route in policy.routes:
            self.tunnels.labels(route.name or route.path_prefix or route.path or "/")

    def set_policy(self, sha256: str) -> None:
        self.policy_info.clear()
        self.policy_info.labels(sha256).set(1)

    # -- requests ----------------------------------------------------------------------------
    def request_done(self, route: str, method: bytes, code: int, seconds: float) -> None:
        by_method = self._series.get(route)
        series = by_method.get(method) if by_method is not None else None
        if series is None:
            series = self._new_series(route, method)
        series.observe(code, seconds)

    def _new_series(self, route: str, method: bytes) -> RouteSeries:
        labels = (route, method_label(method.decode("latin-1")))
        series = self.hot.series.get(labels)
        if series is None:
            series = self.hot.series[labels] = RouteSeries(labels)
        # llhttp accepts a fixed list of methods, so this map stays small.
        self._series.setdefault(route, {})[method] = series
        return series

    def attempt_answered(self, upstream: str, failed: bool) -> None:
        """An attempt got an answer: one breaker call and one upstream attempt, by status."""
        answers = self.hot.answers.get(upstream)
        if answers is None:
            answers = self.hot.answers[upstream] = AnswerCounts()
        if failed:
            answers.failed += 1
        else:
            answers.ok += 1

    def attempt_took(self, upstream: str, outcome: str, seconds: float) -> None:
        """`upstream_duration_seconds`: one attempt, to its response head or its failure."""
        by_outcome = self.hot.attempt_seconds.get(upstream)
        if by_outcome is None:
            by_outcome = self.hot.attempt_seconds[upstream] = {}
        latency = by_outcome.get(outcome)
        if latency is None:
            latency = by_outcome[outcome] = LatencySeries((upstream, outcome))
        latency.observe_seconds(seconds)

    def watch_in_flight(self, count: Callable[[], int]) -> None:
        self.hot.in_flight = count

    def tracing_configured(self) -> None:
        if self.spans_dropped is None:
            self.spans_dropped = Counter(
                PREFIX + "trace_spans_dropped_total",
                "Spans not exported (queue full, collector down or refusing)",
                registry=self.registry,
            )

    def trace_spans_dropped(self, n: int) -> None:
        if self.spans_dropped is not None:
            self.spans_dropped.inc(n)

    def upstream_attempt(self, upstream: str, outcome: str) -> None:
        attempts = self.hot.attempts
        key = (upstream, outcome)
        attempts[key] = attempts.get(key, 0) + 1

    def retry(self, upstream: str, reason: str) -> None:
        self.retries.labels(upstream, reason).inc()

    def retry_refused_by_budget(self, upstream: str) -> None:
        self.budget_exhausted.labels(upstream).inc()

    # -- breakers ----------------------------------------------------------------------------
    def set_breaker_state(self, breaker: str, state: str) -> None:
        for candidate in BREAKER_STATES:
            self.breaker_state.labels(breaker, candidate).set(1 if candidate == state else 0)

    def breaker_transition(self, event: BreakerTransition) -> None:
        self.breaker_transitions.labels(event.breaker, event.from_state, event.to_state).inc()
        self.set_breaker_state(event.breaker, event.to_state)

    def breaker_call(self, breaker: str, outcome: str) -> None:
        calls = self.hot.breaker_calls
        key = (breaker, outcome)
        calls[key] = calls.get(key, 0) + 1

    def breaker_probe(self, breaker: str, ok: bool) -> None:
        self.breaker_probes.labels(breaker, "success" if ok else "failure").inc()

    def connection_refused(self) -> None:
        self.connections_refused.inc()

    def forget_breaker(self, breaker: str) -> None:
        for state in BREAKER_STATES:
            with contextlib.suppress(KeyError):
                self.breaker_state.remove(breaker, state)

    # -- rate limits and storage -----------------------------------------------------------------
    def rate_limit_decisions(self, results: tuple[RuleResult, ...]) -> None:
        """One decision's verdict for each of its rules."""
        rules = self.hot.rules
        for result in results:
            counts = rules.get(result.rule)
            if counts is None:
                counts = rules[result.rule] = {}
            outcome = result.outcome
            counts[outcome] = counts.get(outcome, 0) + 1

    def storage_fallback(self, active: bool) -> None:
        self.fallback.labels("redis").set(1 if active else 0)

    # -- hub (HubObserver) -------------------------------------------------------------------
    def connection_opened(self, channel: str) -> None:
        self.ws_connections.labels(channel).inc()

    def connection_closed(self, channel: str) -> None:
        self.ws_connections.labels(channel).dec()

    def event_published(self, event_type: str) -> None:
        label = event_type if event_type in EVENT_TYPES else "other"
        self.events_published.labels(label).inc()

    def events_delivered(self, channel: str, n: int) -> None:
        self.delivered_events.labels(channel).inc(n)

    def slow_consumer_closed(self, channel: str) -> None:
        self.slow_consumers.labels(channel).inc()

    def sink_delivery(self, sink: str, outcome: str) -> None:
        self.sink_deliveries.labels(sink, outcome).inc()

    def sink_dropped(self, sink: str) -> None:
        self.sink_deliveries.labels(sink, "dropped").inc()

    # -- policy ------------------------------------------------------------------------------
    def policy_reload(self, ok: bool) -> None:
        self.reloads.labels("success" if ok else "failure").inc()

    def jwks_refresh(self, ok: bool | None) -> None:
        """One fetch of the JWKS URL counted; None only declares both series (at zero)."""
        for result in ("success", "failure"):
            self.jwks_refreshes.labels(result)
        if ok is not None:
            self.jwks_refreshes.labels("success" if ok else "failure").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
