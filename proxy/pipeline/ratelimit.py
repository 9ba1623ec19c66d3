"""Rate limiting of one request: which rules apply, one store decision, the headers.

Rules are compiled once per policy load. A request is checked against its role rule
(keyed by user id, or client IP when anonymous) and every endpoint rule that matches its
path (keyed as the rule says), all in ONE store decision: recorded in all or in none.
A role not listed under `rate_limits.roles` has no role limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from policies.model import EndpointLimitPolicy, RateLimitsPolicy
from proxy.core.identity import Identity
from proxy.core.window import Decision, LimitCheck, RuleResult, most_restrictive
from proxy.errors import RateLimited, retry_after_value
from proxy.storage.base import LimitStore, await_decision

if TYPE_CHECKING:
    from proxy.metrics import Metrics


@dataclass(frozen=True, slots=True)
class EndpointRule:
    name: str
    exact: bytes | None
    prefix: bytes | None
    methods: frozenset[bytes]
    limit: int
    window_s: float
    by_ip: bool
    shadow: bool

    def applies(self, path: bytes, method: bytes) -> bool:
        if self.methods and method not in self.methods:
            return False
        if self.exact is not None:
            return path == self.exact
        return self.prefix is not None and path.startswith(self.prefix)


def _endpoint_rule(spec: EndpointLimitPolicy, global_shadow: bool) -> EndpointRule:
    return EndpointRule(
        name=spec.name,
        exact=spec.path.encode() if spec.path is not None else None,
        prefix=spec.path_prefix.encode() if spec.path_prefix is not None else None,
        methods=frozenset(m.encode() for m in spec.methods),
        limit=spec.limit.limit,
        window_s=spec.limit.window_s,
        by_ip=spec.key == "ip",
        shadow=global_shadow or spec.mode == "shadow",
    )


class RateLimiter:
    __slots__ = ("_endpoints", "_roles", "has_rules", "metrics", "store")

    def __init__(self, policy: RateLimitsPolicy, store: LimitStore, metrics: Metrics) -> None:
        shadow = policy.mode == "shadow"
        self._roles = {
            role: (f"role:{role}", rate.limit, rate.window_s, shadow)
            for role, rate in policy.roles.items()
        }
        self._endpoints = tuple(_endpoint_rule(spec, shadow) for spec in policy.endpoints)
        self.has_rules = bool(self._roles or self._endpoints)
        """False: no request is ever limited, and the limit stage can be skipped."""
        self.store = store
        self.metrics = metrics

    def checks(
        self, identity: Identity, client_ip: str, path: bytes, method: bytes
    ) -> list[LimitCheck]:
        subject = identity.user_id if identity.authenticated else client_ip
        checks = []
        role = self._roles.get(identity.role)
        if role is not None:
            checks.append(LimitCheck(role[0], subject, role[1], role[2], role[3], subject))
        for rule in self._endpoints:
            if rule.applies(path, method):
                key = client_ip if rule.by_ip else subject
                checks.append(
                    LimitCheck(rule.name, key, rule.limit, rule.window_s, rule.shadow, subject)
                )
        return checks

    async def check(self, identity: Identity, client_ip: str, path: bytes, method: bytes) -> bytes:
        """The X-RateLimit-* header lines to send, or RateLimited (429) carrying them."""
        checks = self.checks(identity, client_ip, path, method)
        if not checks:
            return b""
        return self.verdict(await await_decision(self.store, checks))

    def verdict(self, decision: Decision) -> bytes:
        """Count the decision; its header lines to send, or RateLimited (429) carrying them."""
        self.metrics.rate_limit_decisions(decision.results)
        lines = limit_lines(decision)
        if not decision.allowed:
            rule = decision.blocking_rule or ""
            wait = decision.retry_after_s
            raise RateLimited(
                f"rate limit '{rule}' exceeded",
                headers=[*header_pairs(lines), ("Retry-After", retry_after_value(wait))],
                rule=rule,
                retry_after_s=round(wait, 3),
            )
        return lines

    def role_window(self, identity: Identity) -> float | None:
        role = self._roles.get(identity.role)
        return None if role is None else role[2]

    def record_forwarded(self, identity: Identity, path: bytes) -> None:
        """Count a forwarded request of a verified user for the usage endpoint."""
        window = self.role_window(identity)
        if identity.authenticated and window is not None:
            self.store.record_usage(identity.user_id, path.decode("latin-1"), window)

    async def usage(self, user_id: str) -> dict[str, object]:
        usage = await self.store.usage(user_id)
        return {"endpoints": dict(usage.endpoints), "total_requests": usage.total_requests}


_STATIC: dict[str, tuple[int, float, bytes, bytes]] = {}
"""Per rule name: its limit, window, and the header lines that do not change between
requests (bounded by the policy)."""


def _static_lines(rule: str, limit: int, window_s: float) -> tuple[bytes, bytes]:
    """The rule's fixed header lines, and its quoted name for the `RateLimit` header."""
    static = _STATIC.get(rule)
    if static is None or static[0] != limit or static[1] != window_s:
        window = max(1, round(window_s))
        name = b'"%s"' % rule.replace('"', "").encode()
        fixed = (
            b"X-RateLimit-Limit: %d\r\nX-RateLimit-Window: %d\r\n"
            b"RateLimit-Policy: %s;q=%d;w=%d\r\n" % (limit, window, name, limit, window)
        )
        static = (limit, window_s, fixed, name)
        if len(_STATIC) > 4096:
            _STATIC.clear()
        _STATIC[rule] = static
    return static[2], static[3]


def limit_lines(decision: Decision) -> bytes:
    """X-RateLimit-* and the IETF draft-11 pair for the most restrictive rule, rendered
    (`Name: value\\r\\n` lines): they go out on every limited request."""
    chosen: RuleResult | None = most_restrictive(decision.results)
    if chosen is None:
        return b""
    fixed, name = _static_lines(chosen.rule, chosen.limit, chosen.window_s)
    remaining = max(0, chosen.remaining)
    reset_after = chosen.reset_after_s
    reset_at: int = math.ceil(time.time() + reset_after)
    reset_in: int = max(0, math.ceil(reset_after))
    # A literal format with bytes and int operands: mypyc renders it in one copy.
    return (
        b"%sX-RateLimit-Remaining: %d\r\nX-RateLimit-Reset: %d\r\nRateLimit: %s;r=%d;t=%d\r\n"
    ) % (fixed, remaining, reset_at, name, remaining, reset_in)


def header_pairs(lines: bytes) -> list[tuple[str, str]]:
    """Rendered header lines back as (name, value) pairs (for an error's own headers)."""
    pairs = []
    for line in lines.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            pairs.append((name.decode("latin-1"), value.decode("latin-1")))
    return pairs
