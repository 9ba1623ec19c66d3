"""The sidecar's own alerts (`alerts.operational`, CONTRACT 13), built from state changes.

Called from the places where the change already happens (a breaker's transition event,
the store's fallback hook, the policy watcher's failure), so they cost nothing per
request. Each alert is published like an ingested one (alerts channel, sinks) by a task
of its own: the caller, often the request path that tripped a breaker, never waits.

A breaker episode alerts twice: `circuit_breaker_open` when it stops serving (closed or
forced_closed -> open or forced_open) and `circuit_breaker_closed` when it serves again.
half_open -> open (a failed probe) is the same outage going on, not a new alert: a
breaker probing every `recovery_timeout` would otherwise page again each time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.core.events import BreakerTransition

log = logging.getLogger("proxy.hub.operational")

SERVING = frozenset({"closed", "forced_closed"})
REFUSING = frozenset({"open", "forced_open"})

PublishFn = Callable[[dict[str, Any]], Awaitable[int]]
"""Publishes one alert event (the hub's `publish_alert`); returns its id."""


def alert(
    alert_type: str, severity: str, title: str, message: str, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "alert",
        "alert_type": alert_type,
        "severity": severity,
        "title": title,
        "message": message,
        "data": {"source": "sidecar", **data},
    }


def breaker_alert(event: BreakerTransition) -> dict[str, Any] | None:
    """The alert a transition raises, or None (a step inside one outage or one calm)."""
    data = {
        "breaker": event.breaker,
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
    }
    name = event.breaker
    if event.to_state in REFUSING and event.from_state in SERVING:
        return alert(
            "circuit_breaker_open",
            "critical",
            f"Circuit breaker {name} is open",
            f"Calls to {name} are refused ({event.from_state} -> {event.to_state}: {event.reason})",
            data,
        )
    if event.to_state in SERVING and event.from_state not in SERVING:
        return alert(
            "circuit_breaker_closed",
            "info",
            f"Circuit breaker {name} is closed",
            f"Calls to {name} flow again ({event.from_state} -> {event.to_state}: {event.reason})",
            data,
        )
    return None


def storage_alert(active: bool, on_failure: str) -> dict[str, Any]:
    if active:
        return alert(
            "storage_fallback",
            "warning",
            "Rate-limit store unavailable",
            f"Redis is unreachable or too slow: storage.on_failure ({on_failure}) decides",
            {"backend": "redis", "on_failure": on_failure},
        )
    return alert(
        "storage_recovered",
        "info",
        "Rate-limit store recovered",
        "Rate-limit decisions go to Redis again",
        {"backend": "redis"},
    )


def reload_alert(source: str, errors: tuple[str, ...]) -> dict[str, Any]:
    first = errors[0] if errors else "the policy could not be loaded"
    return alert(
        "policy_reload_failed",
        "warning",
        "Policy reload failed",
        first,
        {"policy_source": source, "errors": len(errors)},
    )


class OperationalAlerts:
    """Turns state changes into published alerts while `enabled` (the policy's flag)."""

    def __init__(self, publish: PublishFn) -> None:
        self._publish = publish
        self._tasks: set[asyncio.Task[None]] = set()
        self.enabled = False
        self.on_failure = "memory"
        """`storage.on_failure`, named in the storage alert."""

    def breaker_transition(self, event: BreakerTransition) -> None:
        if self.enabled:
            self._send(breaker_alert(event))

    def storage_fallback(self, active: bool) -> None:
        if self.enabled:
            self._send(storage_alert(active, self.on_failure))

    def reload_failed(self, source: str, errors: tuple[str, ...]) -> None:
        if self.enabled:
            self._send(reload_alert(source, errors))

    def _send(self, event: dict[str, Any] | None) -> None:
        if event is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a change before the sidecar runs): nobody could be told
        task = loop.create_task(self._publish_logged(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_logged(self, event: dict[str, Any]) -> None:
        try:
            await self._publish(event)
        except Exception:
            log.exception("operational alert %s could not be published", event["alert_type"])
