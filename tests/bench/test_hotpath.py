"""bench/hotpath.py keeps working, and so does what it relies on: a forwarded request
without a body is answered by callbacks alone, with no event-loop turn in between."""

from __future__ import annotations

import pytest

from bench.hotpath import CASES, SECRET, run


@pytest.mark.parametrize("case", CASES)
async def test_each_case_is_answered_without_a_loop_turn(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    timings = await run(case, requests=50, repeats=2)  # raises unless every one was answered
    assert len(timings) == 2 and all(t > 0 for t in timings)
