"""Resume planning: what a client that saw up to N gets, and when it is told of a gap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.hub.events import Event, make_event
from proxy.hub.history import History, plan_replay


def event(event_id: int) -> Event:
    return make_event(event_id, "t", b'{"type":"t"}')


def filled(size: int, count: int) -> History:
    history = History(size)
    for event_id in range(1, count + 1):
        history.append(event(event_id))
    return history


def test_nothing_missed() -> None:
    replay = filled(10, 5).replay(5)
    assert replay.events == () and replay.gap_oldest is None


def test_missed_events_in_order_without_gap() -> None:
    replay = filled(10, 8).replay(3)
    assert [e.id for e in replay.events] == [4, 5, 6, 7, 8]
    assert replay.gap_oldest is None


def test_gap_when_history_no_longer_holds_them() -> None:
    replay = filled(3, 8).replay(2)
    assert [e.id for e in replay.events] == [6, 7, 8]
    assert replay.gap_oldest == 6


def test_the_oldest_held_being_next_is_no_gap() -> None:
    assert filled(3, 8).replay(5).gap_oldest is None


def test_empty_history_still_reports_what_was_missed() -> None:
    replay = filled(0, 8).replay(2)
    assert replay.events == () and replay.gap_oldest == 9
    assert filled(0, 8).replay(8).gap_oldest is None


def test_resize_keeps_the_newest() -> None:
    history = filled(10, 10)
    history.resize(4)
    assert [e.id for e in history.replay(0).events] == [7, 8, 9, 10]
    assert len(history) == 4


@given(st.integers(0, 20), st.integers(0, 40), st.integers(0, 45))
def test_replay_is_exactly_the_held_tail(size: int, count: int, last_id: int) -> None:
    replay = filled(size, count).replay(last_id)
    held = list(range(max(1, count - size + 1), count + 1))
    assert [e.id for e in replay.events] == [i for i in held if i > last_id]
    missed_unheld = [i for i in range(last_id + 1, count + 1) if i not in held]
    assert (replay.gap_oldest is not None) == bool(missed_unheld)


def test_plan_replay_uses_the_first_held_event() -> None:
    assert plan_replay(0, [event(1), event(2)], 2).gap_oldest is None
    assert plan_replay(0, [event(4)], 4).gap_oldest == 4
