import pytest

from policies.model import RetryBudgetPolicy
from proxy.clock import FakeClock
from proxy.core.budget import RetryBudget, RollingCounter


def spend_all(budget: RetryBudget, limit: int = 10_000) -> int:
    spent = 0
    while spent < limit and budget.try_spend():
        spent += 1
    return spent


def test_ratio_of_the_requests_in_the_window():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, min_per_second=0, window=10), FakeClock())
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 20
    assert budget.retries_in_window() == 20


def test_floor_applies_without_requests():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, min_per_second=2, window=10), FakeClock())
    assert spend_all(budget) == 20


def test_ratio_and_floor_add_up():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, min_per_second=1, window=10), FakeClock())
    for _ in range(50):
        budget.record_request()
    assert spend_all(budget) == 10 + 10


def test_fractional_allowance_is_not_overspent():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.25, min_per_second=0, window=10), FakeClock())
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 2


def test_rounding_does_not_cost_a_retry():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.57, min_per_second=0, window=10), FakeClock())
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 57


def test_retries_are_not_counted_as_requests():
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.5, min_per_second=0, window=10), FakeClock())
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 5
    assert budget.requests_in_window() == 10


def test_a_refused_retry_uses_no_budget():
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.5, min_per_second=0, window=10), clock)
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()
    assert not budget.try_spend()
    assert not budget.try_spend()
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()
    assert budget.retries_in_window() == 2


def test_the_window_forgets_old_requests_and_retries():
    clock = FakeClock(start=1000.0)
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, min_per_second=0, window=10), clock)
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 20
    clock.advance(10.0)
    assert budget.requests_in_window() == 0
    assert budget.retries_in_window() == 0
    assert not budget.try_spend()
    for _ in range(10):
        budget.record_request()
    assert spend_all(budget) == 2


def test_the_window_slides_bucket_by_bucket():
    clock = FakeClock(start=1000.0)
    budget = RetryBudget(RetryBudgetPolicy(ratio=1, min_per_second=0, window=10), clock)
    for _ in range(5):
        budget.record_request()
    clock.advance(5.0)
    for _ in range(5):
        budget.record_request()
    clock.advance(4.5)
    assert budget.requests_in_window() == 10
    clock.advance(0.5)
    assert budget.requests_in_window() == 5
    clock.advance(5.0)
    assert budget.requests_in_window() == 0


def test_reconfigure_keeps_counts_unless_the_window_changes():
    clock = FakeClock()
    budget = RetryBudget(RetryBudgetPolicy(ratio=0.2, min_per_second=0, window=10), clock)
    for _ in range(10):
        budget.record_request()
    budget.reconfigure(RetryBudgetPolicy(ratio=0.5, min_per_second=0, window=10))
    assert spend_all(budget) == 5
    budget.reconfigure(RetryBudgetPolicy(ratio=0.5, min_per_second=0, window=20))
    assert budget.requests_in_window() == 0
    assert budget.retries_in_window() == 0


@pytest.mark.parametrize(
    ("added", "read", "kept"),
    [
        (1000.0, 1009.99, True),
        (1000.0, 1010.0, False),
        (1000.99, 1009.99, True),
        (1000.99, 1010.0, False),
        (1000.0, 5000.0, False),
    ],
)
def test_rolling_counter_keeps_an_event_for_nine_to_ten_tenths_of_the_window(added, read, kept):
    counter = RollingCounter(10.0, now=1000.0)
    counter.add(added, 3)
    assert counter.total(read) == (3 if kept else 0)


def test_rolling_counter_needs_a_window():
    with pytest.raises(ValueError):
        RollingCounter(0.0, now=0.0)
