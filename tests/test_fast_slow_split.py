"""What only a test marked slow may start (tests/support/split.py): the service, the demo,
the simulated district, a browser, Prometheus; not the broker or a one-off command."""

import pytest

from tests.support.split import slow_argv

PYTHON = "/work/.venv/bin/python"


@pytest.mark.parametrize(
    ("argv", "slow"),
    [
        ([PYTHON, "-m", "facilities", "--log-level", "INFO", "run", "--site", "s.toml"], True),
        (["/repo/.venv/bin/facilities", "simulate", "--speed", "10"], True),
        ([PYTHON, "-m", "facilities", "demo"], True),
        (["/usr/bin/chromedriver", "--port=4444"], True),
        (["prometheus", "--config.file=p.yml"], True),
        ([PYTHON, "-m", "facilities", "broker-config", "--site", "s.toml", "--out", "run"], False),
        ([PYTHON, "-m", "facilities", "staff", "add", "--db", "f.db"], False),
        ([PYTHON, "-m", "facilities", "--log-level=INFO", "schemas", "--out=/tmp/run"], False),
        (["/usr/sbin/mosquitto", "-c", "mosquitto.conf"], False),
        (["promtool", "check", "rules", "alerts.yml"], False),
        ([PYTHON, "bench/load.py", "--rate", "10"], False),
    ],
)
def test_what_only_a_slow_test_may_start(argv: list[str], slow: bool) -> None:
    assert slow_argv(argv) is slow
