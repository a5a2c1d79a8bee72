"""The dashboard in a real browser (Debian's Chromium, headless, through chromedriver and Selenium).

Runners and a stream worker run as real processes; a handler fails and its dead letter shows on
the page; the page replays it and the handler's count rises; a cross-site form is refused. The
README's screenshot is taken here: ``EVENTBUS_UPDATE_SCREENSHOT=1`` writes it to docs/img/.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from tests.cli_process import ROOT
from tests.dashboard_process import dashboard, needs_extra, runner
from tests.redis_server import RedisServer
from tests.sample_apps import dashboard_demo, dashboard_streams

SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"
WIDTH, HEIGHT = 1400, 1000
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    needs_extra,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="Chromium and chromedriver are missing: run scripts/install"
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing: pip install -e '.[dev]'")
By = pytest.importorskip("selenium.webdriver.common.by").By


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def until(condition: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    """Wait for ``condition()`` to be truthy (browser reads may fail while the page is replaced)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a section replaced under our feet: read it again
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def handled(driver: Any, handler: str) -> int:
    element = driver.find_element(By.CSS_SELECTOR, f'#handlers [data-handled="{handler}"]')
    return int(element.text)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_page_lists_processes_and_replays_a_dead_letter(
    browser: Any, redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    url = redis_server.url
    sync_redis.set(dashboard_demo.BROKEN, 1)
    module = ["--module", "sample_apps.dashboard_demo"]
    with (
        runner(url, subprocess_env, "sample_apps.dashboard_demo"),
        runner(url, subprocess_env, "sample_apps.dashboard_streams"),
        dashboard(url, subprocess_env, *module) as address,
    ):
        sync_redis.publish(dashboard_demo.CHANNEL, b'{"order": 7, "to": "+5584981341213"}')
        for n in range(3):
            sync_redis.xadd(dashboard_streams.STREAM, {"data": f'{{"invoice": {n}}}'})
        browser.get(address)
        # Both processes, their handlers and the stream group, as the live updates bring them.
        until(lambda: browser.find_element(By.ID, "processes").text.count("running") == 2, "two running processes")
        until(lambda: "billing" in browser.find_element(By.ID, "groups").text, "the stream group")
        row = until(lambda: browser.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]"), "the dead letter")
        text = row[0].text
        assert "the ledger is closed for maintenance" in text and "record_order" in text
        assert "+5584981341213" not in browser.page_source  # masked by the module's @payload_mask
        assert handled(browser, "record_order") == 0
        until(lambda: handled(browser, "bill") == 3, "the stream worker's figures")
        shot = browser.get_screenshot_as_png()
        assert png_size(shot) == (WIDTH, png_size(shot)[1])
        if os.environ.get("EVENTBUS_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.write_bytes(shot)
        # The fault is fixed: replay it from the page, by its button.
        sync_redis.delete(dashboard_demo.BROKEN)
        browser.find_element(By.CSS_SELECTOR, "#letters tr[data-id] button[formaction='dead-letters/replay']").click()
        until(lambda: "1 replayed" in browser.find_element(By.CSS_SELECTOR, ".notice").text, "the replay's notice")
        until(lambda: handled(browser, "record_order") == 1, "the handler's count to rise")
        assert sync_redis.get(dashboard_demo.RECORDED) == b"1"
        assert sync_redis.xlen("eventbus:dead-letter") == 0  # a replayed entry leaves the stream
        until(lambda: not browser.find_elements(By.CSS_SELECTOR, "#letters tr[data-id]"), "the row to go")

        # A page of another site (a data: URL has an opaque origin) posts to the dashboard: refused.
        sync_redis.set(dashboard_demo.BROKEN, 1)
        sync_redis.publish(dashboard_demo.CHANNEL, b'{"order": 8}')
        until(lambda: sync_redis.xlen("eventbus:dead-letter") == 1, "a second dead letter")
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        attack = (
            f'<form method="post" action="{address}dead-letters/delete">'
            f'<input name="csrf" value="{csrf}"><input name="scope" value="matching"></form>'
            "<script>document.forms[0].submit()</script>"
        )
        browser.get("data:text/html," + quote(attack))
        until(lambda: "refused" in browser.find_element(By.TAG_NAME, "body").text, "the refusal")
        assert sync_redis.xlen("eventbus:dead-letter") == 1


def test_the_committed_screenshot_is_the_tests_own() -> None:
    data = SCREENSHOT.read_bytes()
    assert png_size(data)[0] == WIDTH
    assert "docs/img/dashboard.png" in (ROOT / "README.md").read_text()
