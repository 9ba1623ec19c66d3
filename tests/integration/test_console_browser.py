"""The console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

One inventory app and one sidecar per module (real processes); a fresh browser per test.
Each test saves a screenshot in its tmp_path.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.policy_files import make_policy, write_policy
from tests.support.processes import (
    EVENTS_TOKEN,
    Process,
    free_port,
    start_sidecar,
    start_upstream_app,
)
from tests.support.tokens import token

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ADMIN_TOKEN = token("1", "admin", ttl=7200)
T = TypeVar("T")


class Stack:
    def __init__(self, url: str, sidecar: Process) -> None:
        self.url = url
        self.sidecar = sidecar

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             auth: str = ADMIN_TOKEN) -> tuple[int, Any]:  # fmt: skip
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {auth}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"null")

    def breaker_state(self, name: str) -> str:
        status, stats = self.call("GET", f"/api/v1/resilience/circuit-breakers/{name}")
        assert status == 200
        return str(stats["state"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    app, app_port = start_upstream_app(tmp / "inv.db", f"http://127.0.0.1:{port}")
    doc = make_policy(port, f"http://127.0.0.1:{app_port}")
    doc["alerts"]["operational"] = True
    sidecar = start_sidecar(write_policy(tmp / "policy.yaml", doc), port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", sidecar)
    finally:
        sidecar.stop()
        app.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    assert shutil.which("chromium") or Path(CHROMIUM).exists(), (
        "chromium is missing: bash scripts/bootstrap.sh --with-system installs it"
    )
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1800"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def eventually(probe: Callable[[], T | None], deadline_s: float = 10.0, what: str = "") -> T:
    """Poll until `probe` returns something truthy; fail with `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            value = probe()
        except WebDriverException:
            value = None
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        time.sleep(0.05)


def console_errors(driver: WebDriver, allowed: tuple[str, ...] = ()) -> list[str]:
    entries = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [
        e["message"]
        for e in entries
        if e["level"] == "SEVERE" and not any(text in e["message"] for text in allowed)
    ]


def sign_in(driver: WebDriver, stack: Stack, secret: str = ADMIN_TOKEN) -> None:
    dialog = driver.find_element(By.ID, "login")
    eventually(lambda: dialog.get_attribute("open") is not None, what="the token dialog")
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(secret)
    driver.find_element(By.ID, "login-submit").click()


def open_console(driver: WebDriver, stack: Stack) -> None:
    driver.get(stack.url + "/console")
    sign_in(driver, stack)
    eventually(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#breakers .breaker")) == 3,
        what="three breaker cards",
    )


def state_shown(driver: WebDriver, breaker: str) -> str:
    badge = driver.find_element(By.CSS_SELECTOR, f'.breaker[data-breaker="{breaker}"] .state')
    return str(badge.get_attribute("data-state"))


def test_the_page_loads_and_shows_the_breakers_without_console_errors(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    for _ in range(5):
        stack.call("GET", "/api/v1/productos")
    stack.call("GET", "/api/v1/productos/999999")
    open_console(browser, stack)
    cards = browser.find_elements(By.CSS_SELECTOR, "#breakers .breaker")
    names = sorted(str(c.get_attribute("data-breaker")) for c in cards)
    assert names == ["email_service", "external_api", "inventory"]
    inventory = browser.find_element(By.CSS_SELECTOR, '.breaker[data-breaker="inventory"]')
    assert "closed" in inventory.text  # the state as text, not colour alone
    assert "Failure rate" in inventory.text and "Rejections" in inventory.text
    eventually(
        lambda: browser.find_elements(By.CSS_SELECTOR, '.route[data-route="inventory"] polyline'),
        what="a chart line for the inventory route",
    )
    policy = browser.find_element(By.ID, "policy").text
    assert "none since the sidecar started" in policy
    eventually(lambda: browser.find_element(By.ID, "ws-status").text == "alerts: live")
    assert browser.execute_script("return sessionStorage.length") == 1
    browser.save_screenshot(str(tmp_path / "console.png"))
    assert console_errors(browser) == []


def test_a_wrong_token_says_so_and_asks_again(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    browser.get(stack.url + "/console")
    sign_in(browser, stack, "not-a-token")
    error = browser.find_element(By.ID, "login-error")
    eventually(lambda: error.is_displayed() and "401" in error.text, what="the refusal")
    assert "refused" in error.text
    assert browser.find_element(By.ID, "login").get_attribute("open") is not None
    browser.save_screenshot(str(tmp_path / "wrong-token.png"))
    viewer = token("7", "viewer")
    sign_in(browser, stack, viewer)
    eventually(lambda: "403" in error.text, what="the refusal of a non-admin token")
    sign_in(browser, stack)
    eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "#breakers .breaker"))
    assert browser.find_element(By.ID, "login").get_attribute("open") is None
    # The refused calls are the only errors the browser reports.
    assert console_errors(browser, allowed=("401", "403")) == []


def test_reset_through_the_page_reaches_the_sidecar(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    open_console(browser, stack)
    button = 'button[data-breaker="external_api"][data-action="force-open"]'
    browser.find_element(By.CSS_SELECTOR, button).click()
    eventually(lambda: browser.switch_to.alert, what="the confirmation").dismiss()
    assert stack.breaker_state("external_api") == "closed"  # declined: nothing sent

    browser.find_element(By.CSS_SELECTOR, button).click()
    prompt = eventually(lambda: browser.switch_to.alert, what="the confirmation")
    assert "external_api" in prompt.text
    prompt.accept()
    eventually(lambda: stack.breaker_state("external_api") == "forced_open", what="force-open")
    eventually(lambda: state_shown(browser, "external_api") == "forced_open")
    card = browser.find_element(By.CSS_SELECTOR, '.breaker[data-breaker="external_api"]')
    assert "forced open" in card.text
    browser.save_screenshot(str(tmp_path / "forced-open.png"))

    reset = 'button[data-breaker="external_api"][data-action="reset"]'
    browser.find_element(By.CSS_SELECTOR, reset).click()
    eventually(lambda: browser.switch_to.alert, what="the confirmation").accept()
    eventually(lambda: stack.breaker_state("external_api") == "closed", what="the reset")
    eventually(lambda: state_shown(browser, "external_api") == "closed")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert console_errors(browser) == []


def test_an_ingested_alert_appears_within_2s_and_html_stays_text(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    open_console(browser, stack)
    eventually(lambda: browser.find_element(By.ID, "ws-status").text == "alerts: live")
    title = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script> Stock <b>Bajo</b>'
    event = {"type": "alert", "alert_type": "stock_bajo", "severity": "critical",
             "title": title, "message": "Stock actual: 5 & <i>nada</i>"}  # fmt: skip
    status, answer = stack.call("POST", "/api/v1/events", event, auth=EVENTS_TOKEN)
    assert status == 202
    item = eventually(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'#alerts li[data-id="{answer["id"]}"]'),
        deadline_s=2.0,
        what="the alert in the list",
    )[0]
    assert item.find_element(By.CSS_SELECTOR, ".title").text == title
    assert item.find_element(By.CSS_SELECTOR, ".message").text == "Stock actual: 5 & <i>nada</i>"
    assert "CRITICAL" in item.find_element(By.CSS_SELECTOR, ".sev").text
    assert item.find_elements(By.TAG_NAME, "img") == []
    assert item.find_elements(By.TAG_NAME, "b") == []
    assert browser.execute_script("return window.pwned === undefined") is True
    # Newest first: a second alert goes above it.
    status, second = stack.call(
        "POST", "/api/v1/events", dict(event, title="second", severity="info"), auth=EVENTS_TOKEN
    )
    first_item = eventually(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'#alerts li[data-id="{second["id"]}"]'),
        deadline_s=2.0,
    )[0]
    top = browser.find_element(By.CSS_SELECTOR, "#alerts li:first-child")
    assert top.get_attribute("data-id") == first_item.get_attribute("data-id")
    browser.save_screenshot(str(tmp_path / "alerts.png"))
    assert console_errors(browser) == []


def test_usable_at_phone_width_with_a_usage_lookup(
    browser: WebDriver, stack: Stack, tmp_path: Path
) -> None:
    browser.set_window_size(375, 2400)
    for _ in range(3):
        stack.call("GET", "/api/v1/productos")
    open_console(browser, stack)
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert width <= 375
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0  # nothing wider than the screen
    field = browser.find_element(By.ID, "usage-user")
    field.send_keys("1")
    field.submit()
    table = eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "#usage-result table"))[0]
    assert "/api/v1/productos" in table.text
    browser.save_screenshot(str(tmp_path / "phone.png"))
    assert console_errors(browser) == []
