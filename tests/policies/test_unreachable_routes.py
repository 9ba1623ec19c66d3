"""The "never matches" check agrees with the route table: dropping the routes it flags
changes no routing decision, and every route it keeps is chosen for its own path
(property-tested over random tables)."""

from __future__ import annotations

import dataclasses
import re

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.errors import PolicyError
from policies.load import load_policy_text
from policies.model import Policy, RoutePolicy
from proxy.core.routing import RouteTable

SEGMENTS = st.sampled_from(["a", "b", "api", "v1"])
PATHS = st.lists(SEGMENTS, max_size=3).map(lambda parts: "/" + "/".join(parts))
ROUTE = st.builds(
    lambda prefix, path, slash: ("path_prefix" if prefix else "path", path + "/" * slash),
    st.booleans(),
    PATHS,
    st.booleans(),
).map(lambda kv: (kv[0], kv[1].replace("//", "/")))


def document(routes: list[tuple[str, str, str]]) -> str:
    entries = [{"name": name, key: value, "upstream": "app"} for name, key, value in routes]
    return yaml.safe_dump({"upstreams": {"app": {"url": "http://127.0.0.1:9"}}, "routes": entries})


def flagged(text: str) -> set[int]:
    try:
        load_policy_text(text, "p.yaml")
    except PolicyError as error:
        return {int(m) for m in re.findall(r"routes\[(\d+)\]\.path\w*: never matches", str(error))}
    return set()


def table(policy: Policy, routes: list[tuple[str, str, str]]) -> RouteTable:
    specs = tuple(
        RoutePolicy(upstream="app", name=name, **{key: value}) for name, key, value in routes
    )
    return RouteTable(dataclasses.replace(policy, routes=specs))


@settings(max_examples=200, deadline=None)
@given(st.lists(ROUTE, min_size=1, max_size=6), st.lists(PATHS, max_size=8))
def test_flagged_routes_change_nothing_and_kept_ones_are_reachable(pairs, probes) -> None:
    routes = [(f"r{i}", key, value) for i, (key, value) in enumerate(pairs)]
    never = flagged(document(routes))
    kept = [route for i, route in enumerate(routes) if i not in never]
    policy = load_policy_text(document(kept), "p.yaml").policy  # the kept table is valid
    everything, valid = table(policy, routes), RouteTable(policy)
    for probe in [*probes, *(value for _, _, value in routes)]:
        for path in (probe, probe + "/", probe + "x"):
            chosen, expected = everything.match(path.encode()), valid.match(path.encode())
            assert (chosen and chosen.name) == (expected and expected.name), path
    for route in valid.routes:  # reachable: its path, or a path only its prefix covers
        own = route.exact if route.exact is not None else route.prefix + b"~q"  # type: ignore[operator]
        assert valid.match(own) is route
