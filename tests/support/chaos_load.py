"""Realistic traffic through the sidecar while a fault is injected, and what it saw.

A few clients, each signed in as its own `vendedor`, read products and sell one unit now
and then with an `Idempotency-Key`. A sale the client saw fail (5xx, no answer) is sent
again with the same key, as a shop's front end would: with the sidecar's own retries,
that is how a naive system would sell twice. Every request is recorded (when it was
sent, what came back), so a scenario can count errors by kind and tell when things were
normal again. The loop is bounded: it stops when told, or at its deadline, whichever comes first.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.support.tokens import token

OK = "ok"
SALE_PRODUCT = 1
THINK_S = 0.02
"""Pause between one client's requests: traffic, not a flood (the machine is shared)."""
REQUEST_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float
    """When the request was sent (monotonic)."""
    kind: str
    """`ok`, else `STATUS error_code` for an answer, or the exception's name for none."""

    @property
    def ok(self) -> bool:
        return self.kind == OK


@dataclass
class Client:
    user: str
    keys_sent: set[str] = field(default_factory=set)
    sold: dict[str, int] = field(default_factory=dict)
    """Key -> venta_id, for every sale answered 201."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(self.user, 'vendedor')}"}


class Load:
    """`clients` concurrent clients against `url` until `stop()` or `deadline_s`."""

    def __init__(self, url: str, clients: int = 4, sale_every: int = 3) -> None:
        self.url = url
        self.clients = [Client(user=f"{900 + n}") for n in range(clients)]
        self.sale_every = sale_every
        self.outcomes: list[Outcome] = []
        self.pending = 0
        """Requests sent and not answered yet."""
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, deadline_s: float = 60.0) -> None:
        end = time.monotonic() + deadline_s
        self._tasks = [asyncio.ensure_future(self._client(c, end)) for c in self.clients]

    def stop_starting(self) -> None:
        """The clients start no new request; those in flight finish."""
        self._stopping.set()

    def start_burst(self, n: int) -> None:
        """`n` requests at once, reads and sales shared among the clients (collected by
        `stop()`): a known number in flight together."""
        self._tasks.append(asyncio.ensure_future(self._burst(n)))

    async def _burst(self, n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            requests = []
            for i in range(n):
                client = self.clients[i % len(self.clients)]
                if i % 2:
                    key = f"burst-{client.user}-{i}"
                    client.keys_sent.add(key)
                    requests.append(self._sell(http, client, key))
                else:
                    requests.append(self._read(http, client))
            await asyncio.gather(*requests)

    async def stop(self) -> list[Outcome]:
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        return sorted(self.outcomes, key=lambda o: o.started)

    def last_failure(self) -> float | None:
        failed = [o.started for o in self.outcomes if not o.ok]
        return max(failed) if failed else None

    async def settle(self, since: float, quiet_s: float = 1.0, deadline_s: float = 30.0) -> None:
        """Wait until `quiet_s` has passed since `since` and since the last failure, with
        requests answered in that time (the evidence that things are normal again)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            now = time.monotonic()
            last = self.last_failure() or since
            calm_from = max(since, last)
            answered = any(o.started > calm_from and o.ok for o in self.outcomes)
            if now - calm_from >= quiet_s and answered:
                return
            await asyncio.sleep(0.1)

    def keys_sent(self) -> set[tuple[str, str]]:
        return {(c.user, key) for c in self.clients for key in c.keys_sent}

    async def _client(self, client: Client, end: float) -> None:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        keys = (f"sale-{client.user}-{n}" for n in itertools.count())
        key = next(keys)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for n in itertools.count(1):
                if self._stopping.is_set() or time.monotonic() >= end:
                    return
                if n % self.sale_every:
                    await self._read(http, client)
                    continue
                client.keys_sent.add(key)
                if await self._sell(http, client, key):
                    key = next(keys)  # the next sale is a new one
                await asyncio.sleep(THINK_S)

    async def _read(self, http: aiohttp.ClientSession, client: Client) -> None:
        await self._request(http, "GET", "/api/v1/productos?limit=5", client, 200)

    async def _sell(self, http: aiohttp.ClientSession, client: Client, key: str) -> bool:
        """Sell one unit under `key`; whether it was answered (201, or 409: done, its
        answer lost), so that the next sale is a new one."""
        body = await self._request(
            http, "POST", "/api/v1/ventas", client, 201, key,
            {"producto_id": SALE_PRODUCT, "cantidad": 1},
        )  # fmt: skip
        if body is None:
            return False
        if "venta_id" in body:
            client.sold[key] = body["venta_id"]
        return True

    async def _request(
        self,
        http: aiohttp.ClientSession,
        method: str,
        path: str,
        client: Client,
        expected: int,
        key: str | None = None,
        payload: dict[str, int] | None = None,
    ) -> dict | None:
        """Send one request and record it; the JSON answer when one below 500 came."""
        headers = client.headers()
        if key is not None:
            headers["Idempotency-Key"] = key
        started = time.monotonic()
        self.pending += 1
        body: dict | None = None
        try:
            async with http.request(method, self.url + path, headers=headers, json=payload) as r:
                answer = await r.json(content_type=None)
                kind = OK if r.status == expected else f"{r.status} {answer.get('error', '')}"
                if r.status < 500:
                    body = answer
        except (aiohttp.ClientError, TimeoutError) as error:
            kind = type(error).__name__
        finally:
            self.pending -= 1
        self.outcomes.append(Outcome(started, kind))
        return body


def errors_by_kind(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.kind for o in outcomes if not o.ok)


def time_to_normal(outcomes: list[Outcome], fault_end: float) -> float:
    """Seconds from `fault_end` to the first moment from which every request succeeded."""
    failed = [o.started for o in outcomes if not o.ok and o.started >= fault_end]
    return max(failed) - fault_end if failed else 0.0


def duplicated_sales(db: Path, load: Load) -> int:
    """Sales beyond one per key, read from the app's own database.

    The app records, in the sale's own transaction, a row per (user, key) whose work was
    done (`idempotency_keys`: status 0 while unanswered, then the answer's status). A key
    sold twice leaves two rows in `ventas` and still one key row, so the difference counts
    the duplicates. Every key the app kept must be one the clients sent.
    """
    users = sorted({c.user for c in load.clients})
    marks = ",".join("?" * len(users))
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        sales = conn.execute(
            f"SELECT COUNT(*) FROM ventas WHERE usuario_id IN ({marks})", users
        ).fetchone()[0]
        kept = conn.execute(
            f"SELECT usuario_id, clave, status FROM idempotency_keys WHERE usuario_id IN ({marks})",
            users,
        ).fetchall()
    unknown = {(user, key) for user, key, _ in kept} - load.keys_sent()
    assert not unknown, f"the app kept keys nobody sent: {sorted(unknown)[:5]}"
    done = [1 for _, _, status in kept if status in (0, 201)]
    for client in load.clients:
        assert set(client.sold) <= {key for user, key, _ in kept if user == client.user}
    return int(sales) - len(done)
