"""The residents' pages, QR codes and the staff console page, through the real app: both
languages, counts from the live state, no external resources, complete catalogs."""

import io
import json
import re

import pytest
import segno
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from facilities.access import Role
from facilities.api.web.i18n import choose
from facilities.api.web.labels import console_labels, labels
from facilities.rule_ids import RuleId
from facilities.switch_on import Hold
from facilities.wire import CommandAction
from tests.api_support import Api, bearer
from tests.support.db import query
from tests.support.paths import ROOT
from tests.support.payloads import port, telemetry
from tests.support.poll import wait_for

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}


def _counts(html: str) -> dict[str, int]:
    """station id → free ports as the index page shows them."""
    found = re.findall(r'data-station="([\w-]+)".*?class="free-count">(\d+)</b>', html, flags=re.S)
    return {sid: int(n) for sid, n in found}


async def test_the_index_speaks_the_browsers_language(api: Api) -> None:
    zh = await api.http.get("/", headers=ZH)
    assert zh.status_code == 200
    assert '<html lang="zh-CN">' in zh.text
    assert "长桥四村" in zh.text
    assert "个充电口空闲" in zh.text
    en = await api.http.get("/", headers=EN)
    assert '<html lang="en">' in en.text
    assert "Changqiao No.4 Village" in en.text
    assert "ports free" in en.text
    assert "个充电口空闲" not in en.text
    # no preference stated: Chinese, the district's language; the switch wins over the
    # browser and is remembered
    assert '<html lang="zh-CN">' in (await api.http.get("/")).text
    switched = await api.http.get("/?lang=en", headers=ZH)
    assert '<html lang="en">' in switched.text
    assert switched.cookies.get("lang") == "en"
    again = await api.http.get("/stations/cs-01", headers=ZH)  # the client keeps the cookie
    assert '<html lang="en">' in again.text
    both = re.findall(r'<nav class="lang".*?</nav>', en.text, flags=re.S)[0]
    assert "?lang=zh" in both
    assert "?lang=en" in both


async def test_pages_show_the_live_state(api: Api, device) -> None:
    cs = device("cs-02")
    cs.publish_raw(
        "facilities/charging/cs-02/telemetry",
        json.dumps(
            telemetry(
                1,
                [port(1, "charging", power_w=240.0), port(2, "disabled")]
                + [port(n) for n in range(3, 11)],
            )
        ),
    )
    garage = device("g-cq8")
    garage.publish_raw(
        "facilities/garage/g-cq8/telemetry", json.dumps({"seq": 1, "ts": 1.8e9, "occupancy": 90})
    )
    db = api.service.settings.db
    await wait_for(lambda: query(db, "SELECT count(*) FROM garage_samples") == [(1,)], what="g")
    await wait_for(lambda: query(db, "SELECT count(*) FROM station_samples") == [(1,)], what="s")
    index = (await api.http.get("/", headers=EN)).text
    listed = {s["id"]: s["ports_free"] for s in (await api.http.get("/api/stations")).json()}
    assert _counts(index) == listed
    assert _counts(index)["cs-02"] == 8
    full = re.search(r'<a class="card garage([^"]*)"\s+data-garage="g-cq8"', index)
    assert full is not None
    assert "is-full" in full.group(1)
    page = (await api.http.get("/stations/cs-02", headers=EN)).text
    assert re.search(
        r'data-port="1">\s*<span class="num">1</span>\s*<span class="state">Charging', page
    )
    assert "240 W · charged by about" in page
    assert re.search(
        r'data-port="2">\s*<span class="num">2</span>\s*<span class="state">Switched off', page
    )
    zh = (await api.http.get("/stations/cs-02", headers=ZH)).text
    assert "充电中" in zh
    assert "已断电" in zh
    garage_page = (await api.http.get("/garages/g-cq8", headers=ZH)).text
    assert "已满" in garage_page
    missing = await api.http.get("/stations/cs-99", headers=ZH)
    assert missing.status_code == 404
    assert "找不到这个页面" in missing.text  # a page in the visitor's language, not JSON
    assert 'href="/?lang=zh"' in missing.text
    assert (await api.http.get("/garages/nope", headers=EN)).status_code == 404


def _smoke_warning(html: str) -> str | None:
    """The smoke warning a page shows (None when it shows none)."""
    found = re.search(r'<p class="smoke-warning"([^>]*)>(.*?)</p>', html, flags=re.S)
    if found is None or "hidden" in found.group(1):
        return None
    return found.group(2).strip()


