"""The residents' pages on a phone (390 × 844, Debian's headless Chromium) in both languages,
against a simulated district: no two labels drawn over each other, nothing past the screen's
edge, gates by their names, each charging port with an estimate of its own and the page
saying how it is made. Screenshots go to test-artifacts/screenshots/ (not committed)."""

from collections.abc import Callable
from datetime import datetime

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.browser import layout_problems, shot
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

LANGUAGES = {"zh": "zh-CN,zh;q=0.9", "en": "en-US,en;q=0.9"}


def _busiest_station(base: str) -> str:
    """The station with the most ports charging now (the simulated district is random)."""
    charging = {}
    for s in httpx.get(f"{base}/api/stations").json():
        ports = httpx.get(f"{base}/api/stations/{s['id']}").json()["ports"]
        charging[s["id"]] = sum(p["state"] == "charging" for p in ports)
    return max(charging, key=lambda sid: charging[sid])


def test_the_residents_pages_read_cleanly_on_a_phone_in_both_languages(
    district: ServiceProcess, browser: Callable[[str], WebDriver]
) -> None:
    base = f"http://127.0.0.1:{district.port}"
    station = _busiest_station(base)
    garage = httpx.get(f"{base}/api/garages/g-cq4").json()
    problems: dict[str, list[str]] = {}
    for language, accept in LANGUAGES.items():
        phone = browser(accept)
        for page, path in (
            ("index", "/"),
            ("station", f"/stations/{station}"),
            ("garage", "/garages/g-cq4"),
            ("missing", "/stations/cs-99"),  # an old sticker
        ):
            phone.get(base + path)
            assert (
                phone.find_element(By.TAG_NAME, "html").get_attribute("lang").startswith(language)
            )
            name = f"phone-{page}-{language}"
            shot(phone, name)
            problems[name] = layout_problems(phone)  # the whole page, not only what shows
            phone.execute_script("window.scrollTo(0, document.body.scrollHeight)")
            shot(phone, f"{name}-end")

            if page == "garage":
                # each gate by its name in the page's language, its state apart from it
                for gate in garage["gates"]:
                    row = phone.find_element(By.CSS_SELECTOR, f'.gate[data-gate="{gate["gate"]}"]')
                    shown = row.find_element(By.CLASS_NAME, "name").text
                    assert shown == (gate["name"] if language == "zh" else gate["name_en"])
                    assert shown != gate["gate"] or gate["name"] == gate["gate"]
            if page == "station":
                # each charging port its own estimate, and the page says how it is made
                estimates = [
                    datetime.fromisoformat(p["free_estimate_at"])
                    for p in httpx.get(f"{base}/api/stations/{station}").json()["ports"]
                    if p["free_estimate_at"]
                ]
                if len(estimates) >= 2:
                    assert len(set(estimates)) > 1, estimates
                assert phone.find_element(By.CLASS_NAME, "estimate-note").text
        # the header's two language buttons side by side, neither over the other
        links = phone.find_elements(By.CSS_SELECTOR, "nav.lang a")
        assert len(links) == 2
    assert not any(problems.values()), problems
