"""The upgrade request: wsproto validates it; the hub reads its token and Origin.

Apart from the session because it is a pure function of the request bytes: it answers
101 or a refusal, and says what the request carried (a bearer credential from the
`Authorization` header or the `bearer, TOKEN` subprotocol pair, and the Origin).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.utilities import RemoteProtocolError

HEAD_END = b"\r\n\r\n"
MAX_HEAD_BYTES = 16_384
BEARER = "bearer"


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The answer to an upgrade request; `connection` is None when it was refused."""

    response: bytes
    connection: Connection | None
    credential: str | None = None
    """An `Authorization`-style value (`Bearer TOKEN`), from the header or subprotocol."""
    origin: str | None = None
    rest: bytes = b""
    """Bytes after the request head: the client's first frames, if it sent them early."""


def answer_upgrade(raw: bytes) -> Upgrade | None:
    """Accept or refuse the request whose head `raw` starts with; None: head incomplete."""
    end = raw.find(HEAD_END)
    if end < 0:
        return None
    ws = WSConnection(ConnectionType.SERVER)
    try:
        # Only the head: wsproto's server handshake drops what follows it.
        ws.receive_data(raw[: end + len(HEAD_END)])
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as error:
        return Upgrade(ws.send(error.event_hint or RejectConnection()), None)
    if request is None:
        return Upgrade(ws.send(RejectConnection()), None)
    headers = dict(request.extra_headers)
    credential = _text(headers.get(b"authorization"))
    offered = {p.lower(): p for p in request.subprotocols}
    subprotocol = offered.get(BEARER)
    if subprotocol is not None and credential is None:
        tokens = [p for p in request.subprotocols if p.lower() != BEARER]
        if tokens:
            credential = f"Bearer {tokens[0]}"
    response = ws.send(AcceptConnection(subprotocol=subprotocol))
    # Only the frame-level Connection is kept: dropping the handshake objects saves about
    # 3 KB per socket, which matters at 10,000 sockets.
    return Upgrade(
        response,
        ws.connection,
        credential,
        _text(headers.get(b"origin")),
        raw[end + len(HEAD_END) :],
    )


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None
