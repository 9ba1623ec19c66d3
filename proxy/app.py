"""Building the sidecar from a policy, and its lifecycle: start, reload, drain, stop.

One `Sidecar` per process. `workers > 1` runs a supervisor (proxy.workers) that forks that
many processes sharing the port with SO_REUSEPORT (the kernel spreads connections); they
share limits through Redis, which the policy loader insists on for that setting, and
breakers and totals through the supervisor.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import ssl
import sys
from datetime import UTC, datetime
from typing import cast

import uvloop

from policies.load import LoadedPolicy
from policies.model import JwtPolicy, Policy, TracingPolicy
from policies.tls_files import TlsFileProblem
from proxy import logs
from proxy.admin import admin_endpoints, own_endpoints, websocket_paths
from proxy.admin_listener import AdminListener
from proxy.clock import SYSTEM_CLOCK
from proxy.console.feed import ConsoleFeed
from proxy.core.breaker import iso_utc
from proxy.core.headers import TrustedProxies
from proxy.core.identity import TokenVerifier
from proxy.core.routing import RouteTable
from proxy.hub.broker import RedisBroker
from proxy.hub.hub import Hub
from proxy.hub.operational import OperationalAlerts
from proxy.key_refresh import KeySource
from proxy.keys import KeyMaterialError, load_key_material
from proxy.logs import AccessLog
from proxy.metrics import Metrics
from proxy.pipeline.chain import Pipeline
from proxy.pipeline.observe import Observer
from proxy.pipeline.prober import BreakerProber
from proxy.pipeline.ratelimit import RateLimiter
from proxy.pipeline.runtime import Runtime
from proxy.pipeline.sink_sender import SinkSender
from proxy.pipeline.state import State
from proxy.reload import PolicyWatcher, ReloadOutcome
from proxy.server.certificates import ServingCertificate
from proxy.server.http11 import ClientConnection, ServerLimits, ServerState, UpgradeHandler
from proxy.server.listener import Listener
from proxy.server.request import RequestHead
from proxy.storage.connect import RedisTarget
from proxy.tracing.exporter import SpanExporter
from proxy.workers.link import WorkerLink
from proxy.workers.supervisor import Supervisor

log = logging.getLogger("proxy.app")

CONSOLE_ALERTS_PATH = b"/api/v1/ws/alerts"
"""Where the console (served on the admin listener when there is one) opens its alerts
socket: its own origin. The admin listener serves the alerts channel there, whatever
`websocket.paths` and `websocket.enabled` say of the data plane."""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _leeway(policy: Policy) -> float:
    """The WebSocket's token grace (`auth.jwt.leeway`; the default without identity)."""
    jwt = policy.auth.jwt
    return jwt.leeway if jwt is not None else JwtPolicy().leeway


def server_limits(loaded: LoadedPolicy) -> ServerLimits:
    server = loaded.policy.server
    return ServerLimits(
        max_header_bytes=server.max_header_bytes,
        max_body_bytes=server.max_body_bytes,
        header_timeout=server.header_timeout,
        keepalive_timeout=server.keepalive_timeout,
        max_connections=server.max_connections,
        request_buffer_bytes=server.request_buffer_bytes,
        client_body_timeout=server.client_body_timeout,
    )


