"""The memory window and the Lua script decide alike on the same sequence of requests.

Both see the same timestamps: the memory store a fake clock, the script the time passed
explicitly (its optional last argument; replicas use Redis `TIME`). Times and windows are
whole seconds, exact in floats and in microseconds alike, so any difference is a
difference of the algorithms.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from proxy.clock import FakeClock
from proxy.core.window import Decision, LimitCheck
from proxy.storage.memory import MemoryStore
from proxy.storage.redis import MICROS, SLIDING_WINDOW, decision_from_reply, rule_args, window_keys

START_S = 1_000


@pytest.fixture
def raw(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


rules = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 5), st.booleans()), min_size=1, max_size=3
)
steps = st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.integers(0, 2), min_size=1, max_size=3)),
    min_size=1,
    max_size=40,
)
_runs = itertools.count()


def _never(context: None, result: Decision | Exception) -> None:
    raise AssertionError("the memory store answers at once")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rules=rules, steps=steps)
def test_memory_and_lua_agree(raw: Redis, rules: list[tuple[int, int, bool]], steps: list) -> None:
    run = next(_runs)
    clock = FakeClock(start=START_S)
    memory = MemoryStore(clock)
    now = START_S
    for delay, chosen in steps:
        clock.advance(delay)
        now += delay
        picked = sorted({i % len(rules) for i in chosen})
        checks = [
            LimitCheck(f"r{i}", f"run{run}", rules[i][0], float(rules[i][1]), rules[i][2])
            for i in picked
        ]
        expected = memory.decide(checks, _never, None)
        keys = window_keys("eq:", checks)
        args = [arg for check in checks for arg in rule_args(check)]
        reply = raw.eval(SLIDING_WINDOW.text, len(keys), *keys, *args, now * MICROS)
        got = decision_from_reply(checks, reply)
        assert got.allowed == expected.allowed
        assert got.blocking_rule == expected.blocking_rule
        assert got.retry_after_s == expected.retry_after_s
        assert [(r.allowed, r.remaining, r.reset_after_s) for r in got.results] == [
            (r.allowed, r.remaining, r.reset_after_s) for r in expected.results
        ]
