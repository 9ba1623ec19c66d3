"""Rules that span several keys, and the values derived from others (names).

Each rule runs only when the values it reads were valid (`Collector.ok`), so an operator
sees the cause once, not its echoes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from policies.build import Collector, child, suggest
from policies.header_rules import check_route_headers
from policies.model import (
    EndpointLimitPolicy,
    JwtPolicy,
    Policy,
    RoutePolicy,
    ServerPolicy,
    SinkPolicy,
    StoragePolicy,
    UpstreamPolicy,
)
from policies.yaml_positions import shown

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
ROLE_RULE_PREFIX = "role:"
"""Role limits are named `role:ROLE`; an endpoint rule may not take such a name."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*")


def finish(policy: Policy, c: Collector) -> Policy:
    """The policy with derived names filled in; every cross-key problem added to `c`."""
    _check_server(policy.server, c)
    _check_admin(policy, c)
    _check_own_paths(policy, c)
    if policy.auth.jwt is not None:
        _check_jwt(policy.auth.jwt, c)
    redis_problem = redis_url_problem(policy.storage.redis_url)
    if redis_problem and c.ok("storage.redis_url"):
        c.add(c.at("storage.redis_url"), "storage.redis_url", redis_problem)
    _check_redis_topology(policy.storage, c)
    workers_alone = policy.server.workers > 1 and policy.storage.backend != "redis"
    if workers_alone and c.ok("server.workers", "storage.backend"):
        c.add(
            c.at("server.workers"),
            "server.workers",
            "more than 1 worker needs storage.backend: redis (memory windows are per process)",
        )
    upstreams = {k: _upstream(k, u, c) for k, u in policy.upstreams.items()}
    routes = tuple(_route(i, r, upstreams, c) for i, r in enumerate(policy.routes))
    _unique_names([r.name for r in routes], "routes", "route", c)
    _check_unreachable_routes(routes, c)
    endpoints = tuple(_endpoint(i, e, c) for i, e in enumerate(policy.rate_limits.endpoints))
    _unique_names([e.name for e in endpoints], "rate_limits.endpoints", "rule", c)
    for i, sink in enumerate(policy.alerts.sinks):
        _known_upstream(sink.upstream, f"alerts.sinks[{i}].upstream", upstreams, c)
        _sink_format(i, sink, c)
    _env_name(policy.alerts.ingest_token_env, "alerts.ingest_token_env", c)
    for i, role in enumerate(policy.admin.roles):
        if not role.strip() and c.ok(f"admin.roles[{i}]"):
            c.add(c.at(f"admin.roles[{i}]"), f"admin.roles[{i}]", "a role name must not be empty")
    return replace(
        policy,
        upstreams=upstreams,
        routes=routes,
        rate_limits=replace(policy.rate_limits, endpoints=endpoints),
    )


def redis_url_problem(url: str) -> str | None:
    """Why `url` cannot reach Redis, if it cannot (shared with the REDIS_URL override)."""
    if url.startswith(REDIS_SCHEMES):
        return None
    return "must be a URL starting with " + ", ".join(REDIS_SCHEMES)


def _check_redis_topology(storage: StoragePolicy, c: Collector) -> None:
    """Cluster or Sentinel, not both; Sentinel with its master's name; nodes as HOST:PORT."""
    for key, nodes in (
        ("redis_cluster_nodes", storage.redis_cluster_nodes),
        ("redis_sentinels", storage.redis_sentinels),
    ):
        for i, node in enumerate(nodes):
            path = f"storage.{key}[{i}]"
            problem = _address_problem(node)
            if problem and c.ok(path):
                c.add(c.at(path), path, problem)
    cluster, sentinels = "storage.redis_cluster_nodes", "storage.redis_sentinels"
    master = "storage.redis_sentinel_master"
    if storage.redis_cluster_nodes and storage.redis_sentinels and c.ok(cluster, sentinels):
        c.add(c.at(sentinels), sentinels, f"use {cluster} or {sentinels}, not both")
    named = storage.redis_sentinel_master is not None and storage.redis_sentinel_master.strip()
    if storage.redis_sentinels and not named and c.ok(sentinels, master):
        c.add(c.at(sentinels), sentinels, f"needs {master} (the name the sentinels monitor)")
    if named and not storage.redis_sentinels and c.ok(sentinels, master):
        c.add(c.at(master), master, f"needs {sentinels} (where to ask for the master)")


def _address_problem(address: str) -> str | None:
    """Why `address` is not `HOST:PORT`, if it is not."""
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{shown(address)} is not HOST:PORT (port 1-65535)"
    if not host or not _valid_host(host):
        return f"{shown(host)} is not an IP address or host name"
    return None


