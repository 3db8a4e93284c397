"""Each option is said once: `--help`, docs/operations.md and the environment agree."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facilities.cli import build_parser
from facilities.errors import UsageError
from facilities.options import Options, default_text, from_arguments
from facilities.settings import (
    BrokerConfigSettings,
    DemoSettings,
    GlobalSettings,
    PeopleSettings,
    ResidentAddSettings,
    Settings,
    SimulateSettings,
)

DOCS = Path(__file__).resolve().parents[1] / "docs" / "operations.md"

GLOBAL = "facilities --log-level LEVEL --log-format FORMAT COMMAND …"

# Each section of docs/operations.md, "Options": its settings and the commands it covers, each
# as its words and the arguments it must be given besides the options.
Command = tuple[list[str], list[str]]
SECTIONS: dict[str, tuple[type[Options], list[Command]]] = {
    "facilities run": (Settings, [(["run"], [])]),
    "facilities demo": (DemoSettings, [(["demo"], [])]),
    "facilities simulate": (SimulateSettings, [(["simulate"], [])]),
    "facilities broker-config": (BrokerConfigSettings, [(["broker-config"], ["--out", "d"])]),
    "facilities residents add": (
        ResidentAddSettings,
        [(["residents", "add"], ["--name", "王", "--garage", "g-1"])],
    ),
    "facilities staff add": (
        PeopleSettings,
        [
            (["staff", "add"], ["--name", "陈"]),
            (["residents", "list"], []),
            (["residents", "revoke"], ["r-1"]),
            (["staff", "list"], []),
            (["staff", "revoke"], ["s-1"]),
            (["backup"], ["copy.db"]),
        ],
    ),
    # the options of every command, before `check-site site.toml` and after it
    GLOBAL: (GlobalSettings, [([], []), (["check-site", "site.toml"], [])]),
}

# A value each option can take that is not its default: the variable must bring it in.
SAMPLES = {
    "site": "/srv/facilities/site.toml",
    "broker": "mqtt://facilities:s3cret@broker.example:1884",
    "broker-ca": "/etc/facilities/broker-ca.crt",
    "db": "/srv/facilities/f.db",
    "listen": "0.0.0.0:8080",
    "connect-timeout": "7.5",
    "client-id": "facilities-2",
    "topic-prefix": "district",
    "partition": "1/3",
    "opens-per-minute": "9",
    "public-url": "https://bikes.example.cn",
    "auth-failures-per-minute": "3",
    "trusted-proxy": "10.0.0.0/8",
    "cors-origin": "https://app.example.org",
    "client-timeout": "4",
    "max-connections": "50",
    "quarantine-per-device-hour": "7",
    "quarantine-retention-days": "3",
    "audit-retention-days": "90",
    "telemetry-retention-days": "7",
    "bucket-retention-days": "365",
    "event-retention-days": "60",
    "speed": "5",
    "scenario": "overload",
    "run-for": "12",
    "credentials": "/srv/facilities/credentials.toml",
    "broker-group": "facilities-ops",
    "log-level": "DEBUG",
    "log-format": "json",
}


def _documented() -> dict[str, dict[str, tuple[str, set[str]]]]:
    """Section title → option → (its variable, the defaults its row names)."""
    text = DOCS.read_text(encoding="utf-8").split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, dict[str, tuple[str, set[str]]]] = {}
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        if line.startswith("### "):
            title = line.removeprefix("### ").split("`")[1]
            rows = sections.setdefault(title, {})
        elif line.startswith("| `--"):
            option, env, default = (cell.strip() for cell in line.split("|")[1:4])
            values = set(re.findall(r"`([^`]*)`", default)) | (
                {""} if "empty" in default else set()
            )
            rows[option.strip("`")] = (env.strip("`"), values)
    return sections


def _environment() -> dict[str, str]:
    """This process's environment without any FACILITIES_* variable."""
    return {key: text for key, text in os.environ.items() if not key.startswith("FACILITIES_")}


def _helped(argv: list[str]) -> dict[str, tuple[str, str]]:
    """`facilities ARGV --help` as it prints it: option → (its variable, its default)."""
    done = subprocess.run(
        [sys.executable, "-m", "facilities", *argv, "--help"],
        capture_output=True,
        text=True,
        env={**_environment(), "COLUMNS": "1000"},  # a default is not wrapped
        check=True,
        timeout=30,
    )
    found = {}
    options = r"^\s+(--[\w-]+) [A-Z_]+\s.*?\(env (FACILITIES_\w+); default ([^)]*)\)$"
    for match in re.finditer(options, done.stdout, flags=re.MULTILINE | re.DOTALL):
        found[match[1]] = (match[2], match[3])
    return found


