"""An upstream response's head, read from the raw bytes llhttp has just accepted.

Why not httptools' `on_header` callback: it costs a Python call and two new bytes objects
per header, about a tenth of the sidecar's CPU per forwarded request. llhttp (strict, as
httptools sets it up) has already validated the head when `on_headers_complete` runs: every
line ends with CRLF, no folded lines, a token before each colon. So the header lines are
passed back as slices of the raw bytes between the few the sidecar drops, and a line is
looked at only when its name could be one of those.

The names are compared byte by byte, case folded with `| 0x20`: compiled, a byte index is a
few instructions where a bytes method call (`lower`, `partition`) costs hundreds.
"""

from __future__ import annotations

from typing import Final

from proxy.core.headers import HOP_BY_HOP

CONTENT_LENGTH: Final = b"content-length"
TRANSFER_ENCODING: Final = b"transfer-encoding"
CONNECTION: Final = b"connection"
RETRY_AFTER: Final = b"retry-after"
# Never passed back to the client: hop-by-hop, framing (re-made by the server), and the
# request id (the client gets the one the upstream received).
DROP_ON_RESPONSE: Final = HOP_BY_HOP | {CONTENT_LENGTH, b"x-request-id"}
_NOT_IN_UPGRADE: Final = frozenset({CONTENT_LENGTH, TRANSFER_ENCODING, b"x-request-id"})
_LOOKED_AT: Final = DROP_ON_RESPONSE | {RETRY_AFTER}
_MAX_NAME: Final = max(len(name) for name in _LOOKED_AT)
_BY_LENGTH: Final = tuple(
    tuple(name for name in sorted(_LOOKED_AT) if len(name) == length)
    for length in range(_MAX_NAME + 1)
)
_INITIALS: Final = bytes(
    1 if bytes([c | 0x20]) in {name[:1] for name in _LOOKED_AT} else 0 for c in range(256)
)
"""1 for a byte (either case) that starts a name looked at: other lines are passed unread."""
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b""})
_SPACE: Final = 32
_TAB: Final = 9
_COLON: Final = 58


class ResponseHead:
    """An upstream response's head.

    No `__slots__`: fields most responses leave alone are class-level defaults. The headers
    are kept as rendered bytes, as they go back to the client.
    """

    status = 0
    keep_alive = False
    content_length: int | None = None
    chunked = False
    retry_after: bytes | None = None
    hop_names: frozenset[bytes] = frozenset()
    """Extra hop-by-hop names listed in `Connection`: `lines` must be filtered again."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        """Header lines to pass back (`Name: value\\r\\n`, original case), in runs of one or
        more lines: DROP_ON_RESPONSE removed."""

    def read_headers(self, head: bytes) -> None:
        """Take the header lines of `head`: a status line and header lines, each ending
        with CRLF (the blank line after them left out)."""
        lines = head.split(b"\r\n")
        pos = len(lines[0]) + 2  # the status line
        keep_from = pos
        for i in range(1, len(lines) - 1):
            line = lines[i]
            after = pos + len(line) + 2
            name = _looked_at(line) if _INITIALS[line[0]] else None
            if name is not None:
                if name == RETRY_AFTER:
                    self.retry_after = _value(line, len(name) + 1)
                else:
                    if keep_from < pos:
                        self.lines.append(head[keep_from:pos])
                    keep_from = after
                    self._note_dropped(name, line)
            pos = after
        if keep_from < pos:
            self.lines.append(head[keep_from:pos])

    def read_upgrade_headers(self, head: bytes) -> None:
        """Take the header lines of a 101 head (as `read_headers`): `Upgrade` and
        `Connection` are kept, being the answer itself; framing and the request id are not."""
        kept = [
            line + b"\r\n"
            for line in head.split(b"\r\n")[1:-1]
            if line.split(b":", 1)[0].strip().lower() not in _NOT_IN_UPGRADE
        ]
        self.lines.append(b"".join(kept))

    def _note_dropped(self, name: bytes, line: bytes) -> None:
        """A header the client never gets as it is: framing, hop-by-hop."""
        if name == CONTENT_LENGTH:
            self.content_length = _number(line, len(name) + 1)
        elif name == TRANSFER_ENCODING:
            # find, not `b"chunked" in`: a bytes operand of `in` costs a formatted TypeError
            coding = _value(line, len(name) + 1).lower()
            self.chunked = self.chunked or coding.find(b"chunked") >= 0
        elif name == CONNECTION:
            start = len(name) + 1
            if _value_is(line, start, b"keep-alive") or _value_is(line, start, b"close"):
                return
            value = _value(line, start).lower()
            if value not in _PLAIN_CONNECTION:
                tokens = {t.strip() for t in value.split(b",")}
                self.hop_names = self.hop_names | (tokens - _PLAIN_CONNECTION)

    def passed_lines(self) -> list[bytes]:
        """`lines` minus the headers `Connection` named, as a list the caller may extend."""
        if not self.hop_names:
            return self.lines
        single = b"".join(self.lines).split(b"\r\n")[:-1]
        return [
            line + b"\r\n"
            for line in single
            if line.split(b":", 1)[0].lower() not in self.hop_names
        ]


def _looked_at(line: bytes) -> bytes | None:
    """The name of `line` (lower case) if it is one the sidecar looks at, else None."""
    limit = min(len(line), _MAX_NAME + 1)
    colon = 1
    while colon < limit and line[colon] != _COLON:
        colon += 1
    if colon == limit:
        return None
    for name in _BY_LENGTH[colon]:
        if _letters_at(line, 0, name):
            return name
    return None


def _letters_at(line: bytes, start: int, word: bytes) -> bool:
    """Whether `line` has `word` (lower case letters and '-') at `start`, in any case."""
    if len(line) - start < len(word):
        return False
    for i in range(len(word)):  # noqa: SIM110 - a loop compiles tighter than all(...)
        if (line[start + i] | 0x20) != word[i]:
            return False
    return True


def _value_is(line: bytes, start: int, word: bytes) -> bool:
    """Whether the field value from `start` is `word` (lower case letters and '-') in any
    case, between optional whitespace: the common answers checked without new objects."""
    start = _skip_space(line, start)
    return _letters_at(line, start, word) and _skip_space(line, start + len(word)) == len(line)


def _skip_space(line: bytes, start: int) -> int:
    """The index of the first byte from `start` that is not a space or a tab."""
    end = len(line)
    while start < end and (line[start] == _SPACE or line[start] == _TAB):
        start += 1
    return start


def _value(line: bytes, start: int) -> bytes:
    """The field value after the colon at `start - 1`, without the whitespace around it."""
    return line[start:].strip(b" \t")


def _number(line: bytes, start: int) -> int:
    """A Content-Length value (llhttp checked it: digits between optional whitespace)."""
    start = _skip_space(line, start)
    end = len(line)
    number = 0
    while start < end and 48 <= line[start] <= 57:
        number = number * 10 + line[start] - 48
        start += 1
    return number


def head_end(raw: bytes, start: int) -> tuple[int, int]:
    """Where the complete head in `raw` (from `start`) begins and ends (its last CRLF
    included, the blank line after it not)."""
    while raw[start] == 13:  # llhttp skips empty lines before a status line
        start += 2
    return start, raw.find(b"\r\n\r\n", start) + 2