def _check_server(server: ServerPolicy, c: Collector) -> None:
    _check_listen(server.listen, "server.listen", c)
    for i, cidr in enumerate(server.trusted_proxies):
        path = f"server.trusted_proxies[{i}]"
        if c.ok(path):
            problem = _cidr_problem(cidr)
            if problem:
                c.add(c.at(path), path, problem)


def _check_listen(listen: str, path: str, c: Collector) -> None:
    if c.ok(path):
        host, _, port = listen.rpartition(":")
        problem = None
        if not 1 <= int(port) <= 65535:
            problem = f"port {port} is out of range (1-65535)"
        elif not host:
            problem = "the host is missing (0.0.0.0 listens on every interface)"
        elif not _valid_host(host):
            problem = f"{shown(host)} is not an IP address or host name"
        if problem:
            c.add(c.at(path), path, problem)


def _check_admin(policy: Policy, c: Collector) -> None:
    admin = policy.admin
    if admin.token_env is not None:
        _env_name(admin.token_env, "admin.token_env", c)
    if admin.listen is None:
        return
    _check_listen(admin.listen, "admin.listen", c)
    if c.ok("admin.listen", "server.listen") and admin.port == policy.server.port:
        c.add(
            c.at("admin.listen"),
            "admin.listen",
            f"port {admin.port} is server.listen's; the own endpoints need a port of their own",
        )


ADMIN_PATHS = (
    "/healthz",
    "/readyz",
    "/console",
    "/console/",
    "/api/v1/resilience/",
    "/api/v1/ws/connections",
)
"""The sidecar's own paths besides the metrics path (shared with the data plane by default)."""


def _check_own_paths(policy: Policy, c: Collector) -> None:
    """The hub's paths may not collide with each other nor, on a shared port, the admin's."""
    taken: dict[str, str] = {}
    if policy.admin.listen is None:
        taken = dict.fromkeys(ADMIN_PATHS, "an own endpoint")
        taken[policy.admin.metrics_path] = "admin.metrics_path"
    candidates = []
    if policy.websocket.enabled:
        paths = policy.websocket.paths
        candidates += [
            ("websocket.paths.notifications", paths.notifications),
            ("websocket.paths.alerts", paths.alerts),
        ]
    if policy.alerts.enabled:
        candidates.append(("alerts.ingest_path", policy.alerts.ingest_path))
    for key_path, value in candidates:
        if not c.ok(key_path):
            continue
        clash = next(
            (
                owner
                for path, owner in taken.items()
                if value == path or (path.endswith("/") and value.startswith(path))
            ),
            None,
        )
        if clash is not None:
            c.add(c.at(key_path), key_path, f"{shown(value)} is already {clash}'s path")
        taken[value] = key_path


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return _is_ip(host[1:-1], version=6)
    return _is_ip(host, version=4) or bool(_HOSTNAME.fullmatch(host))


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def _cidr_problem(cidr: str) -> str | None:
    try:
        ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return f"{shown(cidr)} is not an IP network like 10.0.0.0/8"
        return f"{shown(cidr)} has host bits set; did you mean '{network}'?"
    return None


def _check_jwt(jwt: JwtPolicy, c: Collector) -> None:
    where = "auth.jwt.algorithms"
    if not c.ok(where):
        return
    if not jwt.algorithms:
        c.add(c.at(where), where, "at least one algorithm is needed")
    asymmetric = [a for a in jwt.algorithms if not a.startswith("HS")]
    no_key = not (jwt.public_key_file or jwt.jwks_file or jwt.jwks_url)
    key_paths = ("auth.jwt.public_key_file", "auth.jwt.jwks_file", "auth.jwt.jwks_url")
    if asymmetric and no_key and c.ok(*key_paths):
        c.add(
            c.at(where),
            where,
            f"{', '.join(asymmetric)} needs auth.jwt.public_key_file, auth.jwt.jwks_file "
            "or auth.jwt.jwks_url",
        )
    if jwt.jwks_url is not None and jwt.jwks_file is not None and c.ok(*key_paths):
        c.add(
            c.at("auth.jwt.jwks_url"),
            "auth.jwt.jwks_url",
            "set only one of jwks_file and jwks_url",
        )
    if any(a.startswith("HS") for a in jwt.algorithms):
        _env_name(jwt.secret_env, "auth.jwt.secret_env", c)


def _sink_format(i: int, sink: SinkPolicy, c: Collector) -> None:
    """A PagerDuty sink needs the name of the variable holding its routing key."""
    path = f"alerts.sinks[{i}].routing_key_env"
    if sink.format == "pagerduty" and sink.routing_key_env is None:
        if c.ok(f"alerts.sinks[{i}].format"):
            where = f"alerts.sinks[{i}].format"
            c.add(c.at(where), where, "pagerduty needs routing_key_env (the key's variable)")
    elif sink.routing_key_env is not None:
        _env_name(sink.routing_key_env, path, c)


