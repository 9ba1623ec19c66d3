"""`Idempotency-Key` on POST, against the real process (CONTRACT 14)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from upstream_harness import Api, Reply, RunningApp, start_app

from upstream_app.db import BEFORE_COMMIT, SCHEMA, SCHEMA_VERSION, connect, create_schema_once
from upstream_app.errors import ApiError
from upstream_app.idempotency import _fingerprint
from upstream_app.seed import prepare_database
from upstream_app.store.idempotency import (
    DONE_UNANSWERED,
    StoredAnswer,
    claim,
    find_answer,
    store_answer,
)
from upstream_app.store.ventas import record_sale


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def sale_count(api: Api, producto_id: int) -> int:
    reply = await api.call("GET", f"/api/v1/ventas?producto_id={producto_id}", user="viewer")
    total: int = reply.body["total"]
    return total


async def keyed_sale(
    api: Api, producto_id: int, cantidad: int, key: str, user: str = "vendedor"
) -> Reply:
    return await api.call(
        "POST",
        "/api/v1/ventas",
        user=user,
        json_body={"producto_id": producto_id, "cantidad": cantidad},
        headers=keyed(key),
    )


async def test_a_repeated_key_gets_the_first_answer_and_changes_nothing(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    first = await keyed_sale(api, producto_id, 2, key)
    again = await keyed_sale(api, producto_id, 2, key)
    assert first.status == again.status == 201
    assert again.body == first.body
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await api.stock(producto_id) == 8
    assert await sale_count(api, producto_id) == 1


async def test_the_same_key_with_another_body_is_422(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    assert (await keyed_sale(api, producto_id, 2, key)).status == 201
    reused = await keyed_sale(api, producto_id, 3, key)
    assert reused.status == 422
    assert set(reused.body) == {"error", "message"}
    assert reused.body["error"] == "idempotency_key_reused"
    assert await api.stock(producto_id) == 8


async def test_the_same_key_on_another_path_is_422(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    assert (await keyed_sale(api, producto_id, 1, key)).status == 201
    lot = {"producto_id": producto_id, "cantidad": 1, "fecha_vencimiento": "2999-01-01"}
    reply = await api.call(
        "POST", "/api/v1/lotes", user="vendedor", json_body=lot, headers=keyed(key)
    )
    assert reply.status == 422 and reply.body["error"] == "idempotency_key_reused"


async def test_keys_belong_to_their_user(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    assert (await keyed_sale(api, producto_id, 1, key, user="vendedor")).status == 201
    assert (await keyed_sale(api, producto_id, 1, key, user="admin")).status == 201
    assert await sale_count(api, producto_id) == 2


async def test_an_answered_refusal_is_the_first_answer_too(api: Api) -> None:
    producto_id = await api.new_product(lots=((1, 30),))
    key = str(uuid.uuid4())
    short = await keyed_sale(api, producto_id, 5, key)
    assert short.status == 409
    await api.add_lot(producto_id, 10, 30)
    again = await keyed_sale(api, producto_id, 5, key)
    assert (again.status, again.body) == (409, short.body)
    assert await api.stock(producto_id) == 11


async def test_concurrent_duplicates_run_once(api: Api) -> None:
    producto_id = await api.new_product(lots=((100, 30),))
    key = str(uuid.uuid4())
    replies = await asyncio.gather(*(keyed_sale(api, producto_id, 1, key) for _ in range(20)))
    assert {reply.status for reply in replies} == {201}
    assert len({reply.body["venta_id"] for reply in replies}) == 1
    assert await api.stock(producto_id) == 99
    assert await sale_count(api, producto_id) == 1


async def test_posts_without_a_key_are_not_deduplicated(api: Api) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    for _ in range(2):
        assert (await api.sell(producto_id, 1)).status == 201
    assert await sale_count(api, producto_id) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "clave-ñ"])
async def test_a_malformed_key_is_400(api: Api, key: str) -> None:
    producto_id = await api.new_product(lots=((10, 30),))
    reply = await keyed_sale(api, producto_id, 1, key)
    assert reply.status == 400 and reply.body["error"] == "invalid_request"
    assert "Idempotency-Key" in reply.body["message"]
    assert await api.stock(producto_id) == 10


async def test_kept_across_a_restart(
    http: aiohttp.ClientSession, start: Callable[..., RunningApp], tmp_path: Path
) -> None:
    first_run = start()
    api = Api(http, first_run)
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    first = await keyed_sale(api, producto_id, 3, key)
    first_run.stop()
    second_run = start_app(first_run.db.parent)
    try:
        api = Api(http, second_run)
        again = await keyed_sale(api, producto_id, 3, key)
        assert (again.status, again.body) == (201, first.body)
        assert await api.stock(producto_id) == 7
    finally:
        second_run.stop()


def test_answers_expire_after_a_day(tmp_path: Path) -> None:
    conn = connect(tmp_path / "db.sqlite")
    create_schema_once(conn, lambda c: None)
    answer = StoredAnswer("f", 201, {"Content-Type": "application/json"}, b"{}")
    day = 24 * 3600.0
    store_answer(conn, "7", "k", answer, now=1000.0, not_before=1000.0 - day)
    # Asked just under a day later (not_before = now - a day), then just over.
    assert find_answer(conn, "7", "k", not_before=(1000.0 + day - 1) - day) == answer
    assert find_answer(conn, "7", "k", not_before=(1000.0 + day + 1) - day) is None
    # A later store forgets what has expired.
    store_answer(conn, "7", "other", answer, now=1000.0 + 2 * day, not_before=1000.0 + day)
    rows = conn.execute("SELECT clave FROM idempotency_keys").fetchall()
    assert [row["clave"] for row in rows] == ["other"]


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    for statement in SCHEMA.split(";"):
        if statement.strip():
            old.execute(statement)
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    conn = connect(path)
    assert create_schema_once(conn, lambda c: pytest.fail("a migration never seeds")) is False
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM idempotency_keys").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


async def test_work_done_but_its_answer_lost_is_not_done_again(api: Api) -> None:
    """The process died between the sale's commit (with its claim) and storing the answer."""
    producto_id = await api.new_product(lots=((10, 30),))
    key = str(uuid.uuid4())
    body = json.dumps({"producto_id": producto_id, "cantidad": 2}).encode()
    vendedor = "2"  # the seed's usuario_id for vendedor
    conn = connect(api.app.db)
    try:
        fingerprint = _fingerprint("POST", "/api/v1/ventas", body)
        conn.execute("BEGIN IMMEDIATE")
        claim(conn, vendedor, key, fingerprint, time.time())
        conn.execute("COMMIT")
    finally:
        conn.close()
    reply = await api.call(
        "POST",
        "/api/v1/ventas",
        user="vendedor",
        json_body=json.loads(body),
        headers={**keyed(key), "Content-Type": "application/json"},
    )
    assert reply.status == 409, reply.body
    assert reply.body["error"] == "idempotency_key_answer_lost"
    assert await api.stock(producto_id) == 10


def test_the_claim_commits_and_rolls_back_with_the_work(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    prepare_database(path, "pw")
    conn = connect(path)
    joined = BEFORE_COMMIT.set(lambda c: claim(c, "2", "sold", "f", 1000.0))
    try:
        record_sale(conn, 3, 1, "2")
    finally:
        BEFORE_COMMIT.reset(joined)
    stored = find_answer(conn, "2", "sold", not_before=0.0)
    assert stored is not None and stored.status == DONE_UNANSWERED
    joined = BEFORE_COMMIT.set(lambda c: claim(c, "2", "short", "f", 1000.0))
    try:
        with pytest.raises(ApiError):
            record_sale(conn, 3, 10**6, "2")  # 409: rolled back, claim and all
    finally:
        BEFORE_COMMIT.reset(joined)
    assert find_answer(conn, "2", "short", not_before=0.0) is None