def _garage_card(html: str, garage: str) -> str:
    found = re.search(rf'<a class="card garage[^"]*"\s+data-garage="{garage}".*?</a>', html, re.S)
    assert found is not None, garage
    return found.group(0)


async def test_a_smoking_garage_warns_residents_on_its_pages_until_the_alert_clears(
    api: Api, device, gates, clock
) -> None:
    gates("g-cq4")  # its gates open when told to
    garage = device("g-cq4")

    def report(seq: int, *, smoke: bool) -> None:
        body = {"seq": seq, "ts": clock(), "occupancy": 40, "smoke": smoke}
        garage.publish_raw("facilities/garage/g-cq4/telemetry", json.dumps(body))

    def smoke_alert() -> str | None:
        alert = api.service.live.read(lambda e: e.alerts.get(("smoke", "g-cq4")))
        return alert.state.value if alert else None

    report(1, smoke=True)
    await wait_for(lambda: smoke_alert() == "active", what="the smoke alert")
    warnings = {
        "zh": "检测到烟雾，请勿进入！车库门已全部打开",
        "en": "Smoke detected — keep out; gates held open",
    }
    for headers, lang in ((ZH, "zh"), (EN, "en")):
        page = (await api.http.get("/garages/g-cq4", headers=headers)).text
        assert _smoke_warning(page) == warnings[lang]
        card = _garage_card((await api.http.get("/", headers=headers)).text, "g-cq4")
        assert "has-smoke" in card.split(">")[0]
        assert warnings[lang] in card
        assert _smoke_warning((await api.http.get("/garages/g-cq8", headers=headers)).text) is None
    listed = {g["id"]: g["smoke_alert"] for g in (await api.http.get("/api/garages")).json()}
    assert listed["g-cq4"] is True
    assert listed["g-cq8"] is False
    assert (await api.http.get("/api/garages/g-cq4")).json()["smoke_alert"] is True

    # the smoke is gone; the alert clears after `clear_after_s` and the warning with it
    report(2, smoke=False)
    await wait_for(
        lambda: api.service.live.read(lambda e: e.garages["g-cq4"].smoke) is False,
        what="no smoke",
    )
    clock.advance(61)
    await wait_for(lambda: smoke_alert() in (None, "cleared"), what="the alert cleared")
    for headers in (ZH, EN):
        assert _smoke_warning((await api.http.get("/garages/g-cq4", headers=headers)).text) is None
        card = _garage_card((await api.http.get("/", headers=headers)).text, "g-cq4")
        assert "has-smoke" not in card.split(">")[0]
    assert (await api.http.get("/api/garages/g-cq4")).json()["smoke_alert"] is False


async def test_pages_load_nothing_from_elsewhere(api: Api) -> None:
    for path in ("/", "/stations/cs-01", "/garages/g-cq4", "/staff", "/qr"):
        html = (await api.http.get(path)).text
        assert not re.search(r'(src|href)="(https?:)?//', html), path
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            assert (await api.http.get(asset)).status_code == 200, asset
        assert "script-src 'self'" in (await api.http.get(path)).headers["content-security-policy"]
    css = (await api.http.get("/static/app.css")).text
    assert "@import" not in css
    assert "url(" not in css


async def test_qr_codes_hold_the_public_page_address_and_nothing_more(api: Api) -> None:
    svg = await api.http.get("/stations/cs-07/qr.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    expected = io.BytesIO()
    segno.make_qr("http://127.0.0.1:8000/stations/cs-07", error="m").save(
        expected, kind="svg", scale=4, border=4, xmldecl=False
    )
    assert svg.content == expected.getvalue()  # the page's URL: no token, no API path
    assert (await api.http.get("/garages/g-hc3/qr.svg")).status_code == 200
    assert (await api.http.get("/stations/nope/qr.svg")).status_code == 404
    sheet = (await api.http.get("/qr")).text
    assert sheet.count('class="sticker"') == 25
    assert "http://127.0.0.1:8000/garages/g-hc3" in sheet  # the listen address, not Host


async def test_the_staff_console_page_needs_a_token_to_show_anything(api: Api) -> None:
    page = await api.http.get("/staff", headers=ZH)
    assert page.status_code == 200
    assert 'id="login"' in page.text
    assert "物业控制台" in page.text
    # the console's data comes from the staff API, which wants a staff token
    assert (await api.http.get("/api/alerts")).status_code == 401
    _sid, token = await api.person(Role.STAFF, "s")
    assert (await api.http.get("/api/alerts", headers=bearer(token))).status_code == 200


def test_every_text_of_the_pages_has_a_chinese_translation() -> None:
    web = ROOT / "facilities" / "api" / "web"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    extracted = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(web), method_map, options_map=options
        )
    }
    assert len(extracted) > 40
    with (web / "locale" / "zh" / "LC_MESSAGES" / "messages.po").open("rb") as source:
        catalog = read_po(source)
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(extracted - set(translated))
    assert not missing, f"no Chinese for {missing}: run `make messages` and translate"