class Sidecar:
    def __init__(self, loaded: LoadedPolicy, config_path: str, access_log: bool = False) -> None:
        self.config_path = config_path
        self.access_log_flag = access_log
        """`--access-log`: the access log is on whatever the policy says."""
        self.access_lines = AccessLog()
        self.exporter: SpanExporter | None = None
        self._retired_exporters: list[SpanExporter] = []
        self.state = State(metrics=Metrics())
        self.keys = KeySource(self.state.metrics, self.state.degraded)
        self.pipeline = Pipeline(self.build(loaded))
        self.state.metrics.watch_in_flight(lambda: self.pipeline.in_flight)
        hub = self.state.hub = self.make_hub(self.runtime)
        self.server_state = ServerState(
            self.pipeline.handle, server_limits(loaded), self.pipeline.fast
        )
        self.server_state.upgrade = self.websocket_takeover
        self.admin_listener = AdminListener(self.pipeline)
        self.admin_state = ServerState(self.admin_listener.handle, server_limits(loaded))
        self.admin_state.upgrade = self.admin_websocket_takeover
        """The connections of `admin.listen` (none when it is unset)."""
        tls = loaded.policy.server.tls
        self.certificate: ServingCertificate | None = None
        if tls is not None:
            self.certificate = ServingCertificate(tls, self._swap_certificate)
            self.server_state.scheme = b"https"
        self.server_state.other_connections = self.taken_over_count
        self.server_state.on_refused = self.state.metrics.connection_refused
        self.watcher = PolicyWatcher(
            config_path,
            loaded.sha256,
            self.apply,
            self.state.metrics.policy_reload,
            self.reloaded,
        )
        self.prober = BreakerProber(lambda: self.runtime)
        self.state.operational = OperationalAlerts(hub.publish_alert)
        self.arm_operational()
        self.state.console = ConsoleFeed(self.state.metrics, lambda: self.pipeline.in_flight)
        self._listener: Listener | None = None
        self._admin_listener: Listener | None = None
        self._websocket_paths = websocket_paths(loaded.policy)
        self._stopped = asyncio.Event()

    @property
    def runtime(self) -> Runtime:
        return self.pipeline.runtime

    def build(self, loaded: LoadedPolicy) -> Runtime:
        """A runtime for `loaded`, reusing every stateful object whose name survives."""
        policy = loaded.policy
        keys = load_key_material(policy.auth.jwt, os.environ)
        for note in keys.warnings:
            log.warning("auth.jwt: %s", note)
        token_env = policy.admin.token_env
        admin_token = os.environ.get(token_env, "") if token_env else ""
        runtime = Runtime(
            loaded=loaded,
            loaded_at=_now_iso(),
            routes=RouteTable(policy),
            trusted=TrustedProxies(policy.server.trusted_proxies),
            pools=self.state.sync_pools(policy),
            guards=self.state.sync_guards(policy),
            verifier=TokenVerifier(
                policy.auth.jwt, self.keys.configure(policy.auth.jwt, keys), SYSTEM_CLOCK
            ),
            limiter=RateLimiter(
                policy.rate_limits, self.state.sync_store(policy), self.state.metrics
            ),
            own_endpoints=own_endpoints(policy),
            state=self.state,
            metrics=self.state.metrics,
            max_in_flight=policy.server.max_in_flight,
            observer=self.observer(policy.server.access_log, policy.tracing),
            admin_endpoints=admin_endpoints(policy),
            admin_token=admin_token.encode("utf-8", "surrogateescape") if admin_token else None,
        )
        breaker_states = {name: b.state for name, b in self.state.breakers.items()}
        self.state.metrics.prime(policy, breaker_states)
        self.state.metrics.set_policy(loaded.sha256)
        return runtime

    def observer(self, access_log: bool, tracing: TracingPolicy) -> Observer:
        """The access log and trace context for a policy; the exporter is kept across
        reloads while its endpoint and service name stay the same."""
        exporter = self.exporter
        wanted = (tracing.otlp_endpoint, tracing.service_name)
        if exporter is not None and (exporter.endpoint, exporter.service_name) != wanted:
            self._retired_exporters.append(exporter)
            exporter = self.exporter = None
        if exporter is None and tracing.otlp_endpoint is not None:
            self.state.metrics.tracing_configured()
            exporter = self.exporter = SpanExporter(
                tracing.otlp_endpoint, tracing.service_name, self.state.metrics.trace_spans_dropped
            )
        return Observer(
            self.access_log_flag or access_log,
            tracing.sample_ratio,
            exporter.submit if exporter is not None else None,
            self.access_lines,
        )

    def make_hub(self, runtime: Runtime) -> Hub:
        policy = runtime.policy
        broker = None
        if policy.storage.backend == "redis":
            where = RedisTarget.from_policy(policy.storage)
            broker = RedisBroker(where, history=policy.websocket.history)
        return Hub(
            policy.websocket,
            policy.alerts,
            verifier=runtime.verifier,
            admin_roles=policy.admin.roles,
            ingest_token=os.environ.get(policy.alerts.ingest_token_env),
            leeway=_leeway(policy),
            broker=broker,
            sink_send=SinkSender(lambda: self.runtime),
            observer=self.state.metrics,
        )

    def websocket_takeover(self, head: RequestHead) -> UpgradeHandler | None:
        """The hub takes over upgrades to its two paths; other upgrades are plain requests."""
        return self._takeover(head, self._websocket_paths.get(head.path))

    def admin_websocket_takeover(self, head: RequestHead) -> UpgradeHandler | None:
        """On the admin listener, the console's live alerts (`CONSOLE_ALERTS_PATH`)."""
        return self._takeover(head, "alerts" if head.path == CONSOLE_ALERTS_PATH else None)

    def _takeover(self, head: RequestHead, channel: str | None) -> UpgradeHandler | None:
        hub = self.state.hub
        if channel is None or hub is None or head.method != b"GET":
            return None
        _, client_ip = self.runtime.trusted.forwarded_for(head.peer_ip, head.forwarded_for)

        def takeover(transport: asyncio.Transport, raw: bytes, _head: RequestHead) -> None:
            hub.upgrade(transport, raw, channel, client_ip)

        return takeover

    def _swap_certificate(self, context: ssl.SSLContext) -> None:
        if self._listener is not None:
            self._listener.ssl_context = context

    def websocket_count(self) -> int:
        hub = self.state.hub
        return 0 if hub is None else hub.live_sessions

    def taken_over_count(self) -> int:
        """Client connections no longer parsed as HTTP: hub sessions and upstream tunnels."""
        return self.websocket_count() + self.pipeline.tunnels_open

    def arm_operational(self) -> None:
        """`alerts.operational` of the running policy turns the sidecar's own alerts on."""
        operational = self.state.operational
        if operational is not None:
            policy = self.runtime.policy
            operational.enabled = policy.alerts.operational
            operational.on_failure = policy.storage.on_failure

    def reloaded(self, outcome: ReloadOutcome) -> None:
        """Keep the last reload's result for the console; alert on a failed one."""
        self.state.last_reload = {
            "at": iso_utc(outcome.at),
            "result": "success" if outcome.ok else "failure",
            "errors": list(outcome.errors),
        }
        if not outcome.ok and self.state.operational is not None:
            self.state.operational.reload_failed(self.config_path, outcome.errors)

    def apply(self, loaded: LoadedPolicy) -> None:
        old = self.runtime.policy
        if loaded.policy.server.listen != old.server.listen:
            log.warning("server.listen changed: it takes effect at the next restart")
        if loaded.policy.admin.listen != old.admin.listen:
            log.warning("admin.listen changed: it takes effect at the next restart")
        tls = loaded.policy.server.tls
        if tls != old.server.tls:
            if self.certificate is not None and tls is not None:
                self.certificate.use(tls)
            else:
                log.warning("server.tls turned on or off: it takes effect at the next restart")
        if self._listener is not None:
            self._listener.handshake_timeout = loaded.policy.server.header_timeout
        runtime = self.build(loaded)
        self.pipeline.runtime = runtime
        self._sync_exporters()
        self._websocket_paths = websocket_paths(loaded.policy)
        self.server_state.limits = server_limits(loaded)
        self.admin_state.limits = server_limits(loaded)
        self.arm_operational()
        policy = runtime.policy
        if self.state.hub is not None:
            self.state.hub.reconfigure(
                policy.websocket,
                policy.alerts,
                runtime.verifier,
                policy.admin.roles,
                os.environ.get(policy.alerts.ingest_token_env),
                _leeway(policy),
            )

    async def start(self, reuse_port: bool = False) -> None:
        server = self.runtime.policy.server
        self._listener = await Listener.open(
            lambda: cast(asyncio.BaseProtocol, ClientConnection(self.server_state)),
            server.host or None,
            server.port,
            reuse_port,
        )
        admin = self.runtime.policy.admin
        if admin.listen is not None:
            try:
                self._admin_listener = await Listener.open(
                    lambda: cast(asyncio.BaseProtocol, ClientConnection(self.admin_state)),
                    admin.host or None,
                    admin.port,
                    reuse_port,
                )
            except OSError:
                self._listener.close()
                raise
            self.admin_state.start_sweeping()
        self._listener.handshake_timeout = server.header_timeout
        if self.certificate is not None:
            self._listener.ssl_context = self.certificate.context
            self.certificate.start()
        self.server_state.start_sweeping()
        self._sync_exporters()
        if self.state.hub is not None:
            await self.state.hub.start()
        await self.keys.start()
        self.watcher.start()
        self.prober.start()
        if self.state.console is not None:
            self.state.console.start()
        self.state.ready = True
        log.info(
            "sidecar listening",
            extra={
                "listen": server.listen,
                "admin_listen": admin.listen,
                "policy_hash": self.runtime.loaded.sha256,
            },
        )

    def _sync_exporters(self) -> None:
        """Start the current span exporter; retired ones send what they hold, then stop."""
        if self.exporter is not None:
            self.exporter.start()
        retired, self._retired_exporters = self._retired_exporters, []
        for exporter in retired:
            asyncio.get_running_loop().create_task(exporter.close())

    def reload_now(self) -> None:
        """SIGHUP: the policy, and the key files even when the policy is unchanged."""
        self.watcher.reload()
        self.keys.reread_files()

    async def drain(self) -> None:
        """SIGTERM: stop accepting, let requests in flight finish, then close everything."""
        if self.state.draining:
            return
        self.state.draining = True
        self.server_state.draining = True
        log.info("draining", extra={"in_flight": self.server_state.in_flight()})
        if self._listener is not None:
            self._listener.close()
        self.server_state.close_idle()
        # The admin listener stays up while draining: /readyz answers 503 `draining` there,
        # which is how an orchestrator sees the drain.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.runtime.policy.server.drain_timeout
        while self.server_state.in_flight() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self.close()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._admin_listener is not None:
            self._admin_listener.close()
        self.admin_state.stop_sweeping()
        for conn in list(self.admin_state.connections):
            conn.close()
        await self.watcher.stop()
        await self.keys.close()
        if self.certificate is not None:
            await self.certificate.stop()
        await self.prober.stop()
        if self.state.console is not None:
            await self.state.console.stop()
        if self.state.hub is not None:
            await self.state.hub.close()
        self.server_state.stop_sweeping()
        for conn in list(self.server_state.connections):
            conn.close()
        for pool in self.state.pools.values():
            pool.close()
        for store in [self.state.store, *self.state.retired_stores]:
            if store is not None:
                await store.close()
        if self.exporter is not None:
            await self.exporter.close()
        self.access_lines.flush()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(
    loaded: LoadedPolicy,
    config_path: str,
    access_log: bool,
    reuse_port: bool = False,
    channel: socket.socket | None = None,
) -> None:
    sidecar = Sidecar(loaded, config_path, access_log)
    loop = asyncio.get_running_loop()
    link = None
    if channel is not None:  # a worker: its supervisor shares breakers and totals
        link = WorkerLink(sidecar.state, channel, lambda: loop.create_task(sidecar.drain()))
        sidecar.state.workers = link
        await link.connect()
    await sidecar.start(reuse_port)
    if link is not None:
        link.listening()
    # Everything allocated so far lives as long as the process: keep it out of the cyclic
    # collector's scans, and collect the young generation less often (requests allocate a
    # few dozen short-lived objects each, almost none of them in cycles).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(sidecar.drain()))
    loop.add_signal_handler(signal.SIGHUP, sidecar.reload_now)
    await sidecar.wait_stopped()
    log.info("stopped")


