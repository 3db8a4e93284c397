"""The staff console on a wall screen, in Debian's headless Chromium against a simulated
district, in Chinese and in English: places by name, values with units, commands and rules
in the page's language, who acknowledged by name, dates as that language writes them, and
what the service switched off, switched back on from the list once that is allowed.
Screenshots go to test-artifacts/screenshots/ (not committed)."""

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from facilities import admin
from facilities.access import Role
from tests.support.browser import chromium, shot, until
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

WALL = (1600, 900)  # CSS pixels of the property office's wall screen (a 1600 x 900 panel)
STATION = {"zh": "慧兰花园东门车棚充电站", "en": "Huilan Garden, shed by the east gate"}  # cs-20
GARAGE_STATION = {"zh": "长桥四村车库北区充电站", "en": "Changqiao No.4 Village, garage, north bay"}


@pytest.fixture
def wall(tmp_path: Path) -> Iterator[Callable[[str], WebDriver]]:
    made: list[WebDriver] = []

    def start(accept_language: str) -> WebDriver:
        made.append(chromium(tmp_path / f"profile-{len(made)}", accept_language, WALL))
        return made[-1]

    yield start
    for one in made:
        one.quit()


def _sign_in(browser: WebDriver, url: str, token: str) -> None:
    browser.get(url)
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


def _texts(browser: WebDriver, selector: str) -> list[str]:
    """What a person sees of each element matching `selector`, read in one go (the lists
    are drawn again as the district changes)."""
    return list(
        browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
            selector,
        )
    )


def _text(browser: WebDriver, selector: str) -> str:
    return "\n".join(_texts(browser, selector))


def _item(browser: WebDriver, selector: str, needle: str) -> str | None:
    return next((text for text in _texts(browser, selector) if needle in text), None)


def _cutoff(browser: WebDriver, device: str, kind: str) -> str | None:
    """The text of the switched-off entry of `device` (`port_off` with its port, `station`
    for a whole station), or None while it is not drawn."""
    return browser.execute_script(
        "const li = document.querySelector(`#cutoffs li[data-device='${arguments[0]}']"
        "[data-kind='${arguments[1]}']`); return li ? li.innerText : null;",
        device,
        kind,
    )


