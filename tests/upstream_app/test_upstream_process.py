"""The process itself: environment handling, periodic alerts, secrets, shutdown."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import aiohttp
import pytest
from upstream_harness import (
    EVENTS_TOKEN,
    JWT_SECRET,
    SEED_PASSWORD,
    Api,
    EventSink,
    RunningApp,
    free_port,
)


async def test_random_seed_password_is_printed_once_and_works(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    app = start(env={"UPSTREAM_SEED_PASSWORD": None})
    match = re.search(r'have password ([^\s"]+)', app.log_text())
    assert match is not None, app.log_text()
    api = Api(http, app)
    assert await api.token("admin", password=match.group(1))
    assert app.stop() == 0
    restarted = start(args=("--db", str(app.db)), env={"UPSTREAM_SEED_PASSWORD": None})
    assert "have password" not in restarted.log_text()
    assert await Api(http, restarted).token("viewer", password=match.group(1))


async def test_missing_jwt_secret_warns_and_still_serves(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    app = start(env={"JWT_SECRET": None})
    assert "JWT_SECRET is not set" in app.log_text()
    api = Api(http, app)
    reply = await api.call("GET", "/api/v1/productos?limit=1", user="viewer")
    assert reply.status == 200


async def test_still_low_products_are_reannounced_after_the_interval(
    start: Callable[..., RunningApp],
) -> None:
    sink = EventSink()
    try:
        start(
            events_url=sink.url, args=("--check-interval", "100ms", "--realert-interval", "300ms")
        )
        events = await sink.wait_for(lambda e: e.get("title") == "Stock Bajo: Zinc", count=2)
        assert all(e.authorization == f"Bearer {EVENTS_TOKEN}" for e in events)
    finally:
        sink.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_shut_down_cleanly(start: Callable[..., RunningApp], sig: int) -> None:
    app = start()
    assert app.stop(sig) == 0


async def test_secrets_stay_out_of_the_log(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    app = start(events_url=f"http://127.0.0.1:{free_port()}")
    api = Api(http, app)
    await api.call(
        "POST", "/api/v1/auth/login", json_body={"username": "admin", "password": "nope"}
    )
    token = await api.token("admin")
    await api.call("GET", "/api/v1/productos", user="admin")
    app.stop()
    log = app.log_text()
    for secret in (JWT_SECRET, SEED_PASSWORD, EVENTS_TOKEN, token):
        assert secret not in log


@pytest.mark.parametrize(
    "args",
    [
        ("--check-interval", "5"),
        ("--realert-interval", "0s"),
        ("--port", "http"),
        ("--expiry-days", "-1"),
        ("--token-ttl", "500ms"),
        ("--events-url", "ftp://127.0.0.1:1"),
    ],
)
def test_bad_flags_exit_2(start: Callable[..., RunningApp], args: tuple[str, ...]) -> None:
    with pytest.raises(AssertionError, match="exited with 2"):
        start(args=args)
