"""The shared breakers without processes: worker-side batches into the supervisor's board,
and the board's states back into the workers' local breakers."""

from __future__ import annotations

import socket

from hypothesis import given
from hypothesis import strategies as st

from policies.load import load_policy_text
from proxy.clock import FakeClock
from proxy.core.breaker import CircuitBreaker
from proxy.metrics import Metrics
from proxy.pipeline.state import State
from proxy.workers.board import BreakerBoard, outcome_sequence
from proxy.workers.link import WorkerLink

POLICY = load_policy_text(
    """
version: 1
storage: { backend: redis }
server: { workers: 2 }
upstreams:
  inventory:
    url: "http://127.0.0.1:9"
    circuit_breaker: { failure_threshold: 3, recovery_timeout: 10s, success_threshold: 1 }
routes:
  - { path_prefix: /, upstream: inventory }
""",
    "test.yaml",
).policy
BREAKER = POLICY.upstreams["inventory"].circuit_breaker


class FakeWorker:
    """A worker's local breaker and the link that reports it (never connected)."""

    def __init__(self, clock: FakeClock) -> None:
        self.breaker = CircuitBreaker("inventory", BREAKER, clock)
        state = State(metrics=Metrics())
        state.breakers["inventory"] = self.breaker
        self.sock, self._other = socket.socketpair()
        self.link = WorkerLink(state, self.sock, lambda: None)

    def call(self, failed: bool) -> bool:
        permit = self.breaker.allow()
        if not permit.allowed:
            return False
        if failed:
            self.breaker.record_failure(permit)
        else:
            self.breaker.record_success(permit)
        return True

    def report(self, board: BreakerBoard) -> None:
        moved, _ = self.link.deltas()
        board.apply(moved)

    def close(self) -> None:
        self.sock.close()
        self._other.close()


def test_three_failures_spread_over_two_workers_open_it_everywhere() -> None:
    clock = FakeClock()
    board = BreakerBoard(POLICY, clock)
    a, b = FakeWorker(clock), FakeWorker(clock)
    a.call(True)
    a.call(True)
    b.call(True)
    for worker in (a, b):
        assert worker.breaker.state.value == "closed"  # neither saw three
        worker.report(board)
    assert board.breakers["inventory"].state.value == "open"
    assert board.changed
    for worker in (a, b):
        worker.link.adopt(board.states())
        assert worker.breaker.state.value == "open"
        assert not worker.call(False)
    stats = board.stats("inventory")
    assert (stats["total_failures"], stats["consecutive_failures"]) == (3, 3)
    assert board.next_tick(0.02, 0.25) == 0.25
    clock.advance(9.9)
    assert abs(board.next_tick(0.02, 0.25) - 0.1) < 1e-6  # wakes when half_open is due
    clock.advance(0.1)
    board.tick()
    assert board.breakers["inventory"].state.value == "half_open"
    for worker in (a, b):
        worker.close()


def test_a_restarted_worker_adopts_the_state_and_totals_stay() -> None:
    clock = FakeClock()
    board = BreakerBoard(POLICY, clock)
    a = FakeWorker(clock)
    for _ in range(5):
        a.call(False)
    a.report(board)
    board.act("inventory", "force-open")
    a.close()
    fresh = FakeWorker(clock)
    fresh.link.adopt(board.states())
    assert fresh.breaker.state.value == "forced_open"
    assert not fresh.call(False)
    fresh.report(board)
    stats = board.stats("inventory")
    assert (stats["total_successes"], stats["total_rejections"]) == (5, 1)
    board.act("inventory", "reset")
    fresh.link.adopt(board.states())
    assert fresh.call(False)
    fresh.close()


@given(st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60), st.integers(1, 7))
def test_totals_are_the_sum_of_every_workers_calls(
    calls: list[tuple[bool, bool]], every: int
) -> None:
    """Whatever the interleaving and batching, no call is lost or counted twice."""
    clock = FakeClock()
    board = BreakerBoard(POLICY, clock)
    workers = [FakeWorker(clock), FakeWorker(clock)]
    for i, (on_b, failed) in enumerate(calls):
        workers[on_b].call(failed)
        if i % every == 0:
            workers[on_b].report(board)
            workers[on_b].link.adopt(board.states())
    for worker in workers:
        worker.report(board)
    stats = board.stats("inventory")
    for field in ("total_successes", "total_failures", "total_rejections"):
        assert stats[field] == sum(w.breaker.stats()[field] for w in workers)
    for worker in workers:
        worker.close()


@given(st.integers(0, 20), st.integers(0, 20), st.integers(0, 30))
def test_a_batch_keeps_its_counts_and_ends_with_its_tail(s: int, f: int, tail: int) -> None:
    sequence = outcome_sequence(s, f, tail)
    assert (sequence.count(False), sequence.count(True)) == (s, f)
    run = len(sequence) - (max(i for i, x in enumerate(sequence) if not x) + 1 if s else 0)
    assert run == (min(tail, f) if s else f)