def _worker(loaded: LoadedPolicy, config_path: str, access_log: bool, sock: socket.socket) -> int:
    """One worker, in the child the supervisor forked."""
    try:
        uvloop.run(serve(loaded, config_path, access_log, reuse_port=True, channel=sock))
    except TlsFileProblem as problem:
        print(f"{config_path}: server.tls.{problem}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cannot listen on {loaded.policy.server.listen}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


def _run_workers(loaded: LoadedPolicy, config_path: str, access_log: bool, n: int) -> int:
    """`n` workers on one port under a supervisor (proxy.workers.supervisor)."""
    supervisor = Supervisor(
        loaded, config_path, n, lambda latest, sock: _worker(latest, config_path, access_log, sock)
    )
    return asyncio.run(supervisor.run())


def run(loaded: LoadedPolicy, config_path: str, access_log: bool = False) -> int:
    logs.configure()
    workers = loaded.policy.server.workers
    try:
        load_key_material(loaded.policy.auth.jwt, os.environ)
    except KeyMaterialError as error:
        print(f"{config_path}: {error}", file=sys.stderr)
        return 1
    try:
        if workers > 1:
            return _run_workers(loaded, config_path, access_log, workers)
        uvloop.run(serve(loaded, config_path, access_log))
    except TlsFileProblem as problem:
        print(f"{config_path}: server.tls.{problem}", file=sys.stderr)
        return 1
    except OSError as error:
        where = loaded.policy.server.listen
        if loaded.policy.admin.listen is not None:
            where += f" and {loaded.policy.admin.listen}"
        print(f"cannot listen on {where}: {error.strerror}", file=sys.stderr)
        return 1
    return 0
