"""Debian's headless Chromium: a window of a given size and language (the residents' pages
are checked on a phone, 390 × 844 CSS pixels; the staff console on a wall screen), what a
page's layout must hold on a phone (no two visible labels drawn over each other, nothing wider
than the screen), screenshots to test-artifacts/screenshots/ (not committed), and waits that
tolerate a page being redrawn."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.paths import ROOT
from tests.support.poll import wait_until

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PHONE = (390, 844)  # CSS pixels of a common phone


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


def phone_browser(user_data: Path, accept_language: str) -> WebDriver:
    """A headless Chromium whose page is exactly PHONE: a headless window cannot be narrower
    than 500 px, so the viewport is set through the DevTools protocol (as a phone would
    report it, at scale 1 so that screenshots are 390 × 844 pixels)."""
    browser = chromium(user_data, accept_language, PHONE)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True},
    )
    return browser


def until(check: Callable[[], Any], what: str, timeout_s: float = 10.0) -> Any:
    """`check` until it is true; a page redrawn meanwhile (a stale element) counts as false."""
    return wait_until(
        check, timeout_s=timeout_s, what=what, interval_s=0.05, ignoring=(WebDriverException,)
    )


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[..., WebDriver]]:
    """`browser(accept_language)`: a phone; every one made is closed after the test."""
    made: list[WebDriver] = []

    def start(accept_language: str = "en-US,en") -> WebDriver:
        made.append(phone_browser(tmp_path / f"profile-{len(made)}", accept_language))
        return made[-1]

    yield start
    for one in made:
        one.quit()


def shot(browser: WebDriver, name: str) -> Path:
    """What the browser shows now, as test-artifacts/screenshots/NAME.png (not committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


# What a reader sees as labels: every visible run of text (a text node, as the boxes of its
# lines) and every button-like box (a link, button or field drawn as an inline box with a
# border or background of its own: its border boxes). Two of them overlap when their boxes share more than SLACK_PX each
# way, unless one holds the other (a button's own text). Also: any label past the screen's
# sides, and the page's own width.
_LAYOUT = """
const slack = arguments[0];
const labels = [];
function visible(el) {
  return !el.closest("script, style, [hidden]") && getComputedStyle(el).visibility === "visible"
    && el.getClientRects().length > 0;
}
function named(el, text) {
  return el.tagName.toLowerCase() + (el.className ? "." + el.className : "") + " "
    + JSON.stringify(text.slice(0, 40));
}
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const text = node.textContent.trim();
  const el = node.parentElement;
  if (!text || !el || !visible(el)) continue;
  const range = document.createRange();
  range.selectNodeContents(node);
  const boxes = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
  if (boxes.length) labels.push({el: el, name: named(el, text), boxes: boxes});
}
for (const el of document.body.querySelectorAll("a, button, input, select, textarea")) {
  const style = getComputedStyle(el);
  const boxed = parseFloat(style.borderTopWidth) > 0
    || style.backgroundColor !== "rgba(0, 0, 0, 0)";
  if (!visible(el) || !boxed || !style.display.startsWith("inline")) continue;
  labels.push({el: el, name: named(el, el.textContent.trim() || el.value || ""),
               boxes: [...el.getClientRects()], box: true});
}
const width = window.innerWidth;
const problems = [];
if (document.documentElement.scrollWidth > width)
  problems.push("the page is " + document.documentElement.scrollWidth + " px wide");
for (const one of labels)
  for (const r of one.boxes)
    if (r.left < -slack || r.right > width + slack)
      problems.push(one.name + " runs past the screen (" + Math.round(r.left) + " to "
                    + Math.round(r.right) + ")");
for (let i = 0; i < labels.length; i++)
  for (let j = i + 1; j < labels.length; j++) {
    const a = labels[i], b = labels[j];
    if ((a.box || b.box) && (a.el.contains(b.el) || b.el.contains(a.el))) continue;
    for (const p of a.boxes) for (const q of b.boxes) {
      const across = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const down = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (across > slack && down > slack)
        problems.push(a.name + " and " + b.name + " overlap (" + Math.round(across) + " x "
                      + Math.round(down) + " px)");
    }
  }
return {problems: problems, viewport: [width, window.innerHeight]};
"""

# Glyph boxes of adjacent lines may touch; a label over another overlaps by far more.
SLACK_PX = 1.0


def layout_problems(browser: WebDriver) -> list[str]:
    """What is wrong with the page's layout on the phone: two labels drawn over each other
    (a gate's name under its state, a language button over the other), a label past the
    screen's edge, or a page wider than the screen. Empty when the page reads cleanly."""
    found: dict[str, Any] = browser.execute_script(_LAYOUT, SLACK_PX)
    assert found["viewport"] == list(PHONE), f"the page is {found['viewport']}, not {PHONE}"
    return list(found["problems"])
