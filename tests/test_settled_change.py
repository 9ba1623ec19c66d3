"""`SettledChange`: a watched file is taken once its change held still for one poll."""

from __future__ import annotations

from proxy.periodic import SettledChange


def test_a_change_is_taken_on_the_second_poll_that_sees_it() -> None:
    change = SettledChange(1)
    assert not change.settled(1)
    assert not change.settled(2)  # still being written, perhaps
    assert change.settled(2)
    assert not change.settled(2)  # taken once


def test_a_value_that_keeps_changing_is_not_taken() -> None:
    change = SettledChange(1)
    assert not change.settled(2)
    assert not change.settled(3)
    assert change.settled(3)


def test_a_missing_file_is_never_taken_and_reset_takes_a_value_as_it_is() -> None:
    change = SettledChange(1)
    assert not change.settled(None, present=False)
    assert not change.settled(None, present=False)
    change.reset(5)
    assert not change.settled(5)