def _env_name(name: str, path: str, c: Collector) -> None:
    if c.ok(path) and not _ENV_NAME.fullmatch(name):
        c.add(c.at(path), path, f"{shown(name)} is not an environment variable name")


def _upstream(key: str, upstream: UpstreamPolicy, c: Collector) -> UpstreamPolicy:
    path = child("upstreams", key)
    if upstream.name and upstream.name != key and c.ok(f"{path}.name"):
        c.add(
            c.at(f"{path}.name"),
            f"{path}.name",
            f"an upstream is named by its key ('{key}'); leave `name` out",
        )
    retry = upstream.retry
    delays_ok = c.ok(f"{path}.retry.max_delay", f"{path}.retry.base_delay")
    if retry.max_delay < retry.base_delay and delays_ok:
        c.add(
            c.at(f"{path}.retry.max_delay"),
            f"{path}.retry.max_delay",
            "must be at least retry.base_delay",
        )
    return replace(upstream, name=key)


def _one_of_path(path: str | None, prefix: str | None, base: str, what: str, c: Collector) -> None:
    """Exactly one of `path` and `path_prefix` must be set on a route or a rule."""
    if not c.ok(f"{base}.path", f"{base}.path_prefix"):
        return
    if path is None and prefix is None:
        c.add(c.at(base), base, f"a {what} needs `path` or `path_prefix`")
    elif path is not None and prefix is not None:
        c.add(c.at(f"{base}.path"), f"{base}.path", "set only one of `path` and `path_prefix`")


def _route(
    i: int, route: RoutePolicy, upstreams: dict[str, UpstreamPolicy], c: Collector
) -> RoutePolicy:
    base = f"routes[{i}]"
    _one_of_path(route.path, route.path_prefix, base, "route", c)
    if route.strip_prefix and route.path_prefix is None and route.path is not None:
        c.add(c.at(f"{base}.strip_prefix"), f"{base}.strip_prefix", "needs `path_prefix`")
    _known_upstream(route.upstream, f"{base}.upstream", upstreams, c)
    check_route_headers(base, route, c)
    return replace(route, name=route.name or route.path_prefix or route.path or "")


def _check_unreachable_routes(routes: tuple[RoutePolicy, ...], c: Collector) -> None:
    """A route an earlier one always takes first (same path or prefix, or a covering prefix)."""
    for j, later in enumerate(routes):
        key = "path" if later.path is not None else "path_prefix"
        target = later.path if later.path is not None else later.path_prefix
        where = f"routes[{j}].{key}"
        if target is None or not c.ok(where, f"routes[{j}].path", f"routes[{j}].path_prefix"):
            continue
        for i, earlier in enumerate(routes[:j]):
            if not c.ok(f"routes[{i}]"):
                continue
            covering = earlier.path_prefix is not None and target.startswith(earlier.path_prefix)
            same = earlier.path is not None and later.path == earlier.path
            if covering or same:
                shown_path = earlier.path_prefix if covering else earlier.path
                c.add(
                    c.at(where),
                    where,
                    f"never matches: routes[{i}] ({shown_path}) comes first",
                )
                break


def _known_upstream(
    name: str, path: str, upstreams: dict[str, UpstreamPolicy], c: Collector
) -> None:
    if not name or name in upstreams or not c.ok(path, "upstreams"):
        return
    guess = suggest(name, upstreams)
    if guess:
        hint = f"did you mean '{guess}'?"
    else:
        hint = "upstreams: " + (", ".join(upstreams) or "none defined")
    c.add(c.at(path), path, f"unknown upstream {shown(name)}; {hint}")


def _endpoint(i: int, rule: EndpointLimitPolicy, c: Collector) -> EndpointLimitPolicy:
    base = f"rate_limits.endpoints[{i}]"
    _one_of_path(rule.path, rule.path_prefix, base, "rule", c)
    if rule.name.startswith(ROLE_RULE_PREFIX) and c.ok(f"{base}.name"):
        c.add(
            c.at(f"{base}.name"),
            f"{base}.name",
            f"names starting with '{ROLE_RULE_PREFIX}' belong to role limits",
        )
    return replace(rule, name=rule.name or rule.path or rule.path_prefix or "")


def _unique_names(names: list[str], base: str, what: str, c: Collector) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        path = f"{base}[{i}]"
        if not name or not c.ok(f"{path}.name", f"{path}.path", f"{path}.path_prefix"):
            continue
        if name in first:
            c.add(
                c.at(f"{path}.name"),
                f"{path}.name",
                f"duplicate {what} name {shown(name)} (also {base}[{first[name]}])",
            )
        else:
            first[name] = i
