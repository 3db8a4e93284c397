"""Debian's headless Chromium for the browser tests: a window of a given size and language,
screenshots to test-artifacts/screenshots/ (not committed), waits that tolerate a page
being redrawn."""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.paths import ROOT
from tests.support.poll import wait_until

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def chromium(user_data: Path, accept_language: str, size: tuple[int, int]) -> WebDriver:
    """A headless Chromium of `size` CSS pixels asking for `accept_language`."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    assert driver, "chromedriver is missing: `make test` installs Debian's chromium-driver"
    options = Options()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # this machine's network is closed: no background fetches, no update checks
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={user_data}",
        f"--window-size={size[0]},{size[1]}",
        # --lang does not change the Accept-Language header; --accept-lang does
        f"--accept-lang={accept_language}",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    browser.set_page_load_timeout(20)
    return browser


def shot(browser: WebDriver, name: str) -> Path:
    """The window as it is now, as test-artifacts/screenshots/NAME.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def until(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """`check` until it is true; a page redrawn meanwhile (a stale element) counts as false."""
    return wait_until(
        check, timeout_s=timeout_s, what=what, interval_s=0.05, ignoring=(WebDriverException,)
    )
