"""`SeenKeys`: event keys remembered for an hour, in bounded memory (injected clock)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.clock import FakeClock
from proxy.hub.seen_keys import SeenKeys


def test_a_key_is_remembered_with_its_first_id_until_the_ttl() -> None:
    clock = FakeClock()
    seen = SeenKeys(clock, ttl=3600.0)
    assert seen.first_id("k") is None
    seen.remember("k", 7)
    seen.remember("k", 9)  # a key keeps the id it was first published under
    clock.advance(3599.0)
    assert seen.first_id("k") == 7
    clock.advance(1.0)
    assert seen.first_id("k") is None
    assert len(seen) == 0


def test_past_capacity_the_oldest_key_is_forgotten_first() -> None:
    seen = SeenKeys(FakeClock(), capacity=3)
    for n in range(5):
        seen.remember(f"k{n}", n)
    assert len(seen) == 3
    assert [seen.first_id(f"k{n}") for n in range(5)] == [None, None, 2, 3, 4]


@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.floats(min_value=0, max_value=50)),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=5),
)
def test_matches_a_plain_model(steps: list[tuple[str, float]], capacity: int) -> None:
    """Against a dict of every key ever seen: same answers within the ttl, never over capacity."""
    clock = FakeClock()
    ttl = 100.0
    seen = SeenKeys(clock, ttl=ttl, capacity=capacity)
    model: dict[str, tuple[float, int]] = {}  # key -> (first seen, id), expired ones dropped
    order: list[str] = []
    for event_id, (key, pause) in enumerate(steps):
        clock.advance(pause)
        now = clock.monotonic()
        for old in [k for k, (at, _) in model.items() if now - at >= ttl]:
            del model[old]
            order.remove(old)
        answer = seen.first_id(key)
        if answer is None:
            seen.remember(key, event_id)
            model[key] = (now, event_id)
            order.append(key)
            while len(order) > capacity:
                del model[order.pop(0)]
        else:
            assert model[key][1] == answer
        assert len(seen) <= capacity
        assert all(seen.first_id(k) == model[k][1] for k in model)
