"""The policy model: frozen dataclasses that ARE the schema of `policies.yaml`.

The loader (`load.py`), the JSON Schema (`schema.py`) and the policy reference in `docs/`
are all derived from these classes by walking their fields, so a key is declared once.

How a field is read by the loader:
- the type annotation says what the YAML value must be (`Duration`, `Rate`, `Literal`,
  nested dataclass, `tuple[X, ...]` for lists, `dict[str, X]` for mappings, `X | None`);
- `field(metadata=...)` built by `setting()` carries the doc line and numeric bounds.
Durations are stored as float seconds, rates as `Rate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

DURATION = "duration"
"""Marker inside `Annotated[float, DURATION]`: the YAML value is `250ms`, `2s`, `5m`, `1h`."""

Duration = Annotated[float, DURATION]

OUTCOME = "outcome"
"""Marker inside `Annotated[str, OUTCOME]`: checked and normalised by the loader (502 -> "502")."""

METHOD = "method"
"""Marker inside `Annotated[str, METHOD]`: an HTTP method, upper-cased by the loader."""

Method = Annotated[str, METHOD]


@dataclass(frozen=True, slots=True)
class Rate:
    """`N/DURATION` (`100/min`, `3/5min`): at most `limit` requests in any `window_s` seconds."""

    limit: int
    window_s: float
    text: str

    def __str__(self) -> str:
        return self.text


def setting(
    default: Any = None,
    doc: str = "",
    *,
    factory: Any = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    pattern: str | None = None,
    expected: str | None = None,
    required: bool = False,
) -> Any:
    """A field with its documentation and bounds, read by the loader, schema and docs."""
    meta: dict[str, Any] = {"doc": doc, "required": required}
    for key, value in (
        ("minimum", minimum),
        ("maximum", maximum),
        ("exclusive_minimum", exclusive_minimum),
        ("pattern", pattern),
        ("expected", expected),
    ):
        if value is not None:
            meta[key] = value
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


Outcome = Annotated[str, OUTCOME]
"""A retry/failure trigger: `connect-failure`, `timeout`, `5xx`, or a status code as text."""


@dataclass(frozen=True, slots=True)
class ServerTlsPolicy:
    cert_file: str = setting("", "PEM certificate (chain) served to clients", required=True)
    key_file: str = setting("", "PEM private key of `cert_file`", required=True)


@dataclass(frozen=True, slots=True)
class ServerPolicy:
    listen: str = setting(
        "0.0.0.0:8000",
        "HOST:PORT the sidecar listens on",
        pattern=r"^\[?[^\]]*\]?:\d{1,5}$",
        expected="HOST:PORT (e.g. 0.0.0.0:8000)",
    )
    trusted_proxies: tuple[str, ...] = setting(
        ("127.0.0.1/32",), "CIDRs whose X-Forwarded-For is believed"
    )
    max_body_bytes: int = setting(
        1_048_576, "largest request body accepted (413 past it)", minimum=0
    )
    max_in_flight: int = setting(
        2048, "proxied requests in progress; beyond it, shed at once with 503", minimum=1
    )
    workers: int = setting(1, "processes sharing the port (more than 1 needs redis)", minimum=1)
    drain_timeout: Duration = setting(
        30.0, "on SIGTERM, how long in-flight requests may take to finish", minimum=0
    )
    header_timeout: Duration = setting(
        10.0, "time a client has to send the request headers", exclusive_minimum=0
    )
    keepalive_timeout: Duration = setting(
        75.0, "idle keep-alive connections are closed after this", exclusive_minimum=0
    )
    max_header_bytes: int = setting(
        65_536, "largest request head (request line + headers); 431 past it", minimum=1024
    )
    max_connections: int = setting(
        10_000, "open client connections per process; past it new ones are closed", minimum=1
    )
    request_buffer_bytes: int = setting(
        65_536, "a body up to this size is read whole before the first attempt", minimum=0
    )
    client_body_timeout: Duration = setting(
        10.0, "longest wait between bytes of a request body, read whole or streamed; 408 past it",
        exclusive_minimum=0,
    )  # fmt: skip
    access_log: bool = setting(
        False, "one JSON line per request on stdout (logger proxy.access); or --access-log"
    )
    tls: ServerTlsPolicy | None = setting(
        None, "serve HTTPS (and WSS) on `listen`; the files are re-read when they change"
    )
    tunnel_idle_timeout: Duration = setting(
        3600.0,
        "an upgraded connection (WebSocket to an upstream) silent both ways this long is closed",
        exclusive_minimum=0,
    )

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class JwtPolicy:
    algorithms: tuple[Literal["HS256", "HS384", "HS512", "RS256", "ES256"], ...] = setting(
        ("HS256",), "accepted signing algorithms; any other (`none` included) is refused"
    )
    secret_env: str = setting("JWT_SECRET", "environment variable holding the HS* key")
    public_key_file: str | None = setting(None, "PEM public key for RS256/ES256")
    jwks_file: str | None = setting(None, "JWKS file for RS256/ES256, key picked by `kid`")
    issuer: str | None = setting(None, "required `iss` when set")
    audience: str | None = setting(None, "required `aud` when set")
    user_claim: str = setting("sub", "claim holding the user id")
    role_claim: str = setting("role", "claim holding the role")
    leeway: Duration = setting(30.0, "clock skew allowed on exp/nbf/iat", minimum=0)
    jwks_url: str | None = setting(
        None,
        "http(s) URL of a JWKS, fetched at start and every jwks_refresh",
        pattern=r"^https?://[^/\s]+(/.*)?$",
        expected="an http:// or https:// URL",
    )
    jwks_refresh: Duration = setting(300.0, "how often jwks_url is fetched", minimum=1)
    jwks_ca_file: str | None = setting(
        None, "CA bundle for an https jwks_url (default: the system's)"
    )


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    jwt: JwtPolicy | None = setting(
        None, "token verification; left out (`auth: {}`): no token is verified"
    )
    invalid_token: Literal["reject", "anonymous"] = setting(
        "reject", "reject: 401; anonymous: treat a bad token as no token"
    )


@dataclass(frozen=True, slots=True)
class BreakerProbePolicy:
    path: str = setting("/healthz", "path requested (GET) on the upstream", pattern="^/")
    interval: Duration = setting(2.0, "time between probes while open", exclusive_minimum=0)


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    failure_threshold: int = setting(5, "consecutive failures that open it", minimum=1)
    recovery_timeout: Duration = setting(60.0, "time open before half_open", exclusive_minimum=0)
    success_threshold: int = setting(2, "half_open successes that close it", minimum=1)
    half_open_max_calls: int = setting(1, "concurrent probes allowed in half_open", minimum=1)
    failure_on: tuple[Outcome, ...] = setting(
        ("connect-failure", "timeout", "5xx"),
        "outcomes that count as failures: connect-failure, timeout, 5xx, 4xx or a status",
    )
    failure_rate_threshold: float | None = setting(
        None, "also open when this share of calls in `window` failed", minimum=0, maximum=1
    )
    window: Duration = setting(30.0, "window of the failure-rate trip", exclusive_minimum=0)
    minimum_calls: int = setting(20, "no rate trip before this many calls in the window", minimum=1)
    slow_call_duration: Duration | None = setting(
        None, "a call slower than this counts as a failure", exclusive_minimum=0
    )
    mode: Literal["enforce", "shadow"] = setting(
        "enforce", "shadow: track and report states, never reject"
    )
    probe: BreakerProbePolicy | None = setting(
        None, "upstream breakers: while open, probe it; the first success moves it to half_open"
    )


def _store_breaker() -> CircuitBreakerPolicy:
    return CircuitBreakerPolicy(failure_threshold=5, recovery_timeout=30.0)


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    backend: Literal["memory", "redis"] = setting("memory", "where rate-limit windows live")
    redis_url: str = setting("redis://127.0.0.1:6379/0", "overridden by REDIS_URL")
    on_failure: Literal["memory", "allow", "deny"] = setting(
        "memory", "while Redis is unusable: memory fallback, admit all, or refuse all"
    )
    expected_replicas: int = setting(
        1, "in memory fallback each replica admits limit / this", minimum=1
    )
    timeout: Duration = setting(0.05, "longest wait for one Redis decision", exclusive_minimum=0)
    circuit_breaker: CircuitBreakerPolicy = setting(
        factory=_store_breaker, doc="the `redis` breaker (defaults: 5 failures, 30s)"
    )
    redis_cluster_nodes: tuple[str, ...] = setting(
        (), "`HOST:PORT` of Redis Cluster nodes (any few); set: a cluster, redis_url unused"
    )
    redis_sentinels: tuple[str, ...] = setting(
        (), "`HOST:PORT` of Redis Sentinels; set: the master they name, redis_url unused"
    )
    redis_sentinel_master: str | None = setting(
        None, "the master's name the sentinels monitor (needed with redis_sentinels)"
    )


@dataclass(frozen=True, slots=True)
class RetryBudgetPolicy:
    ratio: float = setting(0.2, "retries allowed per client request", minimum=0)
    min_per_second: float = setting(10, "retries always allowed per second", minimum=0)
    window: Duration = setting(10.0, "window the budget is counted over", exclusive_minimum=0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = setting(3, "total attempts, the first included (1: no retry)", minimum=1)
    base_delay: Duration = setting(0.1, "wait before the first retry", minimum=0)
    max_delay: Duration = setting(2.0, "longest wait between attempts", minimum=0)
    jitter: float = setting(0.25, "random factor in [1-jitter, 1+jitter]", minimum=0, maximum=1)
    retry_on: tuple[Outcome, ...] = setting(
        ("connect-failure", "timeout", "502", "503", "504"),
        "outcomes retried: connect-failure, timeout, 5xx or a status",
    )
    methods: tuple[Method, ...] = setting(
        ("GET", "HEAD", "OPTIONS", "PUT", "DELETE"),
        "methods retried on any retry_on outcome (others: only connect-failure or Idempotency-Key)",
    )
    budget: RetryBudgetPolicy = setting(factory=RetryBudgetPolicy, doc="retry budget")


@dataclass(frozen=True, slots=True)
class UpstreamTlsPolicy:
    ca_file: str | None = setting(
        None, "PEM CA bundle the upstream's certificate must chain to (default: the system's)"
    )
    server_name: str | None = setting(
        None, "name sent as SNI and checked in the certificate (default: the URL's host)"
    )
    insecure_skip_verify: bool = setting(
        False, "accept any certificate, unchecked (for tests; never in production)"
    )
    cert_file: str | None = setting(None, "PEM client certificate for mutual TLS, with key_file")
    key_file: str | None = setting(None, "PEM private key of cert_file")


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    name: str = setting("", "the key under `upstreams` (filled in by the loader)")
    url: str = setting(
        "",
        "base URL, http://HOST:PORT or https://HOST:PORT (port default: 80 or 443)",
        required=True,
        pattern=r"^https?://[^/\s]+(/.*)?$",
        expected="an http:// or https:// URL (e.g. http://127.0.0.1:8081)",
    )
    connect_timeout: Duration = setting(2.0, "TCP connect timeout", exclusive_minimum=0)
    timeout: Duration = setting(10.0, "per attempt, until the response head", exclusive_minimum=0)
    max_in_flight: int = setting(512, "concurrent requests; beyond it, 503 overloaded", minimum=1)
    retry: RetryPolicy = setting(factory=RetryPolicy, doc="retries")
    circuit_breaker: CircuitBreakerPolicy = setting(
        factory=CircuitBreakerPolicy, doc="the breaker named after this upstream"
    )
    tls: UpstreamTlsPolicy | None = setting(
        None, "how an https:// upstream is checked (default: system CAs, the URL's host)"
    )
    body_timeout: Duration = setting(
        30.0,
        "once the response head is relayed, longest silence of the body; then the client "
        "connection is cut",
        exclusive_minimum=0,
    )


@dataclass(frozen=True, slots=True)
class HeaderRulesPolicy:
    set: dict[str, str] = setting(
        factory=dict, doc="NAME: VALUE; replaces whatever was sent under that name"
    )
    remove: tuple[str, ...] = setting((), "header names removed")


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_origins: tuple[str, ...] = setting(
        (), 'browser Origins allowed (`https://app.example.com`), or ["*"] for any'
    )
    allow_methods: tuple[Method, ...] = setting(
        ("GET", "HEAD", "POST"), "methods a preflight may ask for"
    )
    allow_headers: tuple[str, ...] = setting((), "request headers a preflight may ask for")
    expose_headers: tuple[str, ...] = setting((), "response headers the browser's script may read")
    allow_credentials: bool = setting(
        False, 'cookies and Authorization allowed (not with origin "*")'
    )
    max_age: Duration = setting(
        600.0, "how long a browser may keep a preflight's answer", minimum=0
    )


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    upstream: str = setting("", "name of an entry of `upstreams`", required=True)
    path_prefix: str | None = setting(None, "matches paths starting with it", pattern="^/")
    path: str | None = setting(None, "matches this exact path", pattern="^/")
    name: str = setting("", "label in metrics and logs (default: the prefix or path)")
    strip_prefix: bool = setting(False, "remove path_prefix before forwarding")
    timeout: Duration | None = setting(
        None, "deadline for all attempts together", exclusive_minimum=0
    )
    request_headers: HeaderRulesPolicy | None = setting(
        None, "headers set or removed before forwarding"
    )
    response_headers: HeaderRulesPolicy | None = setting(
        None, "headers set or removed on every answer, the sidecar's own errors included"
    )
    cors: CorsPolicy | None = setting(
        None, "browser cross-origin rules; preflights are answered by the sidecar"
    )


@dataclass(frozen=True, slots=True)
class EndpointLimitPolicy:
    limit: Rate = setting(None, "N/DURATION", required=True)
    path: str | None = setting(None, "exact path", pattern="^/")
    path_prefix: str | None = setting(None, "path prefix", pattern="^/")
    name: str = setting("", "rule name (default: the path or prefix)")
    key: Literal["ip", "user"] = setting(
        "user", "count per client IP or per user (IP if anonymous)"
    )
    methods: tuple[Method, ...] = setting((), "only these methods (empty: all)")
    mode: Literal["enforce", "shadow"] | None = setting(None, "overrides rate_limits.mode")


@dataclass(frozen=True, slots=True)
class RateLimitsPolicy:
    mode: Literal["enforce", "shadow"] = setting("enforce", "shadow: count would-be 429s, admit")
    roles: dict[str, Rate] = setting(
        factory=dict, doc="ROLE: N/DURATION; `anonymous` for requests without a valid token"
    )
    endpoints: tuple[EndpointLimitPolicy, ...] = setting((), "limits on top of the role limit")


@dataclass(frozen=True, slots=True)
class WebSocketPathsPolicy:
    notifications: str = setting(
        "/api/v1/ws/notifications", "path of the channel of every event", pattern="^/"
    )
    alerts: str = setting("/api/v1/ws/alerts", "path of the alerts-only channel", pattern="^/")


@dataclass(frozen=True, slots=True)
class WebSocketPolicy:
    heartbeat: Duration = setting(
        30.0, "heartbeat period; silent two beats: closed", exclusive_minimum=0
    )
    auth_timeout: Duration = setting(
        10.0, "time to authenticate when required", exclusive_minimum=0
    )
    require_auth: bool = setting(False, "close with 1008 without a valid token")
    send_queue: int = setting(1000, "messages queued per connection; overflow: 1013", minimum=1)
    history: int = setting(1000, "events kept for resume", minimum=0)
    max_message_bytes: int = setting(65_536, "largest client frame; bigger: 1009", minimum=128)
    allowed_origins: tuple[str, ...] = setting((), "browser Origins allowed (empty: any)")
    token_expiry_grace: Duration = setting(25.0, "time after exp to send a new auth", minimum=0)
    enabled: bool = setting(True, "false: the hub's paths are routed to the upstream")
    paths: WebSocketPathsPolicy = setting(
        factory=WebSocketPathsPolicy, doc="the hub's WebSocket paths"
    )
    send_queue_bytes: int = setting(
        1_048_576, "bytes queued per connection; overflow: 1013", minimum=1024
    )


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    upstream: str = setting("", "name of an entry of `upstreams`", required=True)
    path: str = setting("/", "path POSTed to", pattern="^/")
    min_severity: Literal["info", "warning", "critical"] = setting(
        "warning", "lowest severity sent"
    )
    queue: int = setting(1000, "alerts waiting for this sink; past it they are dropped", minimum=1)
    format: Literal["json", "slack", "pagerduty", "alertmanager"] = setting(
        "json",
        "body sent: json (the alert event), slack (incoming webhook), pagerduty (Events API"
        " v2), alertmanager (POST /api/v2/alerts)",
    )
    routing_key_env: str | None = setting(
        None, "environment variable holding the PagerDuty routing key (format: pagerduty)"
    )


@dataclass(frozen=True, slots=True)
class AlertsPolicy:
    ingest_token_env: str = setting(
        "PROXY_EVENTS_TOKEN", "environment variable holding the service token for ingest"
    )
    sinks: tuple[SinkPolicy, ...] = setting((), "where alerts are also POSTed")
    operational: bool = setting(
        False,
        "publish the sidecar's own alerts (breaker open/closed, storage fallback/recovered,"
        " policy reload failed) on the alerts channel and to the sinks",
    )
    enabled: bool = setting(True, "false: the ingest path is routed to the upstream")
    ingest_path: str = setting("/api/v1/events", "path of event ingest (POST)", pattern="^/")


@dataclass(frozen=True, slots=True)
class AdminPolicy:
    roles: tuple[str, ...] = setting(("admin",), "roles allowed on the admin endpoints")
    metrics_path: str = setting("/metrics", "path of the Prometheus endpoint", pattern="^/")
    listen: str | None = setting(
        None,
        "HOST:PORT of the sidecar's own endpoints (null: they share server.listen)",
        pattern=r"^\[?[^\]]*\]?:\d{1,5}$",
        expected="HOST:PORT (e.g. 127.0.0.1:9901)",
    )
    token_env: str | None = setting(
        None, "environment variable whose value, as `Bearer VALUE`, is admin too"
    )

    @property
    def host(self) -> str:
        return (self.listen or "").rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int((self.listen or ":0").rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True)
class TracingPolicy:
    otlp_endpoint: str | None = setting(
        None,
        "OTLP/HTTP traces URL (e.g. http://otel-collector:4318/v1/traces); null: no export",
        pattern="^https?://",
        expected="an http:// or https:// URL",
    )
    sample_ratio: float = setting(
        0.01, "share of new traces sampled; an incoming sampled flag is followed",
        minimum=0, maximum=1,
    )  # fmt: skip
    service_name: str = setting("resilience-sidecar", "service.name of the exported spans")


@dataclass(frozen=True, slots=True)
class Policy:
    version: Literal[1] = setting(1, "policy format version")
    server: ServerPolicy = setting(factory=ServerPolicy, doc="the listener")
    auth: AuthPolicy = setting(factory=AuthPolicy, doc="identity")
    storage: StoragePolicy = setting(factory=StoragePolicy, doc="rate-limit store")
    upstreams: dict[str, UpstreamPolicy] = setting(factory=dict, doc="NAME: upstream")
    routes: tuple[RoutePolicy, ...] = setting((), "first match wins")
    rate_limits: RateLimitsPolicy = setting(factory=RateLimitsPolicy, doc="rate limits")
    websocket: WebSocketPolicy = setting(factory=WebSocketPolicy, doc="WebSocket hub")
    alerts: AlertsPolicy = setting(factory=AlertsPolicy, doc="alert ingest and sinks")
    admin: AdminPolicy = setting(factory=AdminPolicy, doc="admin endpoints")
    tracing: TracingPolicy = setting(factory=TracingPolicy, doc="W3C trace context, OTLP spans")
