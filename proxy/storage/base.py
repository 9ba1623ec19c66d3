"""What every rate-limit store offers, and the values that cross that boundary.

The pipeline sees one `LimitStore`: a `MemoryStore`, or a `FallbackStore` around a
`RedisStore`. Stores raise `StoreUnavailable` and nothing else when their backend fails;
`FallbackStore` turns that into its `on_failure` behaviour, so the pipeline never sees it.

Per-user usage (`GET /api/v1/resilience/rate-limit/user/{id}`) lives in the same store
because it must be shared by the same replicas: counts per request path, over the user's
role window, kept in `USAGE_BUCKETS` slices of it (the answer covers between
(USAGE_BUCKETS-1)/USAGE_BUCKETS of the window and all of it, never more: an exact log per
request would cost a write per request per path for an admin read that is rare).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from proxy.core.window import Decision, LimitCheck, RuleResult

__all__ = [
    "MAX_USAGE_PATHS",
    "OTHER_PATHS",
    "USAGE_BUCKETS",
    "Decision",
    "DecisionDone",
    "LimitCheck",
    "LimitStore",
    "RuleResult",
    "StoreUnavailable",
    "Usage",
    "await_decision",
    "resolve_once",
]

USAGE_BUCKETS = 20
"""Slices of a user's window that usage is counted in."""

MAX_USAGE_PATHS = 50
"""Distinct paths reported per user; the rest are summed under `OTHER_PATHS`."""

OTHER_PATHS = "other"


class StoreUnavailable(Exception):
    """The backend did not answer in time or failed; the message never holds a secret."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Requests a user made in the current window, per path without the query."""

    endpoints: Mapping[str, int]
    total_requests: int

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> Usage:
        """Keep the `MAX_USAGE_PATHS` busiest paths; fold the rest into `other`."""
        if len(counts) <= MAX_USAGE_PATHS:
            endpoints = dict(counts)
        else:
            named = [(n, p) for p, n in counts.items() if p != OTHER_PATHS]
            named.sort(key=lambda item: (-item[0], item[1]))
            endpoints = {p: n for n, p in named[:MAX_USAGE_PATHS]}
            rest = sum(n for n, _ in named[MAX_USAGE_PATHS:]) + counts.get(OTHER_PATHS, 0)
            if rest:
                endpoints[OTHER_PATHS] = rest
        return cls(endpoints, sum(endpoints.values()))


DecisionDone = Callable[[Any, Decision | Exception], None]
"""Hears (the caller's context, the decision or the exception that kept the store from
deciding)."""


class LimitStore(Protocol):
    def decide(
        self, checks: Sequence[LimitCheck], later: DecisionDone, context: Any
    ) -> Decision | None:
        """Check one request against every rule; record it in all of them only if all admit.

        The one calling convention, made for the request path: the decision is returned
        when the store knows it now (memory), and `later` is then never called. Otherwise
        None is returned and `later(context, result)` runs exactly once, after this
        returns, with the decision or the exception (never raised here). `context` is the
        caller's, handed back as it is: with a plain function as `later`, a decision known
        now costs no allocation (no closure, no bound method, no future).
        `await_decision()` below awaits a decision where that is simpler.
        """
        ...

    def record_usage(self, user_id: str, path: str, window_s: float) -> None:
        """Count a forwarded request; never waits, never raises (best effort)."""
        ...

    async def usage(self, user_id: str) -> Usage:
        """The user's requests in their current window (the window of their last request)."""
        ...

    async def ping(self) -> bool:
        """Whether the backend answers now (for `/readyz`'s `degraded`)."""
        ...

    async def close(self) -> None: ...


T = TypeVar("T")


async def await_decision(store: LimitStore, checks: Sequence[LimitCheck]) -> Decision:
    """Await `store.decide` (for callers off the hot path and tests); raises what it heard."""
    future: asyncio.Future[Decision | Exception] = asyncio.get_running_loop().create_future()
    now = store.decide(checks, _resolve, future)
    if now is not None:
        return now
    result = await future
    if isinstance(result, Exception):
        raise result
    return result


def _resolve(future: asyncio.Future[Decision | Exception], result: Decision | Exception) -> None:
    if not future.done():
        future.set_result(result)


def resolve_once(future: asyncio.Future[T]) -> Callable[[T], None]:
    """A callback that resolves `future`, unless its waiter gave up (cancelled) first."""

    def resolve(value: T) -> None:
        if not future.done():
            future.set_result(value)

    return resolve
