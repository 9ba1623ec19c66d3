"""What one attempt at an upstream came to, and whether a policy list names it.

The policy writes triggers as text (`connect-failure`, `timeout`, `5xx`, `4xx`, `503`);
they are compiled once into an `OutcomeMatcher` so the per-attempt question is a set
lookup, not a parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class OutcomeKind(StrEnum):
    """The kind of an attempt's end. The values double as `retries_total{reason}` labels."""

    SUCCESS = "success"
    """A call with no status to judge (e.g. a Redis command) that worked."""
    CONNECT_FAILURE = "connect-failure"
    """Refused or reset before the request was sent: nothing reached the upstream."""
    TIMEOUT = "timeout"
    """No response head within the attempt's timeout."""
    STATUS = "status"
    """A response arrived; its status code says the rest."""


SUCCESS = OutcomeKind.SUCCESS
CONNECT_FAILURE = OutcomeKind.CONNECT_FAILURE
TIMEOUT = OutcomeKind.TIMEOUT
STATUS = OutcomeKind.STATUS

_STATUS_CLASSES = {"4xx": range(400, 500), "5xx": range(500, 600)}

_ATTEMPT_LABELS = {
    CONNECT_FAILURE: "connect_failure",
    TIMEOUT: "timeout",
}


def attempt_label(kind: OutcomeKind, failed: bool) -> str:
    """The `upstream_attempts_total{outcome}` label: a named failure kind, else by `failed`."""
    label = _ATTEMPT_LABELS.get(kind)
    if label is not None:
        return label
    return "failure" if failed else "success"


@dataclass(frozen=True, slots=True)
class OutcomeMatcher:
    """A compiled `retry_on` / `failure_on` list."""

    kinds: frozenset[OutcomeKind]
    statuses: frozenset[int]

    @classmethod
    def compile(cls, triggers: Iterable[str]) -> OutcomeMatcher:
        """Build from policy text; an unknown trigger is a ValueError (the loader's bug)."""
        kinds: set[OutcomeKind] = set()
        statuses: set[int] = set()
        for trigger in triggers:
            text = trigger.strip().lower()
            if text in (CONNECT_FAILURE, TIMEOUT):
                kinds.add(OutcomeKind(text))
            elif text in _STATUS_CLASSES:
                statuses.update(_STATUS_CLASSES[text])
            elif text.isascii() and text.isdigit() and 100 <= int(text) <= 599:
                statuses.add(int(text))
            else:
                raise ValueError(f"unknown outcome {trigger!r}")
        return cls(frozenset(kinds), frozenset(statuses))

    def matches(self, kind: OutcomeKind, status: int = 0) -> bool:
        """Whether the list names this outcome; `status` is read only for `STATUS`."""
        if kind is STATUS:
            return status in self.statuses
        return kind in self.kinds
