"""The verdict cache: bounded, least recently used evicted first, never serves a stale entry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.token_cache import TokenCache


def test_missing_key_is_none() -> None:
    assert TokenCache[str](4).get(b"k", now=0.0) is None


def test_entry_is_served_until_its_deadline_and_dropped_at_it() -> None:
    cache = TokenCache[str](4)
    cache.put(b"k", "v", valid_until=10.0)
    assert cache.get(b"k", now=9.999) == "v"
    assert cache.get(b"k", now=10.0) is None
    assert len(cache) == 0


def test_least_recently_used_is_evicted_first() -> None:
    cache = TokenCache[str](2)
    cache.put(b"a", "A", valid_until=100.0)
    cache.put(b"b", "B", valid_until=100.0)
    assert cache.get(b"a", now=0.0) == "A"  # a is now the most recent
    cache.put(b"c", "C", valid_until=100.0)
    assert len(cache) == 2
    assert cache.get(b"b", now=0.0) is None
    assert cache.get(b"a", now=0.0) == "A"
    assert cache.get(b"c", now=0.0) == "C"


def test_put_on_an_existing_key_replaces_it_without_growing() -> None:
    cache = TokenCache[str](2)
    cache.put(b"a", "A", valid_until=100.0)
    cache.put(b"b", "B", valid_until=100.0)
    cache.put(b"a", "A2", valid_until=200.0)
    cache.put(b"c", "C", valid_until=100.0)
    assert cache.get(b"a", now=150.0) == "A2"
    assert cache.get(b"b", now=0.0) is None


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenCache[str](0)


_KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _KEYS, st.integers(0, 20)),
        st.tuples(st.just("get"), _KEYS, st.just(0)),
        st.tuples(st.just("tick"), _KEYS, st.integers(0, 5)),
    ),
    max_size=60,
)


@given(size=st.integers(1, 4), ops=_OPS)
def test_behaves_like_a_plain_lru_model(size: int, ops: list[tuple[str, bytes, int]]) -> None:
    """Same answers as an obviously right (and slow) list model, and never over the bound."""
    cache = TokenCache[int](size)
    model: list[tuple[bytes, int, float]] = []  # least recent first
    now = 0.0
    for op, key, number in ops:
        if op == "tick":
            now += number
            continue
        found = next((entry for entry in model if entry[0] == key), None)
        if found is not None:
            model.remove(found)
        if op == "put":
            model.append((key, number, now + number))
            del model[:-size]
            cache.put(key, number, now + number)
        else:
            expected = None
            if found is not None and now < found[2]:
                model.append(found)
                expected = found[1]
            assert cache.get(key, now) == expected
        assert len(cache) <= size
