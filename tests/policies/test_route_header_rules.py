"""Route `request_headers`, `response_headers` and `cors`: read into the model, and the
rules the sidecar cannot honour refused as `FILE:LINE:COL: key.path: message`."""

from __future__ import annotations

import pytest

from policies.errors import PolicyError
from policies.load import load_policy_text

HEAD = """\
upstreams:
  app: {url: "http://127.0.0.1:9"}
routes:
  - path_prefix: /api/
    upstream: app
"""


def load(extra: str):
    return load_policy_text(HEAD + extra, "p.yaml").policy


def problems(extra: str) -> str:
    with pytest.raises(PolicyError) as info:
        load(extra)
    return str(info.value)


def test_the_contract_example_is_read() -> None:
    route = load(
        """\
    request_headers:  { set: { X-Env: prod }, remove: [X-Debug] }
    response_headers: { set: { Strict-Transport-Security: "max-age=31536000" }, remove: [Server] }
    cors:
      allow_origins: ["https://app.example.com"]
      allow_methods: [GET, post]
      allow_headers: [Authorization, Content-Type]
      expose_headers: [X-Request-Id, RateLimit]
      allow_credentials: true
      max_age: 10m
"""
    ).routes[0]
    assert route.request_headers is not None and route.response_headers is not None
    assert dict(route.request_headers.set) == {"X-Env": "prod"}
    assert route.request_headers.remove == ("X-Debug",)
    assert route.response_headers.remove == ("Server",)
    assert route.cors is not None
    assert route.cors.allow_methods == ("GET", "POST")
    assert route.cors.max_age == 600.0
    assert route.cors.allow_credentials is True


def test_a_route_without_rules_has_none() -> None:
    route = load("").routes[0]
    assert (route.request_headers, route.response_headers, route.cors) == (None, None, None)


@pytest.mark.parametrize(
    "name",
    ["X-User-Id", "x-user-role", "X-Request-Id", "X-Forwarded-For", "X-Forwarded-Host",
     "traceparent", "Connection", "Transfer-Encoding", "Upgrade", "TE"],
)  # fmt: skip
def test_request_headers_may_not_name_the_sidecars_own(name: str) -> None:
    text = problems(f"    request_headers: {{ set: {{ {name}: x }} }}\n")
    column = 31 + len(name) + 2  # the value's: that is where the entry is remembered
    assert f"p.yaml:6:{column}: routes[0].request_headers.set.{name}: " in text
    assert "may not be changed here" in text
    removed = problems(f"    request_headers: {{ remove: [{name}] }}\n")
    assert f"p.yaml:6:33: routes[0].request_headers.remove[0]: '{name}' may not" in removed


def test_response_headers_may_not_name_framing() -> None:
    text = problems("    response_headers: { remove: [Content-Length] }\n")
    assert "p.yaml:6:34: routes[0].response_headers.remove[0]: 'Content-Length' may not" in text


def test_response_headers_may_name_what_requests_may_not() -> None:
    assert load("    response_headers: { set: { X-User-Id: x } }\n").routes[0].response_headers
    text = problems("    response_headers: { remove: [X-Request-Id] }\n")
    assert "routes[0].response_headers.remove[0]: 'X-Request-Id' may not be changed" in text


def test_bad_names_and_values() -> None:
    text = problems(
        '    request_headers: { set: { "X Bad": v, X-Ok: "a\\nb" }, remove: ["a:b"] }\n'
    )
    assert "routes[0].request_headers.set['X Bad']: 'X Bad' is not a header name" in text
    assert "routes[0].request_headers.set.X-Ok: a header value must be printable ASCII" in text
    assert "routes[0].request_headers.remove[0]: 'a:b' is not a header name" in text


def test_credentials_with_any_origin_is_an_error() -> None:
    text = problems('    cors: { allow_origins: ["*"], allow_credentials: true }\n')
    assert (
        "p.yaml:6:54: routes[0].cors.allow_credentials: cannot be true with allow_origins" in text
    )


def test_cors_origins_must_be_origins() -> None:
    text = problems('    cors: { allow_origins: ["https://a.example/path", "app.example.com"] }\n')
    assert "routes[0].cors.allow_origins[0]: 'https://a.example/path' is not an origin" in text
    assert "routes[0].cors.allow_origins[1]: 'app.example.com' is not an origin" in text
    assert "routes[0].cors.allow_origins: at least one origin" in problems("    cors: {}\n")


def test_unknown_key_under_cors_gets_a_hint() -> None:
    text = problems('    cors: { allow_origin: ["*"] }\n')
    assert (
        "routes[0].cors.allow_origin: unknown key 'allow_origin'; did you mean 'allow_origins'?"
        in text
    )
