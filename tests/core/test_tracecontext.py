"""W3C trace context: what is kept, what is replaced, what travels on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.tracecontext import (
    new_span_id,
    new_trace_id,
    parse_traceparent,
    sample,
    traceparent,
    valid_tracestate,
)

VALID = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_read() -> None:
    parent = parse_traceparent(VALID)
    assert parent is not None
    assert parent.trace_id == b"4bf92f3577b34da6a3ce929d0e0e4736"
    assert parent.parent_id == b"00f067aa0ba902b7"
    assert parent.sampled


def test_the_unsampled_flag_is_read() -> None:
    parent = parse_traceparent(VALID[:-2] + b"00")
    assert parent is not None and not parent.sampled


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(VALID.upper(), id="upper-case"),
        pytest.param(b"ff" + VALID[2:], id="version-ff"),
        pytest.param(b"00-" + b"0" * 32 + VALID[35:], id="zero-trace-id"),
        pytest.param(VALID[:36] + b"0" * 16 + VALID[52:], id="zero-parent-id"),
        pytest.param(VALID[:-1], id="short"),
        pytest.param(VALID + b"-", id="version-00-too-long"),
        pytest.param(VALID.replace(b"-", b"_"), id="wrong-separators"),
        pytest.param(b"0g" + VALID[2:], id="non-hex-version"),
        pytest.param(VALID[:10] + b"z" + VALID[11:], id="non-hex-trace-id"),
        pytest.param(b"x" * 10_000, id="10kB-of-junk"),
        pytest.param(b"", id="empty"),
    ],
)
def test_a_malformed_traceparent_is_refused(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_by_its_first_fields() -> None:
    assert parse_traceparent(b"01" + VALID[2:]) is not None
    assert parse_traceparent(b"01" + VALID[2:] + b"-what-comes-next") is not None
    assert parse_traceparent(b"01" + VALID[2:] + b"x") is None


@given(
    trace=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    span=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    flags=st.integers(min_value=0, max_value=255),
)
def test_what_the_sidecar_writes_it_reads_back(trace: str, span: str, flags: int) -> None:
    value = traceparent(trace.encode(), span.encode(), flags)
    parsed = parse_traceparent(value)
    if set(trace) == {"0"} or set(span) == {"0"}:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.trace_id, parsed.parent_id, parsed.flags) == (
            trace.encode(),
            span.encode(),
            flags,
        )


@given(st.binary(max_size=80))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    parsed = parse_traceparent(value)
    if parsed is not None:
        assert len(parsed.trace_id) == 32 and len(parsed.parent_id) == 16


def test_new_ids_are_lower_hex_of_the_right_length_and_valid() -> None:
    for _ in range(100):
        trace_id, span_id = new_trace_id(), new_span_id()
        assert parse_traceparent(traceparent(trace_id, span_id, 1)) is not None
        assert trace_id == trace_id.lower() and len(trace_id) == 32 and len(span_id) == 16
    assert len({new_span_id() for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "value",
    [
        b"congo=t61rcWkgMzE",
        b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        b"rojo=1, ,congo=2",
        b"fw529a3039@dt=abc",
        b"a-b_c*d/e=x y",
    ],
)
def test_valid_tracestate(value: bytes) -> None:
    assert valid_tracestate(value)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"Rojo=1", id="upper-case-key"),
        pytest.param(b"rojo=1,rojo=2", id="duplicate-key"),
        pytest.param(b"rojo", id="no-equals"),
        pytest.param(b"rojo=a,b", id="member-without-value"),
        pytest.param(b"rojo=a=b", id="equals-in-value"),
        pytest.param(b"rojo=", id="empty-value"),
        pytest.param(b",".join(b"k%d=v" % i for i in range(33)), id="33-members"),
        pytest.param(b"k=" + b"v" * 600, id="too-long"),
        pytest.param(b"j" * 10_000, id="10kB-of-junk"),
        pytest.param(b"", id="empty"),
    ],
)
def test_invalid_tracestate(value: bytes) -> None:
    assert not valid_tracestate(value)


def test_sampling_at_the_bounds() -> None:
    assert all(sample(1.0) for _ in range(100))
    assert not any(sample(0.0) for _ in range(100))
    share = sum(sample(0.5) for _ in range(4000)) / 4000
    assert 0.4 < share < 0.6
