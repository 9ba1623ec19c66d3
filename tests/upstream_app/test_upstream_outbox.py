"""The event outbox: no event lost while the sidecar is away (CONTRACT 14), real processes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from upstream_harness import REPO_ROOT, Api, EventSink, RunningApp, free_port, start_app

DEADLINE_S = 15.0


def outbox_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT event FROM outbox ORDER BY outbox_id").fetchall()
    finally:
        conn.close()
    return [json.loads(row[0]) for row in rows]


async def poll(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def sale_updates(sink: EventSink) -> list[dict[str, Any]]:
    return [
        e.body
        for e in sink.snapshot()
        if e.body["type"] == "inventory_update" and e.body["update_type"] == "venta"
    ]


async def sell_each(api: Api, count: int) -> list[int]:
    """One sale on each of `count` new products; the sale ids in order."""
    ids = []
    for _ in range(count):
        producto_id = await api.new_product(lots=((5, 30),))
        reply = await api.sell(producto_id, 1)
        assert reply.status == 201
        ids.append(reply.body["venta_id"])
    return ids


async def test_started_before_the_sidecar_loses_nothing_and_keeps_the_order(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    port = free_port()
    app = start(events_url=f"http://127.0.0.1:{port}")
    api = Api(http, app)
    venta_ids = await sell_each(api, 5)
    await poll(lambda: len(outbox_rows(app.db)) > 0, "nothing reached the outbox")
    sink = EventSink(port=port)
    try:
        await poll(lambda: len(sale_updates(sink)) == 5, "the held sales never arrived")
        received = [e.body for e in sink.snapshot()]
        # The startup check's alerts came first, then the sales, in the order they happened.
        assert received[0]["type"] == "alert"
        assert [e["data"]["venta_id"] for e in sale_updates(sink)] == venta_ids
        keys = [e["event_key"] for e in received]
        assert len(set(keys)) == len(keys)
        assert all(isinstance(k, str) and 0 < len(k) <= 128 for k in keys)
        await poll(lambda: outbox_rows(app.db) == [], "the outbox was not emptied")
        # Delivered after the outage, and new events flow at once.
        (more,) = await sell_each(api, 1)
        await poll(lambda: len(sale_updates(sink)) == 6, "a later sale was not delivered")
        assert sale_updates(sink)[-1]["data"]["venta_id"] == more
    finally:
        sink.close()
    log = app.log_text()
    assert '"level":"warning"' not in log, log
    assert log.count("not reachable") == 1 and log.count("reachable again") == 1, log


async def test_kept_in_the_database_across_a_restart(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    port = free_port()
    app = start(events_url=f"http://127.0.0.1:{port}")
    venta_ids = await sell_each(Api(http, app), 3)
    assert app.stop() == 0
    held = outbox_rows(app.db)
    assert [e["data"]["venta_id"] for e in held if e.get("update_type") == "venta"] == venta_ids
    sink = EventSink(port=port)
    again = start_app(app.db.parent, events_url=sink.url)
    try:
        await poll(lambda: len(sale_updates(sink)) >= 3, "the held sales never arrived")
        # Events keep the key they were stored with (a resend is recognised by the sidecar).
        held_keys = [e["event_key"] for e in held]
        received_keys = [e.body["event_key"] for e in sink.snapshot()]
        assert received_keys[: len(held_keys)] == held_keys
    finally:
        again.stop()
        sink.close()


async def test_bounded_the_oldest_are_dropped_and_counted(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    port = free_port()
    app = start(events_url=f"http://127.0.0.1:{port}", args=("--outbox-max", "3"))
    venta_ids = await sell_each(Api(http, app), 6)
    await poll(lambda: len(outbox_rows(app.db)) == 3, "the outbox is not at its bound")
    await poll(lambda: "event outbox full (3)" in app.log_text(), "the drop was not logged")
    sink = EventSink(port=port)
    try:
        await poll(lambda: len(sink.snapshot()) >= 3, "the held events never arrived")
        await asyncio.sleep(0.3)  # a fourth event would show up now
        received = [e.body for e in sink.snapshot()]
        assert len(received) == 3
        # The newest survive: the last sale's update is the last event kept.
        assert received[-1]["data"]["venta_id"] == venta_ids[-1]
    finally:
        sink.close()


async def test_a_sidecar_answering_503_gets_everything_once_it_recovers(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp]
) -> None:
    sink = EventSink(fail_first=4)
    try:
        app = start(events_url=sink.url)
        venta_ids = await sell_each(Api(http, app), 3)
        await poll(lambda: len(sale_updates(sink)) == 3, "the sales never arrived")
        assert [e["data"]["venta_id"] for e in sale_updates(sink)] == venta_ids
        keys = [e.body["event_key"] for e in sink.snapshot()]
        assert len(keys) == len(set(keys))
        assert sink.refused == 4
    finally:
        sink.close()


def test_outbox_max_must_be_a_positive_number(tmp_path: Path) -> None:
    for bad in ("0", "-1", "many"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "upstream_app",
                "--db",
                str(tmp_path / "x.db"),
                "--outbox-max",
                bad,
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 2 and "--outbox-max" in result.stderr
