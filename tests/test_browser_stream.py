"""A residents' page in Debian's headless Chromium against a quiet service (no simulated
district): what changed after the page was drawn and before its live stream opened (a phone
on a slow network opens it a while later) is shown once the stream opens, not left as drawn
until the device changes again."""

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from facilities.mosquitto import PrivateBroker
from tests.support.poll import wait_until
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

WITHIN_S = 2.0  # docs/pages.md, "Live": a page shows a change within 2 s

# Run before the page's own scripts: its EventSource is made at once, as the page asks, but
# connects only when the test says so (window.openStream()).
HOLD_STREAM = """
(function () {
  const Real = window.EventSource;
  window.EventSource = function (url) {
    const held = { readyState: 0, listeners: [] };
    held.addEventListener = function (type, fn) { held.listeners.push([type, fn]); };
    window.openStream = function () {
      const real = new Real(url);
      held.listeners.forEach(function (l) { real.addEventListener(l[0], l[1]); });
      Object.defineProperty(held, "readyState", { get: function () { return real.readyState; } });
    };
    return held;
  };
})();
"""


def _until(check: Callable[[], object], what: str, timeout_s: float = 10.0) -> object:
    return wait_until(
        check, timeout_s=timeout_s, what=what, interval_s=0.05, ignoring=(WebDriverException,)
    )


def test_smoke_reported_before_the_stream_opened_is_shown_once_it_opens(
    broker: PrivateBroker, tmp_path: Path, browser: Callable[..., WebDriver], device
) -> None:
    service = ServiceProcess(
        broker,
        tmp_path / "facilities.db",
        client_id=f"pages-{uuid.uuid4().hex[:6]}",
        log=tmp_path / "service.log",
    ).start()
    base = f"http://127.0.0.1:{service.port}"
    try:
        phone = browser()
        phone.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOLD_STREAM})
        phone.get(f"{base}/garages/g-hc3")
        warning = phone.find_element(By.CLASS_NAME, "smoke-warning")
        assert not warning.is_displayed()

        # smoke, after the page was drawn and before its stream opens
        garage = device("g-hc3")
        smoke = {"seq": 1, "ts": time.time(), "occupancy": 12, "smoke": True}
        garage.publish_raw("facilities/garage/g-hc3/telemetry", json.dumps(smoke)).wait_for_publish(
            5
        )
        _until(
            lambda: httpx.get(f"{base}/api/garages/g-hc3").json()["smoke_alert"],
            "the smoke alert in the API",
        )
        assert not warning.is_displayed()  # drawn before: nothing tells the page yet

        phone.execute_script("window.openStream()")
        _until(
            lambda: phone.execute_script("return window.facilitiesLive.source.readyState === 1"),
            "the page's event stream",
        )
        # the garage says nothing more: only the page's own look at the state can show it
        _until(warning.is_displayed, "the smoke warning once the stream opened", WITHIN_S)
        occupancy = phone.find_element(By.CLASS_NAME, "occupancy").text
        assert occupancy == "12"
    finally:
        service.terminate()
