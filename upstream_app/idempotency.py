"""`Idempotency-Key` on POST: a repeated request gets the first answer and changes nothing.

Keys belong to the caller proven by the Bearer token (two users may use the same key) and
are kept `KEEP_S` (24 h) in the database. The request's fingerprint is its method, path
and body: the same key with anything else is 422 `idempotency_key_reused`. Requests with
the same key are serialised, so concurrent duplicates never both run the handler.

Answers the handler gave (any status below 500) are stored. The handler's own write
transaction also records a claim for the key (`db.BEFORE_COMMIT`), so the work and the
claim commit together: should the process die before the answer is stored, a retry finds
the claim and gets 409 `idempotency_key_answer_lost`, never a second sale. A 5xx with no
claim means the work rolled back, so a retry runs it again. This middleware sits
inside the chaos middleware: a failure injected after the commit (the case where a naive
retry duplicates a sale) is never stored, and the retry gets the stored answer. Requests
without a valid token keep no key (there is no user to keep it for).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from upstream_app.auth import authenticate
from upstream_app.db import BEFORE_COMMIT, Database
from upstream_app.errors import ApiError
from upstream_app.responses import error_response
from upstream_app.store.idempotency import (
    DONE_UNANSWERED,
    StoredAnswer,
    claim,
    find_answer,
    store_answer,
)

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
KEEP_S = 24 * 3600.0
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"
# Headers of a stored answer that a replay repeats; the rest (Date, Server, length) are
# the new response's own.
_KEPT_HEADERS = ("Content-Type", "WWW-Authenticate", "Allow", "Location")


class KeyLocks:
    """One asyncio lock per key while someone holds or waits for it (no growth at rest)."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def idempotency_middleware(
    database: Database, clock: Callable[[], float] = time.time
) -> Middleware:
    """Build the middleware that honours `Idempotency-Key` on POST."""
    locks = KeyLocks()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if request.method != "POST" or key is None:
            return await handler(request)
        try:
            usuario_id = authenticate(request).sub
        except ApiError:
            return await handler(request)  # the handler answers the missing/invalid token
        _check_key(key)
        fingerprint = _fingerprint(request.method, request.path_qs, await request.read())
        async with locks.hold((usuario_id, key)):
            not_before = clock() - KEEP_S
            stored = await database.run(lambda c: find_answer(c, usuario_id, key, not_before))
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise ApiError(
                        422,
                        "idempotency_key_reused",
                        f"this {HEADER} was used for a different request in the last 24 h",
                    )
                if stored.status == DONE_UNANSWERED:
                    raise ApiError(
                        409,
                        "idempotency_key_answer_lost",
                        f"the request with this {HEADER} was done, but its answer was lost"
                        " (the app stopped before sending it); it is not done again",
                    )
                log.info("answered a repeated Idempotency-Key with the first answer")
                return _replay(stored)
            # The handler's write transactions also record that this key's work is done.
            joined = BEFORE_COMMIT.set(
                lambda conn: claim(conn, usuario_id, key, fingerprint, clock())
            )
            try:
                response = await _answer(handler, request)
            finally:
                BEFORE_COMMIT.reset(joined)
            answer = _storable(response, fingerprint)
            if answer is not None:
                now = clock()
                try:
                    await database.run(
                        lambda c: store_answer(c, usuario_id, key, answer, now, now - KEEP_S)
                    )
                except Exception:  # the work is done: its answer is still the right one
                    log.exception("could not keep the answer for an Idempotency-Key")
            return response

    return middleware


def _check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ApiError(
            400,
            "invalid_request",
            f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
        )


def _fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


async def _answer(handler: Handler, request: web.Request) -> web.StreamResponse:
    """The handler's answer, its `ApiError` turned into the response it stands for."""
    try:
        return await handler(request)
    except ApiError as err:
        return error_response(err.status, err.code, err.message, err.headers)


def _storable(response: web.StreamResponse, fingerprint: str) -> StoredAnswer | None:
    if response.status >= 500 or not isinstance(response, web.Response):
        return None
    body = response.body
    if not isinstance(body, bytes):
        return None
    headers = {name: response.headers[name] for name in _KEPT_HEADERS if name in response.headers}
    return StoredAnswer(fingerprint, response.status, headers, body)


def _replay(stored: StoredAnswer) -> web.Response:
    return web.Response(
        status=stored.status,
        body=stored.body,
        headers={**stored.headers, REPLAYED_HEADER: "true"},
    )
