"""Validation of the chaos body and the dice, without a server."""

from __future__ import annotations

import random
from typing import Any

import pytest

from upstream_app.chaos import ChaosSettings, ChaosState, parse_settings
from upstream_app.errors import ApiError


def test_empty_body_turns_chaos_off() -> None:
    settings = parse_settings({})
    assert settings == ChaosSettings()
    assert not settings.active


def test_full_body_is_kept() -> None:
    body = {"error_rate": 0.5, "status": 500, "latency_ms": 20, "fail_after_commit_rate": 1}
    settings = parse_settings(body)
    assert settings.to_dict() == {**body, "latency_ms": 20.0, "fail_after_commit_rate": 1.0}
    assert settings.active


def test_absent_keys_take_defaults_not_previous_values() -> None:
    assert parse_settings({"latency_ms": 5}).to_dict() == {
        "error_rate": 0.0,
        "status": 503,
        "latency_ms": 5.0,
        "fail_after_commit_rate": 0.0,
    }


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"error_rate": "0.5"},
        {"error_rate": True},
        {"fail_after_commit_rate": 2},
        {"status": 200},
        {"status": 600},
        {"status": 503.0},
        {"latency_ms": -1},
        {"latency_ms": 10**9},
        {"error_rat": 1},
    ],
)
def test_bad_values_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as caught:
        parse_settings(body)
    assert caught.value.status == 400


def test_roll_follows_the_rate() -> None:
    state = ChaosState(random.Random(42))
    assert not any(state.roll(0.0) for _ in range(1000))
    assert all(state.roll(1.0) for _ in range(1000))
    hits = sum(state.roll(0.25) for _ in range(10_000))
    assert 2200 < hits < 2800
