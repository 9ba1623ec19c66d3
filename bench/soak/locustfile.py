"""The demo's traffic through the sidecar, for `bench/soak.py` (Locust, headless).

Each simulated user comes from its own client address (`X-Forwarded-For`, believed from
127.0.0.1 by the demo policy), a new one each time it signs in again, so the limiter's
per-IP keys keep being created and must expire. It signs in as one of the seeded users,
browses products and lots, sells with an `Idempotency-Key` (now and then sending the same
sale twice, as a client retrying would), receives lots, reads reports and signs in again.
Answers the policy or the app give by design (429 limited, 409 out of stock) count as
successes; Locust's failures are everything else. Every status seen is counted per request
name and written as JSON to `$SOAK_STATUS_FILE` when the run ends, for the soak's table.

Environment: `SOAK_PASSWORD` (the seed password), `SOAK_STATUS_FILE` (optional).
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import random
import uuid
from collections import Counter
from typing import Any

from locust import HttpUser, between, events, task

EXPECTED = {429, 409}
ROLES = ("admin", "vendedor", "vendedor", "viewer")
STATUSES: Counter[str] = Counter()
_addresses = itertools.count(1)


@events.request.add_listener
def _count_status(name: str, response: Any, exception: Any, **_: Any) -> None:
    status = getattr(response, "status_code", 0) if exception is None else "error"
    STATUSES[f"{name} {status}"] += 1


@events.quitting.add_listener
def _write_statuses(**_: Any) -> None:
    path = os.environ.get("SOAK_STATUS_FILE")
    if path:
        with open(path, "w") as out:
            json.dump(dict(sorted(STATUSES.items())), out, indent=1)


def client_address() -> str:
    """A fresh client address: up to 16.7 million before they repeat."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


class Shopper(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.address = client_address()
        self.username = random.choice(ROLES)
        self.token = ""
        self.product_ids: list[int] = []
        self.login()
        with self._get("/api/v1/productos?limit=100", "/api/v1/productos") as resp:
            if resp.status_code == 200:
                self.product_ids = [p["producto_id"] for p in resp.json()["items"]]

    def _headers(self, **more: str) -> dict[str, str]:
        headers = {"X-Forwarded-For": self.address, **more}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _get(self, path: str, name: str) -> Any:
        return self.client.get(path, headers=self._headers(), name=name, catch_response=True)

    def _post(self, path: str, body: dict[str, Any], name: str, **headers: str) -> Any:
        return self.client.post(
            path, json=body, headers=self._headers(**headers), name=name, catch_response=True
        )

    @staticmethod
    def _settle(resp: Any) -> None:
        if resp.status_code in EXPECTED:
            resp.success()

    def _product(self) -> int:
        return random.choice(self.product_ids) if self.product_ids else 1

    @property
    def staff(self) -> bool:
        return self.username in ("admin", "vendedor")

    def login(self) -> None:
        body = {"username": self.username, "password": os.environ["SOAK_PASSWORD"]}
        with self._post("/api/v1/auth/login", body, "/api/v1/auth/login") as resp:
            if resp.status_code == 200:
                self.token = resp.json()["access_token"]
            self._settle(resp)

    @task(10)
    def browse(self) -> None:
        with self._get(f"/api/v1/productos?limit=20&offset={random.randint(0, 5)}",
                       "/api/v1/productos") as resp:  # fmt: skip
            self._settle(resp)

    @task(6)
    def product_and_lots(self) -> None:
        with self._get(f"/api/v1/productos/{self._product()}", "/api/v1/productos/{id}") as resp:
            self._settle(resp)

    @task(2)
    def sales_history(self) -> None:
        with self._get("/api/v1/ventas?limit=20", "/api/v1/ventas") as resp:
            self._settle(resp)

    @task(3)
    def sell(self) -> None:
        if not self.staff:
            return
        body = {"producto_id": self._product(), "cantidad": random.randint(1, 3)}
        key = str(uuid.uuid4())
        for name in ("/api/v1/ventas [new]", "/api/v1/ventas [replay]")[: random.choice((1, 1, 2))]:
            with self._post("/api/v1/ventas", body, name, **{"Idempotency-Key": key}) as resp:
                self._settle(resp)

    @task(1)
    def receive_lot(self) -> None:
        if not self.staff:
            return
        expiry = datetime.date.today() + datetime.timedelta(days=random.randint(2, 90))
        body = {"producto_id": self._product(), "cantidad": 40,
                "fecha_vencimiento": expiry.isoformat()}  # fmt: skip
        with self._post("/api/v1/lotes", body, "/api/v1/lotes") as resp:
            self._settle(resp)

    @task(1)
    def reports(self) -> None:
        if not self.staff:
            return
        path = random.choice(("/api/v1/reportes/ventas", "/api/v1/reportes/inventario"))
        with self._get(path, path) as resp:
            self._settle(resp)

    @task(1)
    def sign_in_again(self) -> None:
        """As if the user came back from another network."""
        self.address = client_address()
        self.token = ""
        self.login()
