"""Write the Grafana dashboards in deploy/grafana/dashboards/ (`make dashboards`).

Generated rather than hand-edited so that the four dashboards share one style, every panel
reads the `datasource` variable (dashboards provisioned from files cannot use `${DS_…}`
import placeholders), and a test can compare the committed files with this output.
"""

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
Panel = dict[str, Any]


class Layout:
    """Places panels left to right on a 24-column grid, wrapping to the next row."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, panel: Panel, w: int, h: int) -> Panel:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel


def target(expr: str, legend: str = "", *, instant: bool = False, ref: str = "A") -> Panel:
    t: Panel = {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        t |= {"instant": True, "range": False, "format": "table"}
    return t


def panel(kind: str, title: str, targets: list[Panel], *, unit: str = "", **extra: Any) -> Panel:
    p: Panel = {
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": [t | {"refId": chr(65 + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []},
        "options": {},
    }
    p.update(extra)
    return p


def stat(title: str, expr: str, *, unit: str = "", thresholds: list[Panel] | None = None) -> Panel:
    p = panel("stat", title, [target(expr)], unit=unit)
    p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    p["fieldConfig"]["defaults"]["thresholds"] = {
        "mode": "absolute",
        "steps": thresholds or [{"color": "green", "value": None}],
    }
    return p


def series(title: str, targets: list[Panel], *, unit: str = "") -> Panel:
    return panel("timeseries", title, targets, unit=unit)


def timeline(title: str, expr: str, legend: str) -> Panel:
    p = panel("state-timeline", title, [target(expr, legend)])
    p["options"] = {"showValue": "never", "mergeValues": True}
    return p


def dashboard(uid: str, title: str, panels: list[tuple[Panel, int, int]], **extra: Any) -> Panel:
    layout = Layout()
    variables: list[Panel] = [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }
    ]
    variables += extra.pop("variables", [])
    return {
        "uid": uid,
        "title": title,
        "tags": ["facilities"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "links": [{"type": "dashboards", "tags": ["facilities"], "asDropdown": True}],
        "panels": [layout.place(p, w, h) for p, w, h in panels],
        **extra,
    }


def query_variable(name: str, label: str, query: str, *, multi: bool = False) -> Panel:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "hide": 0,
    }


# Free ports and bays carry their community through the info metrics' labels.
BY_COMMUNITY = "* on (instance, station) group_left (community) facilities_station_info"
GARAGE_BY_COMMUNITY = "* on (instance, garage) group_left (community) facilities_garage_info"
COMMUNITY_NAME = (
    "* on (community) group_left (name) max by (community, name) (facilities_community_info)"
)
RED = [{"color": "green", "value": None}, {"color": "red", "value": 1}]


def district() -> Panel:
    free_bays = "(facilities_garage_capacity - facilities_garage_occupancy)"
    return dashboard(
        "facilities-district",
        "facilities — district overview",
        [
            (stat("Free charging ports", "sum(facilities_port_free)"), 5, 4),
            (stat("Ports charging", 'sum(facilities_port_state{state="charging"})'), 5, 4),
            (stat("Free garage bays", f"sum({free_bays})"), 5, 4),
            (stat("Stations online", "sum(facilities_station_online)"), 4, 4),
            (
                stat(
                    "Critical alerts open",
                    'sum(facilities_alerts_open{severity="critical"}) or vector(0)',
                    thresholds=RED,
                ),
                5,
                4,
            ),
            (
                series(
                    "Free ports per community",
                    [
                        target(
                            f"sum by (community) (facilities_port_free {BY_COMMUNITY})"
                            f" {COMMUNITY_NAME}",
                            "{{name}}",
                        )
                    ],
                ),
                12,
                8,
            ),
            (
                series(
                    "Free bays per community",
                    [
                        target(
                            f"sum by (community) ({free_bays} {GARAGE_BY_COMMUNITY})"
                            f" {COMMUNITY_NAME}",
                            "{{name}}",
                        )
                    ],
                ),
                12,
                8,
            ),
            (
                series(
                    "Charging power per community",
                    [
                        target(
                            f"sum by (community) (facilities_port_power_watts {BY_COMMUNITY})"
                            f" {COMMUNITY_NAME}",
                            "{{name}}",
                        )
                    ],
                    unit="watt",
                ),
                12,
                8,
            ),
            (
                panel(
                    "table",
                    "Open alerts",
                    [target("sum by (rule, severity) (facilities_alerts_open)", instant=True)],
                ),
                12,
                8,
            ),
        ],
    )


def station() -> Panel:
    sel = 'station="$station"'
    return dashboard(
        "facilities-station",
        "facilities — station",
        [
            (stat("Online", f"facilities_station_online{{{sel}}}", thresholds=RED), 4, 4),
            (stat("Free ports", f"sum(facilities_port_free{{{sel}}})"), 4, 4),
            (stat("Power", f"sum(facilities_port_power_watts{{{sel}}})", unit="watt"), 4, 4),
            (
                stat(
                    "Cabinet temperature",
                    f"facilities_station_temperature_celsius{{{sel}}}",
                    unit="celsius",
                ),
                4,
                4,
            ),
            (
                stat(
                    "Leakage current",
                    f"facilities_station_leakage_amperes{{{sel}}}",
                    unit="amp",
                ),
                4,
                4,
            ),
            (
                stat(
                    "Last heard",
                    'facilities_device_last_seen_age_seconds{device="$station"}',
                    unit="s",
                ),
                4,
                4,
            ),
            (
                series(
                    "Power per port",
                    [target(f"facilities_port_power_watts{{{sel}}}", "port {{port}}")],
                    unit="watt",
                ),
                12,
                9,
            ),
            (
                series(
                    "Socket temperature per port",
                    [target(f"facilities_port_temperature_celsius{{{sel}}}", "port {{port}}")],
                    unit="celsius",
                ),
                12,
                9,
            ),
            (
                timeline(
                    "Port states", f"facilities_port_state{{{sel}}} > 0", "{{port}} {{state}}"
                ),
                24,
                10,
            ),
        ],
        variables=[
            query_variable("station", "Station", "label_values(facilities_station_info, station)")
        ],
    )


def garages() -> Panel:
    sel = 'garage=~"$garage"'
    return dashboard(
        "facilities-garages",
        "facilities — garages",
        [
            (
                series(
                    "Occupancy and capacity",
                    [
                        target(f"facilities_garage_occupancy{{{sel}}}", "{{garage}} inside"),
                        target(f"facilities_garage_capacity{{{sel}}}", "{{garage}} bays"),
                    ],
                ),
                12,
                9,
            ),
            (
                series(
                    "Gate events (per 5 min)",
                    [
                        target(
                            "sum by (garage, type)"
                            f" (increase(facilities_gate_events_total{{{sel}}}[5m]))",
                            "{{garage}} {{type}}",
                        )
                    ],
                ),
                12,
                9,
            ),
            (
                series(
                    "Denied at the gates (per 5 min: bursts mean someone is trying)",
                    [
                        target(
                            "sum by (garage, gate) (increase(facilities_gate_events_total"
                            f'{{{sel}, type="denied"}}[5m]))',
                            "{{garage}}/{{gate}}",
                        )
                    ],
                ),
                12,
                8,
            ),
            (
                timeline("Gates open", f"facilities_gate_open{{{sel}}}", "{{garage}}/{{gate}}"),
                12,
                8,
            ),
            (
                series(
                    "Garage temperature",
                    [target(f"facilities_garage_temperature_celsius{{{sel}}}", "{{garage}}")],
                    unit="celsius",
                ),
                12,
                8,
            ),
            (
                stat(
                    "Smoke",
                    f"max(facilities_garage_smoke{{{sel}}}) or vector(0)",
                    thresholds=RED,
                ),
                12,
                8,
            ),
        ],
        variables=[
            query_variable(
                "garage", "Garage", "label_values(facilities_garage_info, garage)", multi=True
            )
        ],
    )


def service() -> Panel:
    def p99(metric: str, by: str = "") -> str:
        group = f"le{', ' + by if by else ''}"
        return f"histogram_quantile(0.99, sum by ({group}) (rate({metric}_bucket[5m])))"

    return dashboard(
        "facilities-service",
        "facilities — the service",
        [
            (stat("Broker link", "min(facilities_broker_connected)", thresholds=RED), 6, 4),
            (stat("Reconnects", "sum(facilities_broker_reconnects_total)"), 6, 4),
            (stat("Live-stream clients", "sum(facilities_live_clients)"), 6, 4),
            (stat("Messages waiting", "sum(facilities_ingest_pending_messages)"), 6, 4),
            (
                series(
                    "Messages stored, by kind",
                    [
                        target(
                            "sum by (kind) (rate(facilities_messages_ingested_total[5m]))",
                            "{{kind}}",
                        )
                    ],
                    unit="reqps",
                ),
                12,
                8,
            ),
            (
                series(
                    "Quarantined and duplicate messages",
                    [
                        target(
                            "sum by (reason) (rate(facilities_messages_rejected_total[5m]))",
                            "quarantined: {{reason}}",
                        ),
                        target("sum(rate(facilities_messages_duplicate_total[5m]))", "duplicates"),
                    ],
                    unit="reqps",
                ),
                12,
                8,
            ),
            (
                series(
                    "Ingest: commit and ack lag (p99), batch size (p50)",
                    [
                        target(p99("facilities_ingest_commit_seconds"), "commit p99"),
                        target(p99("facilities_ingest_ack_lag_seconds"), "ack lag p99"),
                        target(
                            "histogram_quantile(0.5, sum by (le)"
                            " (rate(facilities_ingest_batch_messages_bucket[5m])))",
                            "batch size p50 (messages)",
                        ),
                    ],
                    unit="s",
                ),
                12,
                8,
            ),
            (
                series(
                    "Commands by outcome; round trip (p99)",
                    [
                        target(
                            "sum by (action, outcome) (increase(facilities_commands_total[5m]))",
                            "{{action}} {{outcome}}",
                        ),
                        target(
                            p99("facilities_command_roundtrip_seconds", "action"),
                            "round trip p99 {{action}} (s)",
                        ),
                    ],
                ),
                12,
                8,
            ),
            (
                series(
                    "Alerts raised (per 5 min) and open",
                    [
                        target(
                            "sum by (rule) (increase(facilities_alerts_raised_total[5m]))",
                            "raised: {{rule}}",
                        ),
                        target("sum by (severity) (facilities_alerts_open)", "open: {{severity}}"),
                    ],
                ),
                12,
                8,
            ),
            (
                series(
                    "HTTP requests by route and status",
                    [
                        target(
                            "sum by (route, status) (rate(facilities_http_requests_total[5m]))",
                            "{{route}} {{status}}",
                        )
                    ],
                    unit="reqps",
                ),
                12,
                8,
            ),
            (
                series(
                    "HTTP latency (p99) by route",
                    [target(p99("facilities_http_request_duration_seconds", "route"), "{{route}}")],
                    unit="s",
                ),
                12,
                8,
            ),
            (
                series(
                    "Gate-open requests by outcome",
                    [
                        target(
                            "sum by (outcome) (increase(facilities_gate_open_requests_total[5m]))",
                            "{{outcome}}",
                        )
                    ],
                ),
                12,
                8,
            ),
        ],
    )


DASHBOARDS = {
    "district.json": district,
    "station.json": station,
    "garages.json": garages,
    "service.json": service,
}


def render() -> dict[str, str]:
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
