"""The CORS rule's answers: the origin (or `*`), Vary, and nothing for a stranger."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from policies.model import CorsPolicy
from proxy.core.cors import CorsRule

APP = "https://app.example.com"


def rule(**kwargs: object) -> CorsRule:
    return CorsRule(CorsPolicy(**kwargs))  # type: ignore[arg-type]


def lines(raw: bytes) -> dict[bytes, bytes]:
    pairs = [line.split(b": ", 1) for line in raw.split(b"\r\n") if line]
    return {name: value for name, value in pairs}


def test_preflight_from_an_allowed_origin() -> None:
    cors = rule(
        allow_origins=(APP,), allow_methods=("GET", "POST"),
        allow_headers=("Authorization", "Content-Type"), max_age=600.0,
    )  # fmt: skip
    answer = cors.preflight(APP.encode())
    assert answer is not None
    assert lines(answer) == {
        b"access-control-allow-origin": APP.encode(),
        b"vary": b"Origin",
        b"access-control-allow-methods": b"GET, POST",
        b"access-control-allow-headers": b"Authorization, Content-Type",
        b"access-control-max-age": b"600",
    }


def test_preflight_from_another_origin_is_refused() -> None:
    cors = rule(allow_origins=(APP,))
    assert cors.preflight(b"https://evil.example") is None
    assert cors.preflight(b"https://app.example.com:8443") is None


def test_origins_compare_without_case() -> None:
    assert rule(allow_origins=(APP,)).preflight(b"HTTPS://App.Example.com") is not None


def test_any_origin_answers_star_without_credentials() -> None:
    answer = rule(allow_origins=("*",)).preflight(b"https://x.example")
    assert answer is not None and lines(answer)[b"access-control-allow-origin"] == b"*"


def test_credentials_name_the_origin() -> None:
    cors = rule(allow_origins=(APP,), allow_credentials=True, expose_headers=("X-Request-Id",))
    simple = lines(cors.simple(APP.encode()))
    assert simple == {
        b"access-control-allow-origin": APP.encode(),
        b"vary": b"Origin",
        b"access-control-expose-headers": b"X-Request-Id",
        b"access-control-allow-credentials": b"true",
    }


def test_simple_answers_carry_nothing_for_strangers_or_no_origin() -> None:
    cors = rule(allow_origins=(APP,), expose_headers=("X-Request-Id",))
    assert cors.simple(b"https://evil.example") == b""
    assert cors.simple(None) == b""


@given(st.lists(st.sampled_from(["https://a.example", "http://b.example:8080", "*"]), min_size=1),
       st.sampled_from([b"https://a.example", b"http://b.example:8080", b"https://c.example"]),
       st.booleans())  # fmt: skip
def test_allowed_exactly_when_listed(origins: list[str], origin: bytes, credentials: bool) -> None:
    if credentials and "*" in origins:
        return  # refused by the policy loader
    cors = rule(allow_origins=tuple(origins), allow_credentials=credentials)
    listed = "*" in origins or origin.decode() in origins
    preflight = cors.preflight(origin)
    assert (preflight is not None) == listed
    assert bool(cors.simple(origin)) == listed
    if preflight is not None:
        said = lines(preflight)[b"access-control-allow-origin"]
        assert said == (b"*" if "*" in origins and not credentials else origin)
