"""docs/schemas/asyncapi.json: generated from the wire models (`make schemas`), committed as
generated, and valid AsyncAPI 3.0 by the AsyncAPI CLI (`@asyncapi/cli` from the npm
registry, installed once per machine into a cache outside the checkout)."""

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from facilities.asyncapi import CHANNELS, FILE_NAME, MODELS, render_asyncapi
from facilities.mqtt.rejections import Rejection
from facilities.mqtt.topics import Topics
from tests.support.paths import ROOT

DOCUMENT = ROOT / "docs" / "schemas" / FILE_NAME
CLI_PACKAGE = "@asyncapi/cli"
CLI_VERSION = "6.2.0"
# Once per machine, outside the checkout (so nothing to git-ignore, and a fresh clone in CI
# reuses it); FACILITIES_TOOLS_CACHE moves it.
CACHE = Path(os.environ.get("FACILITIES_TOOLS_CACHE", Path.home() / ".cache" / "facilities"))
INSTALL_TIMEOUT_S = 900.0


def test_the_committed_document_is_the_generated_one() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render_asyncapi(), "run `make schemas`"


def test_the_rejected_schema_is_what_the_service_publishes() -> None:
    """The `…/rejected` payload is described by hand (bounded like the devices' own seq and
    ts); its fields and which are required must stay those of the model the service sends."""
    schema = json.loads(render_asyncapi())["components"]["schemas"]["Rejected"]
    assert set(schema["properties"]) == set(Rejection.model_fields)
    required = {name for name, field in Rejection.model_fields.items() if field.is_required()}
    assert set(schema["required"]) == required


def test_every_topic_of_the_protocol_is_a_channel() -> None:
    document = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert document["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in document["channels"].values()}
    topics = Topics()
    # every device topic the service parses, with parameters for the ids
    for route_topic in (
        topics.station("{station}", "telemetry"),
        topics.station("{station}", "event"),
        topics.station("{station}", "availability"),
        topics.station("{station}", "command"),
        topics.station("{station}", "command/ack"),
        topics.station("{station}", "rejected"),
        topics.garage("{garage}", "telemetry"),
        topics.garage("{garage}", "availability"),
        topics.garage("{garage}", "rejected"),
        topics.gate("{garage}", "{gate}", "event"),
        topics.gate("{garage}", "{gate}", "command"),
        topics.gate("{garage}", "{gate}", "command/ack"),
        topics.service_status(),
    ):
        assert route_topic in addresses
    assert len(addresses) == len(CHANNELS)
    # the payloads are the wire models' schemas
    schemas = document["components"]["schemas"]
    for model in MODELS.values():
        assert schemas[model.__name__]["properties"].keys() == model.model_fields.keys()


def _cli() -> Path:
    """The AsyncAPI CLI, installed into the cache on first use (a lock keeps two test
    sessions from installing at once)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed for the AsyncAPI CLI (Debian's `npm` package)")
    prefix = CACHE / f"asyncapi-cli-{CLI_VERSION}"
    binary = prefix / "node_modules" / ".bin" / "asyncapi"
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            subprocess.run(
                [
                    npm,
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                    str(prefix),
                    f"{CLI_PACKAGE}@{CLI_VERSION}",
                ],
                check=True,
                timeout=INSTALL_TIMEOUT_S,
                capture_output=True,
            )
    return binary


@pytest.mark.slow
def test_the_asyncapi_cli_finds_the_document_valid(tmp_path: Path) -> None:
    cli = _cli()
    # no usage metrics sent anywhere: CI=true and the CLI's own setting say so
    settings = tmp_path / "asyncapi-analytics.json"
    settings.write_text(
        json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "test"})
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "CI": "true",
        "ASYNCAPI_METRICS_CONFIG_PATH": str(settings),
        "SUPPRESS_NO_CONFIG_WARNING": "1",
    }
    result = subprocess.run(
        [str(cli), "validate", str(DOCUMENT), "--fail-severity", "warn"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "is valid" in out, out