def _audit(base: str, token: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/audit?limit=1000", headers={"Authorization": f"Bearer {token}"})
    return list(answer.json()["items"])


def test_the_staff_console_on_a_wall_screen_in_chinese_and_english(
    district: ServiceProcess, wall, device
) -> None:
    base = f"http://127.0.0.1:{district.port}"
    staff = asyncio.run(admin.add(district.db, Role.STAFF, "物业 陈经理"))
    rogue = device("rogue")
    # a socket of cs-20 overheats (the rules switch it off) and smoke in garage g-cq4 (every
    # station inside switched off, its gates opened)
    hot = {
        "seq": 990_101,
        "ts": time.time(),
        "ports": [{"port": 3, "state": "charging", "power_w": 200.0, "temp_c": 66.0}],
    }
    rogue.publish_raw("facilities/charging/cs-20/telemetry", json.dumps(hot))
    smoke = {"seq": 990_102, "ts": time.time(), "occupancy": 40, "smoke": True}
    rogue.publish_raw("facilities/garage/g-cq4/telemetry", json.dumps(smoke))

    # English
    en = wall("en-US,en")
    _sign_in(en, f"{base}/staff?lang=en", staff.token)
    hot_alert = until(
        lambda: _item(en, "#alerts li.alert", f"Socket overheating · socket 3 at {STATION['en']}"),
        "the socket's alert, by the station's name",
    )
    assert "66 °C" in hot_alert, hot_alert
    assert f"Switch off · socket 3 at {STATION['en']}:" in hot_alert  # the command, in words
    assert re.search(r"raised \d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}:\d{2}", hot_alert)
    whole = until(lambda: _cutoff(en, "cs-01", "station"), "the garage's stations switched off")
    assert whole.startswith(f"{GARAGE_STATION['en']} (whole station, 10 sockets off) · Smoke")
    assert "Not yet safe to switch on: acknowledge “Smoke” first" in whole
    socket = until(lambda: _cutoff(en, "cs-20", "port_off"), "the socket switched off")
    assert socket.startswith(f"socket 3 at {STATION['en']} · "), socket
    assert "Socket overheating" in socket.split("\n")[0]  # with any other rule that cut it
    assert "Not yet safe to switch on: acknowledge “Socket overheating”" in socket
    shown = _text(en, "#console")
    # ids and raw words stay out of what people read
    assert not re.search(r"\b(cs|g)-\w+", shown.replace(staff.person.id, "")), shown
    assert " max " not in shown and "power_off" not in shown
    shot(en, "staff-console-wall-en")

    # Chinese, on another screen: the same district in Chinese words and dates
    zh = wall("zh-CN,zh;q=0.9")
    _sign_in(zh, f"{base}/staff", staff.token)
    assert zh.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    hot_zh = until(
        lambda: _item(zh, "#alerts li.alert", f"插座过热 · {STATION['zh']} 3号充电口"),
        "the socket's alert in Chinese",
    )
    assert "66 °C" in hot_zh
    assert f"断电 · {STATION['zh']} 3号充电口：" in hot_zh
    assert re.search(r"发生于 \d{4}年\d{1,2}月\d{1,2}日 \d{2}:\d{2}:\d{2}", hot_zh), hot_zh
    whole_zh = until(lambda: _cutoff(zh, "cs-01", "station"), "the stations in Chinese")
    assert "暂不能恢复通电：请先确认“烟雾”告警" in whole_zh
    # no English left in the alerts and what is switched off (units aside), gates by name
    words = _text(zh, "#alerts li, #cutoffs li")
    assert not re.findall(r"[A-Za-z]{3,}", words), words
    shot(zh, "staff-console-wall-zh")

    # acknowledged from the Chinese screen: by name, on both screens
    def acknowledge_all() -> bool:
        buttons = zh.find_elements(By.CSS_SELECTOR, "#alerts button.ack")
        for button in buttons:
            button.click()
        return not buttons and not zh.find_elements(By.CSS_SELECTOR, "#alerts li.state-active")

    until(acknowledge_all, "every alert acknowledged", timeout_s=20)
    until(
        lambda: "已由 物业 陈经理 确认" in (_item(zh, "#alerts li.alert", "插座过热") or ""),
        "who acknowledged, by name (Chinese)",
    )
    until(
        lambda: (
            "acknowledged by 物业 陈经理"
            in (_item(en, "#alerts li.alert", "Socket overheating") or "")
        ),
        "who acknowledged, by name (English)",
    )

    # the socket has cooled (the station reports its own readings again) and its alert is
    # acknowledged: the list offers to switch it on, and does so through the power route
    until(
        lambda: zh.find_elements(
            By.CSS_SELECTOR, "#cutoffs li[data-device='cs-20'][data-port='3'] button.switch-on"
        ),
        "the socket's Switch on button",
        timeout_s=30,
    )
    shot(zh, "staff-console-wall-zh-acknowledged")

    def click_switch_on() -> bool:
        # the live stream may redraw the list between finding the button and clicking it
        try:
            zh.find_element(
                By.CSS_SELECTOR, "#cutoffs li[data-device='cs-20'][data-port='3'] button.switch-on"
            ).click()
        except StaleElementReferenceException:
            return False
        return True

    until(click_switch_on, "the Switch on button clicked")
    until(
        lambda: any(
            (e["kind"], e["action"], e["target"], e["who"], e["outcome"])
            == ("command", "power_on", "cs-20/3", staff.person.id, "acked")
            for e in _audit(base, staff.token)
        ),
        "the power-on sent, acknowledged and audited",
    )
    until(lambda: _cutoff(zh, "cs-20", "port_off") is None, "the socket off the list", 15)
    shot(zh, "staff-console-wall-zh-switched-on")
    until(lambda: _cutoff(en, "cs-20", "port_off") is None, "the English screen following", 15)

    # the smoke is gone and acknowledged: a whole station goes back on from the English
    # screen, port by port through the same route
    whole_on = "#cutoffs li[data-device='cs-01'][data-kind='station'] button.switch-on"
    until(lambda: en.find_elements(By.CSS_SELECTOR, whole_on), "the station's button", 30)
    en.find_element(By.CSS_SELECTOR, whole_on).click()

    def switched_on() -> set[str]:
        return {
            e["target"]
            for e in _audit(base, staff.token)
            if (e["kind"], e["action"], e["who"], e["outcome"])
            == ("command", "power_on", staff.person.id, "acked")
        }

    every_port = {f"cs-01/{n}" for n in range(1, 11)}
    until(lambda: every_port <= switched_on(), "every port of cs-01 switched on", 30)
    until(lambda: _cutoff(en, "cs-01", "station") is None, "the station off the list", 15)
    shot(en, "staff-console-wall-en-switched-on")