def test_every_section_of_the_docs_is_a_command_with_options() -> None:
    assert set(_documented()) == set(SECTIONS)


@pytest.mark.slow
@pytest.mark.parametrize("title", SECTIONS)
def test_help_and_the_docs_list_the_same_options_and_defaults(title: str) -> None:
    model, commands = SECTIONS[title]
    documented = _documented()[title]
    for words, _ in commands:
        helped = _helped(words)
        # a command's --help also lists the options every command takes after its name
        said = documented | (_documented()[GLOBAL] if words else {})
        assert set(helped) == set(said), words
        for flag, (env, default) in helped.items():
            documented_env, documented_defaults = said[flag]
            assert env == documented_env, flag
            assert default in documented_defaults, (flag, default, documented_defaults)
    assert {f"--{option.flag}" for _, option, _ in model.options()} == set(documented)


def test_the_commands_table_names_every_option() -> None:
    table = DOCS.read_text(encoding="utf-8").split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    for command in ("run", "demo", "simulate", "broker-config"):
        row = next(
            line for line in table.splitlines() if line.startswith(f"| `facilities {command} ")
        )
        usage = row.split("`")[1]
        model = SECTIONS[f"facilities {command}"][0]
        declared = {f"--{option.flag}" for _, option, _ in model.options()}
        assert declared <= set(re.findall(r"--[\w-]+", usage)), command


def _cases() -> list[tuple[str, Command, type[Options]]]:
    return [
        (option.flag, command, model)
        for model, commands in SECTIONS.values()
        for command in commands
        for _, option, _ in model.options()
    ]


def _parse(command: Command, extra: list[str], model: type[Options]) -> Options:
    """The settings of `command` given the options `extra`."""
    words, arguments = command
    argv = [*extra, "check-site", "site.toml"] if not words else [*words, *arguments, *extra]
    return from_arguments(build_parser().parse_args(argv), model)


@pytest.mark.parametrize(("flag", "command", "model"), _cases())
def test_every_option_reads_its_variable(
    flag: str, command: Command, model: type[Options], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flag, its variable and the settings themselves read the same value; a flag wins
    over its variable."""
    name, option, field = next(found for found in model.options() if found[1].flag == flag)
    for _, other, _ in model.options():
        monkeypatch.delenv(other.env, raising=False)
    default = getattr(_parse(command, [], model), name)
    flagged = getattr(_parse(command, [f"--{flag}", SAMPLES[flag]], model), name)
    assert flagged != default

    monkeypatch.setenv(option.env, SAMPLES[flag])
    assert getattr(_parse(command, [], model), name) == flagged
    assert getattr(model(), name) == flagged
    assert getattr(_parse(command, [f"--{flag}", default_text(field)], model), name) == default


def test_the_unit_environment_names_only_options_of_run_and_the_logs() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "env.example"
    named = set(re.findall(r"^#?(FACILITIES_\w+)=", example.read_text(), flags=re.MULTILINE))
    assert named
    read = {option.env for model in (Settings, GlobalSettings) for _, option, _ in model.options()}
    assert named <= read


def test_the_broker_password_is_never_printed() -> None:
    settings = Settings(broker=SAMPLES["broker"])
    assert settings.broker.get_secret_value() == SAMPLES["broker"]
    for shown in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cret" not in shown


def test_a_value_the_settings_refuse_is_one_line_naming_the_option() -> None:
    """What the flag's own reading lets through and the field refuses (here a number of
    rows given in place, not as text) still names the option, and is a usage error."""
    args = build_parser().parse_args(["run"])
    args.quarantine_per_device_hour = 0
    with pytest.raises(UsageError, match=r"^--quarantine-per-device-hour: .*greater than 0$"):
        from_arguments(args, Settings)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "FACILITIES_MAX_CONNECTIONS",
            "0",
            "facilities: --client-timeout and --max-connections must be positive",
        ),
        (
            "FACILITIES_CONNECT_TIMEOUT",
            "soon",
            "facilities run: error: argument --connect-timeout: invalid float value: 'soon'",
        ),
        (
            "FACILITIES_PUBLIC_URL",
            "ftp://x",
            "facilities: --public-url 'ftp://x': expected http(s)://host[:port][/path], at most 200 characters, no query",
        ),
        (
            "FACILITIES_LOG_LEVEL",
            "LOUD",
            "facilities: error: argument --log-level: 'LOUD': expected DEBUG, INFO, WARNING or ERROR",
        ),
    ],
)
def test_a_bad_variable_is_refused_like_its_flag(variable: str, value: str, line: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "facilities", "run", "--site", "/nonexistent/site.toml"],
        capture_output=True,
        text=True,
        env={**_environment(), variable: value},
        check=False,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in done.stderr
