"""What docs/protocol.md states that the code decides, checked against the code: the largest
payload, the measured sizes of a 64-port station's telemetry and of a command, every number's
range in the JSON Schemas, the fault codes that make an alert critical, the command timing,
and the page's own anchors."""

import json
import re
import uuid
from pathlib import Path

import pytest

from facilities.charging.live import FAULT_CRITICAL_CODES
from facilities.charging.payloads import PortReading, PortState, StationEvent, StationTelemetry
from facilities.counted import RECENT_KEPT
from facilities.garage.payloads import GarageTelemetry, GateEvent
from facilities.mqtt.commands import ACK_TIMEOUT_S, EXPIRES_MARGIN_S, TRIES
from facilities.rule_ids import RuleId
from facilities.site import StationEntry
from facilities.thresholds import Thresholds
from facilities.wire import (
    MAX_INTEGER,
    MAX_PAYLOAD_BYTES,
    MAX_PORT,
    Command,
    CommandAck,
    CommandAction,
)
from tests.support.paths import ROOT

# the site file's limit on a station's ports
MAX_PORTS = StationEntry.model_json_schema()["properties"]["ports"]["maximum"]
DOC = ROOT / "docs" / "protocol.md"
SCHEMAS = ROOT / "docs" / "schemas"


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _size_row(label: str) -> int:
    """The byte count of the size table's row that starts with `label`."""
    found = re.search(rf"^\| {re.escape(label)}[^|]*\| ([\d,]+) \|$", _text(), re.M)
    assert found, f"no size row {label!r} in docs/protocol.md"
    return int(found.group(1).replace(",", ""))


def _telemetry(reading: PortReading, **station: object) -> bytes:
    """A 64-port station's telemetry, every port as `reading`, as compact JSON."""
    ports = [reading.model_copy(update={"port": n}) for n in range(1, MAX_PORTS + 1)]
    message = StationTelemetry.model_validate({**station, "ports": ports})
    return message.model_dump_json(exclude_none=True).encode()


def test_the_documented_largest_payload_is_the_one_enforced() -> None:
    assert MAX_PAYLOAD_BYTES == 64 * 1024
    assert "up to **64 KiB** (65,536 bytes" in _text()
    assert "UTF-8 JSON objects of at most 64 KiB" in _text()


def test_the_64_port_sizes_are_measured_with_the_models() -> None:
    assert MAX_PORTS == 64 == MAX_PORT
    # every port as in the protocol's own telemetry example
    realistic = _telemetry(
        PortReading(
            port=1,
            state=PortState.CHARGING,
            voltage_v=229.8,
            current_a=1.42,
            power_w=326.1,
            energy_wh=512.4,
            temp_c=33.0,
        ),
        seq=1042,
        ts=1764400000.5,
        temp_c=31.5,
        leakage_ma=2.1,
        smoke=False,
    )
    # every number as long as JSON writes a float in range: 17 significant digits
    long_measure = 123456789.12345679
    long_temp = -123.45678901234568
    assert len(repr(-long_measure)) == len(repr(long_temp)) == 19
    worst = _telemetry(
        PortReading(
            port=1,
            state=PortState.CHARGING,
            voltage_v=-long_measure,
            current_a=long_measure,
            power_w=long_measure,
            energy_wh=long_measure,
            temp_c=long_temp,
        ),
        seq=MAX_INTEGER,
        ts=4294967295.9999995,  # just under MAX_DEVICE_TIME, 17 digits
        temp_c=long_temp,
        leakage_ma=long_measure,
        smoke=False,
    )
    assert len(realistic) == _size_row("telemetry of a 64-port station, realistic")
    assert len(worst) == _size_row("telemetry of a 64-port station, every number as long")
    assert len(worst) < MAX_PAYLOAD_BYTES
    # the documented buffer advice covers the worst case
    assert "at least 12 KiB for 64 ports" in _text()
    assert len(worst) <= 12 * 1024


def test_the_longest_command_fits_the_documented_size() -> None:
    reason = max((rule.value for rule in RuleId), key=len)
    sent = Command(
        id=uuid.uuid4().hex,  # what the service's commands carry
        ts=1764400301.123456,
        action=CommandAction.POWER_OFF,
        port=MAX_PORTS,
        reason=reason,
        expires=1764400317.123456,
    )
    opened = Command(
        id=uuid.uuid4().hex,
        ts=1764400301.123456,
        action=CommandAction.OPEN,
        reason="app",
        resident="r-0123abcd",
        expires=1764400307.123456,
    )
    documented = re.search(
        r"^\| a command \(the longest the service sends\) \| under (\d+) \|$", _text(), re.M
    )
    assert documented
    for command in (sent, opened):
        assert len(command.model_dump_json(exclude_none=True)) < int(documented.group(1))


