"""Health probes of open breakers: recovery in seconds, not a whole `recovery_timeout`.

While an upstream's breaker is open and its policy sets `circuit_breaker.probe`, the
sidecar GETs the probe path every `interval` (as Envoy's active health checks and
Traefik's `healthCheck` do). The first answer below 400 moves the breaker to half_open
(`CircuitBreaker.probe_succeeded`), where real calls decide as usual. A probe is not a
call: it never counts in the breaker's totals or `upstream_attempts_total`, only in
`breaker_probes_total{breaker,result}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from policies.model import BreakerProbePolicy
from proxy.core.breaker import CircuitBreaker
from proxy.core.headers import new_request_id
from proxy.pipeline.forward import Attempt
from proxy.pipeline.runtime import Runtime
from proxy.server.request import RequestHead
from proxy.upstream.connection import UpstreamFailure
from proxy.upstream.pool import UpstreamPool

log = logging.getLogger("proxy.breaker")

TICK_S = 0.25
"""How often open breakers are looked at (a probe is sent only when its interval is due)."""


class BreakerProber:
    """One task for all upstreams; `runtime` is read at each tick, so reloads apply."""

    def __init__(self, runtime: Callable[[], Runtime]) -> None:
        self._runtime = runtime
        self._due: dict[str, float] = {}
        self._probing: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._probing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                self.tick(time.monotonic())
            except Exception:  # a probe round must never end the prober
                log.exception("breaker probe round failed")
            await asyncio.sleep(TICK_S)

    def tick(self, now: float) -> None:
        """Start the probes that are due (at most one in flight per upstream)."""
        runtime = self._runtime()
        for name, upstream in runtime.policy.upstreams.items():
            probe = upstream.circuit_breaker.probe
            guard = runtime.guards.get(name)
            pool = runtime.pools.get(name)
            if probe is None or guard is None or pool is None:
                continue
            ticket = guard.breaker.probe_ticket()
            if ticket is None:
                self._due.pop(name, None)  # the next opening probes at once
                continue
            if name in self._probing or self._due.get(name, 0.0) > now:
                continue
            self._due[name] = now + probe.interval
            task = asyncio.get_running_loop().create_task(
                self._probe(name, pool, guard.breaker, ticket, probe, runtime)
            )
            self._probing[name] = task
            task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task[None]) -> None:
        for name, running in list(self._probing.items()):
            if running is task:
                del self._probing[name]

    async def _probe(
        self,
        name: str,
        pool: UpstreamPool,
        breaker: CircuitBreaker,
        ticket: int,
        probe: BreakerProbePolicy,
        runtime: Runtime,
    ) -> None:
        ok = await probe_once(pool, probe, min(probe.interval, pool.policy.timeout))
        runtime.metrics.breaker_probe(name, ok)
        if ok:
            log.info("circuit breaker %s: health probe succeeded", name, extra={"breaker": name})
            breaker.probe_succeeded(ticket)


async def probe_once(pool: UpstreamPool, probe: BreakerProbePolicy, timeout: float) -> bool:
    """GET the probe path once; True for an answer below 400 within `timeout`."""
    path = probe.path.encode()
    head = RequestHead(b"GET", path, [], "1.1", True, "", time.monotonic())
    head.request_id = new_request_id()
    head_bytes = b"GET %s HTTP/1.1\r\nhost: %s\r\nx-request-id: %s\r\n\r\n" % (
        path,
        pool.host_header,
        head.request_id,
    )
    attempt = Attempt(pool)
    try:
        await attempt.send(head, head_bytes, None, True, timeout)
        status = await attempt.consume()
    except UpstreamFailure:
        return False
    return status < 400
