"""W3C Trace Context (traceparent / tracestate): parse, validate, continue or start a trace.

Pure bytes in, bytes out. The rules are those of the W3C Trace Context recommendation:
- `traceparent` is `VV-TRACEID32-PARENTID16-FF`, lower-case hex; version `ff` is invalid;
  all-zero ids are invalid; version `00` is exactly 55 bytes, a later version may carry
  more after a `-` (its first four fields are read as version `00`'s);
- `tracestate` is at most 32 `key=value` members (keys lower-case, no duplicates); it only
  travels with a valid `traceparent`, and an invalid one is dropped whole, never repaired.
A malformed header is never an error for the request: the sidecar starts a new trace.
"""

from __future__ import annotations

import os
import random
import re
from typing import Final

_HEX: Final = b"0123456789abcdef"
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16
_FLAGS: Final = tuple(b"%02x" % n for n in range(256))
"""Trace flags as they are written (a lookup: formatting an int costs a call)."""
TRACESTATE_MAX_BYTES: Final = 512
"""Longer `tracestate` values are dropped (the recommendation asks to propagate 512)."""
TRACESTATE_MAX_MEMBERS: Final = 32
_random: Final = random.random
"""Bound once: compiled, `random.random()` looks the name up in the module on every call."""

_KEY = rb"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = rb"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER: Final = re.compile(rb"[ \t]*(" + _KEY + rb")=" + _VALUE + rb"[ \t]*")


class TraceParent:
    """A valid incoming `traceparent`: the trace to continue and the caller's span."""

    __slots__ = ("flags", "parent_id", "trace_id")

    def __init__(self, trace_id: bytes, parent_id: bytes, flags: int) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)


def _is_hex(value: bytes) -> bool:
    """Lower-case hex only: stripping every hex digit from both ends leaves nothing."""
    return not value.strip(_HEX)


def parse_traceparent(value: bytes) -> TraceParent | None:
    """The trace a `traceparent` header names, or None when it is malformed."""
    size = len(value)
    if size < 55 or value[2] != 45 or value[35] != 45 or value[52] != 45:  # 45 is "-"
        return None
    version = value[0:2]
    if version == b"ff" or not _is_hex(version):
        return None
    if version == b"00":
        if size != 55:
            return None
    elif size > 55 and value[55] != 45:
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    flags = value[53:55]
    if not (_is_hex(trace_id) and _is_hex(parent_id) and _is_hex(flags)):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16))


def valid_tracestate(value: bytes) -> bool:
    """True when a (comma-joined) `tracestate` value follows the recommendation's grammar."""
    if len(value) > TRACESTATE_MAX_BYTES:
        return False
    keys: set[bytes] = set()
    for member in value.split(b","):
        if not member.strip(b" \t"):
            continue  # empty members are allowed and ignored
        match = _MEMBER.fullmatch(member)
        if match is None:
            return False
        key = match.group(1)
        if key in keys:
            return False
        keys.add(key)
    return 0 < len(keys) <= TRACESTATE_MAX_MEMBERS


class _RandomHex:
    """Random lower-case hex digits, cut from one `os.urandom` call per 1,024 spans.

    A per-id `os.urandom` would be a system call per request, and `random.getrandbits` plus
    formatting costs more than the request's own bookkeeping; a slice of a pool costs one
    copy. A forked worker starts a pool of its own (`os.register_at_fork`).
    """

    __slots__ = ("at", "pool")

    def __init__(self) -> None:
        self.pool = b""
        self.at = 0

    def reset(self) -> None:
        self.pool = b""
        self.at = 0

    def take(self, digits: int) -> bytes:
        at = self.at
        if at + digits > len(self.pool):
            self.pool = os.urandom(8192).hex().encode()
            at = 0
        self.at = at + digits
        return self.pool[at : at + digits]


_RANDOM_HEX: Final = _RandomHex()
os.register_at_fork(after_in_child=_RANDOM_HEX.reset)


def new_trace_id() -> bytes:
    """32 random lower-case hex digits, never all zero."""
    trace_id = _RANDOM_HEX.take(32)
    return trace_id if trace_id != _ZERO_TRACE else new_trace_id()


def new_span_id() -> bytes:
    """16 random lower-case hex digits, never all zero."""
    span_id = _RANDOM_HEX.take(16)
    return span_id if span_id != _ZERO_SPAN else new_span_id()


def traceparent(trace_id: bytes, span_id: bytes, flags: int) -> bytes:
    """The `traceparent` value sent upstream (always version 00)."""
    return b"00-%s-%s-%s" % (trace_id, span_id, _FLAGS[flags & 0xFF])


def sample(ratio: float) -> bool:
    """Whether a new trace is sampled at `ratio` (0 never, 1 always)."""
    return ratio >= 1.0 or (ratio > 0.0 and _random() < ratio)


class RequestTrace:
    """One request's place in a trace: continued from a valid `traceparent`, else new.

    `span_id` is the sidecar's server span; the upstream receives `traceparent` with the
    current attempt's client span id when the request is recorded, else `span_id`.
    """

    __slots__ = ("flags", "parent_id", "recorded", "span_id", "state", "trace_id")

    def __init__(
        self, incoming: bytes | None, state: bytes | None, ratio: float, exporting: bool
    ) -> None:
        parent = parse_traceparent(incoming) if incoming is not None else None
        if parent is None:
            self.trace_id = new_trace_id()
            self.parent_id: bytes | None = None
            self.flags = 1 if sample(ratio) else 0
            self.state: bytes | None = None
        else:
            self.trace_id = parent.trace_id
            self.parent_id = parent.parent_id
            self.flags = parent.flags
            self.state = state if state is not None and valid_tracestate(state) else None
        self.span_id = new_span_id()
        self.recorded = exporting and bool(self.flags & 1)
        """Sampled and exported: a server span and a client span per attempt are kept."""

    def header_lines(self, parent_id: bytes) -> bytes:
        """The `traceparent` (and `tracestate`) lines for the upstream, naming `parent_id`."""
        line = b"traceparent: 00-%s-%s-%s\r\n" % (self.trace_id, parent_id, _FLAGS[self.flags])
        if self.state is not None:
            return line + b"tracestate: %s\r\n" % self.state
        return line