def _numbers(schema: object, path: str = "") -> list[tuple[str, dict[str, object]]]:
    """Every integer or number type in a JSON Schema, with where it is."""
    found = []
    if isinstance(schema, dict):
        if schema.get("type") in ("integer", "number"):
            found.append((path, schema))
        for key, value in schema.items():
            found += _numbers(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _numbers(value, f"{path}/{i}")
    return found


SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.schema.json"))


def test_the_schemas_are_there_and_have_numbers() -> None:
    assert len(SCHEMA_FILES) >= 6
    loaded = [json.loads((SCHEMAS / n).read_text(encoding="utf-8")) for n in SCHEMA_FILES]
    assert sum(len(_numbers(schema)) for schema in loaded) > 20


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_every_number_in_the_schemas_has_its_range(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    for path, spec in _numbers(schema):
        assert "minimum" in spec or "exclusiveMinimum" in spec, f"{name}{path}: no lower bound"
        assert "maximum" in spec or "exclusiveMaximum" in spec, f"{name}{path}: no upper bound"


def test_seq_is_a_signed_64_bit_integer_in_schema_and_doc() -> None:
    for name in ("station-telemetry", "station-event", "garage-telemetry", "gate-event"):
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
        seq = schema["properties"]["seq"]
        assert (seq["type"], seq["minimum"], seq["maximum"]) == ("integer", 0, MAX_INTEGER)
        assert seq["format"] == "int64"
    assert MAX_INTEGER == 2**63 - 1
    assert "| `seq` | 0 … 2⁶³−1 (a signed 64-bit integer) |" in _text()


def test_the_critical_fault_codes_are_the_rules() -> None:
    text = _text().split("<!-- critical fault codes -->\n", 1)[1]
    listed = re.match(r"((?:- `[a-z_]+`\n)+)", text)
    assert listed
    assert set(re.findall(r"`([a-z_]+)`", listed.group(1))) == FAULT_CRITICAL_CODES


def test_the_documented_timing_is_the_defaults() -> None:
    t = Thresholds()
    assert (t.command_timeout_s, t.command_tries) == (ACK_TIMEOUT_S, TRIES) == (5.0, 3)
    expires_s = t.command_timeout_s * t.command_tries + EXPIRES_MARGIN_S
    assert expires_s == 16.0
    text = _text()
    assert "5 s × 3 + 1 s = 16 s for a" in text
    assert "`command_failed` 15 s after the first send,\n`expires` 16 s after it" in text
    assert (t.telemetry_interval_s, t.offline_intervals) == (10.0, 3)
    assert "`offline_intervals` (3) intervals without any message" in text
    assert "`overload_samples` (2) samples **in a row**" in text
    assert t.overload_samples == 2
    assert "`clock_skew_s` (600 s)" in text and t.clock_skew_s == 600.0


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_pages_own_anchors_exist() -> None:
    text = _text()
    anchors = {_slug(h.strip()) for h in re.findall(r"^#+ (.+)$", text, re.M)}
    linked = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert linked
    assert sorted(linked - anchors) == []


def test_the_page_cites_nothing_outside_the_repository() -> None:
    for target in re.findall(r"\]\(([^)#]+)", _text()):
        if "://" not in target:
            assert (DOC.parent / target).exists(), target
    assert "../shared" not in _text()
    assert Path(ROOT / "mosquitto.conf").is_file()


def test_the_payload_examples_are_valid_payloads() -> None:
    models = {
        "station-telemetry": StationTelemetry,
        "station-event": StationEvent,
        "garage-telemetry": GarageTelemetry,
        "gate-event": GateEvent,
        "command-ack": CommandAck,
    }
    examples = re.findall(r"<!-- example: ([\w-]+) -->\n```json\n(.*?)```", _text(), re.S)
    assert {name for name, _ in examples} == set(models)
    for name, body in examples:
        payload = models[name].model_validate_json(body)
        assert payload.extra_field_count() == 0, name


def test_the_duplicate_window_is_the_filters() -> None:
    assert RECENT_KEPT == 2048
    assert "among that\n  topic's last 2,048 messages" in _text()
