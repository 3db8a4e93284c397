"""Metrics as Prometheus and Grafana see them: checked by Prometheus's own tools, scraped by a
real Prometheus server, and the shipped dashboards query only what /metrics exposes."""

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from facilities.mosquitto import free_port
from tests.support.paths import ROOT
from tests.support.poll import wait_until
from tests.support.processes import ServiceProcess

PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
RULES_TEST = ROOT / "tests" / "prometheus" / "rules_test.yml"
METRIC = re.compile(r"\bfacilities_[a-z_]+\b")


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    for args in (
        ("check", "config", str(PROMETHEUS / "prometheus.yml")),
        ("check", "rules", str(PROMETHEUS / "rules.yml")),
        ("test", "rules", str(RULES_TEST)),
    ):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_name_no_scrape_job() -> None:
    """An existing Prometheus may call the job anything: the rules must not depend on it."""
    text = (PROMETHEUS / "rules.yml").read_text()
    assert not re.search(r"\bjob\s*=~?\s*\"", text)


def test_the_scrape_job_merges_into_an_existing_config(tmp_path) -> None:
    """docs/observability.md, "Prometheus": the shipped job and rule file added to a config
    that has its own (here a node exporter's, with its own rule file) pass promtool."""
    shipped = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (tmp_path / "node-rules.yml").write_text("groups: []\n")
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path / "facilities-rules.yml")
    existing = {
        "global": {"scrape_interval": "30s"},
        "rule_files": ["node-rules.yml"],
        "scrape_configs": [
            {"job_name": "node", "static_configs": [{"targets": ["127.0.0.1:9100"]}]}
        ],
    }
    existing["rule_files"].append("facilities-rules.yml")
    existing["scrape_configs"] += shipped["scrape_configs"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(existing))
    result = _promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout or "facilities-rules.yml" in result.stdout
    documented = (ROOT / "docs" / "observability.md").read_text()
    assert "job_name: facilities" in documented and "facilities-rules.yml" in documented


def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is missing: Debian's prometheus-alertmanager (make system-tests)")
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=60, check=False)


def test_amtool_accepts_the_shipped_alertmanager_config() -> None:
    result = _amtool("check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        # a safety rule fired, the service is down: the staff on duty at once (WeCom, email)
        (["alertname=FacilitiesCriticalAlertOpen", "severity=critical"], "facilities-now"),
        (["alertname=FacilitiesDown", "severity=critical"], "facilities-now"),
        # a station offline: in the day's digest
        (["alertname=FacilitiesStationOffline", "severity=warning"], "facilities-digest"),
        (["alertname=FacilitiesDeviceSilent", "severity=warning"], "facilities-digest"),
        # someone else's alert keeps the existing config's receiver
        (["alertname=NodeDown", "severity=critical"], "default"),
    ],
)
def test_alertmanager_routes_critical_at_once_and_warnings_to_the_digest(
    labels: list[str], receiver: str
) -> None:
    result = _amtool("config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_the_alertmanager_config_has_a_wecom_and_an_email_receiver() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert receivers["facilities-now"]["wechat_configs"]
    assert receivers["facilities-now"]["email_configs"]
    assert receivers["facilities-digest"]["email_configs"]
    digest = next(r for r in config["route"]["routes"] if r["receiver"] == "facilities-digest")
    assert digest["active_time_intervals"] == ["office-hours"]
    # every severity the rules use is routed
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    severities = {r["labels"]["severity"] for g in rules["groups"] for r in g["rules"]}
    assert severities == {"critical", "warning"}


def test_every_alert_rule_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    tests = yaml.safe_load(RULES_TEST.read_text())
    tested_firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested_firing
    assert len(alerts) >= 9


def test_the_dashboards_are_generated_and_use_a_datasource_variable() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "scripts" / "dashboards.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered: dict[str, str] = module.render()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS.glob("*.json"))
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, f"{name} is stale: run `make dashboards`"
        assert "${DS_" not in text
        board = json.loads(text)
        assert board["templating"]["list"][0]["type"] == "datasource"
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"


def _metrics(service: ServiceProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{service.port}/metrics").text


def _exposed(text: str) -> set[str]:
    """Metric names a query may use: samples, and every family (with its histogram and
    counter series names) even before it has a sample."""
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@pytest.mark.slow
def test_live_metrics_pass_promtool(district: ServiceProcess) -> None:
    text = _metrics(district)
    result = _promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""  # no lint complaint either
    assert text.count("facilities_port_power_watts{") == 200  # 20 stations x 10 ports
    assert 'facilities_station_info{community="cq4",garage="g-cq4",name="' in text


@pytest.mark.slow
def test_the_dashboards_query_only_what_metrics_exposes(district: ServiceProcess) -> None:
    exposed = _exposed(_metrics(district))
    for board in DASHBOARDS.glob("*.json"):
        queried = set(METRIC.findall(board.read_text()))
        assert queried, board.name
        missing = queried - exposed
        assert not missing, f"{board.name} queries {sorted(missing)}, not in /metrics"
    rules = set(METRIC.findall((PROMETHEUS / "rules.yml").read_text()))
    assert not rules - exposed, f"rules.yml queries {sorted(rules - exposed)}"


# -- a real Prometheus ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(district: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on loopback scraping the service every second, with the shipped rules."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is missing: `make test` installs Debian's prometheus package"
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "facilities",
                "static_configs": [{"targets": [f"127.0.0.1:{district.port}"]}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _poll(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, "ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _poll(check: Any, what: str, timeout_s: float = 30.0) -> None:
    wait_until(check, timeout_s=timeout_s, what=what, interval_s=0.25, ignoring=(httpx.HTTPError,))


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.slow
def test_prometheus_scrapes_the_devices_and_an_overload_fires_its_alert(
    prometheus: str, device
) -> None:
    _poll(lambda: len(_query(prometheus, "facilities_port_power_watts")) == 200, "port series")
    assert len(_query(prometheus, "facilities_garage_occupancy")) == 5
    assert _query(prometheus, "sum(facilities_station_online)")[0]["value"][1] == "20"
    free = _query(
        prometheus,
        "sum by (community) (facilities_port_free"
        " * on (instance, station) group_left (community) facilities_station_info)",
    )
    assert {r["metric"]["community"] for r in free} >= {"cq4", "cq8", "hc3", "hc4", "hc5"}

    # An overload on cs-05, port 3, sent as a misbehaving device would (the test's rogue
    # user may write anything): the service raises port_overload, Prometheus pages.
    rogue = device("rogue")
    for seq in (900_001, 900_002):
        body = {
            "seq": seq,
            "ts": time.time(),
            "ports": [{"port": 3, "state": "charging", "power_w": 1250.0}],
        }
        rogue.publish_raw("facilities/charging/cs-05/telemetry", json.dumps(body))

    def firing() -> bool:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "FacilitiesCriticalAlertOpen"
            and a["labels"].get("rule") == "port_overload"
            and a["state"] == "firing"
            for a in alerts
        )

    _poll(firing, "FacilitiesCriticalAlertOpen{rule=port_overload} firing")
