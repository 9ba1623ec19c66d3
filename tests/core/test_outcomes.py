import pytest

from proxy.core.outcomes import (
    CONNECT_FAILURE,
    STATUS,
    SUCCESS,
    TIMEOUT,
    OutcomeMatcher,
    attempt_label,
)


def test_explicit_statuses_match_only_those_codes():
    matcher = OutcomeMatcher.compile(("connect-failure", "timeout", "502", "503", "504"))
    assert [code for code in range(100, 600) if matcher.matches(STATUS, code)] == [502, 503, 504]
    assert matcher.matches(CONNECT_FAILURE)
    assert matcher.matches(TIMEOUT)
    assert not matcher.matches(SUCCESS)


def test_status_classes_cover_their_hundred():
    matcher = OutcomeMatcher.compile(("5xx", "4xx"))
    assert matcher.matches(STATUS, 400)
    assert matcher.matches(STATUS, 499)
    assert matcher.matches(STATUS, 599)
    assert not matcher.matches(STATUS, 399)
    assert not matcher.matches(STATUS, 200)
    assert not matcher.matches(TIMEOUT)
    assert not matcher.matches(CONNECT_FAILURE)


def test_status_is_only_read_for_a_response():
    matcher = OutcomeMatcher.compile(("503",))
    assert not matcher.matches(SUCCESS, 503)
    assert not matcher.matches(TIMEOUT, 503)


def test_triggers_are_case_and_space_tolerant():
    matcher = OutcomeMatcher.compile((" Connect-Failure ", "5XX"))
    assert matcher.matches(CONNECT_FAILURE)
    assert matcher.matches(STATUS, 500)


@pytest.mark.parametrize("trigger", ["6xx", "99", "600", "retry", "", "\uff15\uff10\uff13"])
def test_unknown_triggers_are_refused(trigger):
    with pytest.raises(ValueError, match="unknown outcome"):
        OutcomeMatcher.compile((trigger,))


def test_kind_values_are_the_retry_reason_labels():
    assert [CONNECT_FAILURE.value, TIMEOUT.value, STATUS.value] == [
        "connect-failure",
        "timeout",
        "status",
    ]


@pytest.mark.parametrize(
    ("kind", "failed", "label"),
    [
        (CONNECT_FAILURE, True, "connect_failure"),
        (TIMEOUT, True, "timeout"),
        (STATUS, True, "failure"),
        (STATUS, False, "success"),
        (SUCCESS, False, "success"),
    ],
)
def test_attempt_labels(kind, failed, label):
    assert attempt_label(kind, failed) == label