@pytest.mark.parametrize(
    ("query", "cookie", "header", "expected"),
    [
        (None, None, "zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        (None, None, "en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        (None, None, "fr-FR,zh-TW;q=0.5", "zh"),  # the best of what we have
        (None, None, "zh;q=0, en;q=0.1", "en"),  # q=0: not acceptable
        (None, None, "de-DE", "en"),  # a language we lack: English, not the district's
        (None, None, None, "zh"),  # no preference stated: the district's language
        (None, None, "", "zh"),
        (None, None, "*", "zh"),
        (None, None, "*, en;q=0.5", "zh"),  # anything, English less: Chinese
        (None, None, "zh;q=0, *", "en"),  # anything but Chinese
        (None, None, "zh-CN;q=garbage", "en"),  # a broken quality counts as 0
        ("zh", "en", "en", "zh"),  # the switch first
        ("xx", "zh", "en", "zh"),  # then the remembered choice
        (None, "en", "zh-CN", "en"),
    ],
)
def test_the_language_is_chosen_as_a_visitor_expects(query, cookie, header, expected) -> None:
    assert choose(query, cookie, header) == expected


def test_the_console_names_every_rule_in_both_languages() -> None:
    """The staff console (staff.js) shows `labels.rules[rule]`: a name for every `RuleId`
    from the catalogs, in both languages, and no name for a rule that is gone."""
    zh, en = labels("zh")["rules"], labels("en")["rules"]
    assert set(zh) == set(RuleId)
    assert set(en) == set(RuleId)
    assert all(zh[r] != en[r] for r in RuleId)  # translated, not the English again


# The rules whose alerts carry no `value` (docs/rules.md: a smoke detector, a fault event, a
# forced gate and a failed command are facts, not measures); every other rule's value is
# written with its unit.
NO_VALUE = {RuleId.SMOKE, RuleId.DEVICE_FAULT, RuleId.GATE_FORCED, RuleId.COMMAND_FAILED}


@pytest.mark.parametrize("language", ["zh", "en"])
def test_the_console_writes_every_value_command_and_reason_in_words(language: str) -> None:
    """staff.js writes an alert's value through `values[rule]`, a command through
    `commands[action]`, an outcome through `outcomes`, and why a port stays off through
    `blocked[reason]`: none of them may fall back to the raw id ("max", "power_off")."""
    console, page = console_labels(language), labels(language)
    assert set(console["values"]) == set(RuleId) - NO_VALUE
    for how in console["values"].values():
        assert "%(value)s" in how["text"]
        assert how["digits"] in (0, 1)
    assert set(console["commands"]) == set(CommandAction)
    outcomes = set(page["outcomes"]) | set(console["outcomes"])
    assert outcomes == {"pending", "acked", "refused", "timeout", "abandoned"}  # docs/api.md
    assert set(console["blocked"]) == set(Hold)
    assert set(console["refused"]) == {409, 502, 503, 504}
    if language == "zh":
        english = console_labels("en")
        assert console["commands"] != english["commands"]
        assert console["blocked"] != english["blocked"]
        assert console["station_part"] != english["station_part"]


async def test_the_console_page_names_places_in_its_language(api: Api) -> None:
    """Stations and garages by their names (the console's JSON and its station list), and
    the console's texts in the page's language."""
    site = api.service.site
    for headers, language in ((ZH, "zh"), (EN, "en")):
        html = (await api.http.get("/staff", headers=headers)).text
        places = json.loads(_script(html, "places"))
        named = {s.id: s.name if language == "zh" else s.name_en for s in site.stations.values()}
        assert places["stations"] == named
        garages = {g.id: g.name if language == "zh" else g.name_en for g in site.garages.values()}
        assert places["garages"] == garages
        options = re.findall(r'<option value="([\w-]+)"[^>]*>([^<]*)</option>', html)
        assert len(options) == len(site.stations)
        assert all(text == named[sid] for sid, text in options)  # the name, not the id
        assert json.loads(_script(html, "console-labels")) == json.loads(
            json.dumps(console_labels(language))
        )


def _script(html: str, element_id: str) -> str:
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert found, f"no {element_id} in the page"
    return found.group(1)
