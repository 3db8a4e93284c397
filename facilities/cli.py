"""The `facilities` command (CLI.md): every option also reads FACILITIES_<OPTION>."""

import argparse
import asyncio
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from facilities.access import Role
from facilities.broker_config import BROKER_GROUP, CREDENTIALS_FILE, SERVICE_USER
from facilities.errors import OperatorError, SiteError, UsageError
from facilities.settings import (
    DEFAULT_AUDIT_RETENTION_DAYS,
    DEFAULT_AUTH_FAILURES_PER_MINUTE,
    DEFAULT_BROKER,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_DB,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OPENS_PER_MINUTE,
    DEFAULT_QUARANTINE_PER_DEVICE_HOUR,
    DEFAULT_QUARANTINE_RETENTION_DAYS,
    DEFAULT_SITE,
    Listen,
    Settings,
    public_url,
    trusted_proxies,
)
from facilities.site import load_site

log = logging.getLogger("facilities")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _env(name: str, default: str) -> str:
    return os.environ.get(f"FACILITIES_{name.upper().replace('-', '_')}", default)


def _option(
    parser: argparse.ArgumentParser,
    name: str,
    default: str,
    help_text: str,
    *,
    kind: Callable[[str], object] = str,
) -> None:
    """`--name`, defaulting to FACILITIES_NAME; argparse converts (and refuses, exit 2)."""
    env = f"FACILITIES_{name.upper().replace('-', '_')}"
    parser.add_argument(
        f"--{name}",
        default=_env(name, default),
        type=kind,
        help=f"{help_text} (env {env}; default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facilities",
        description="E-bike charging stations and bicycle garages: ingest, rules, API.",
    )
    parser.add_argument("--log-level", default=_env("log-level", "INFO"), help="DEBUG, INFO, ...")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="the service: ingest and HTTP API in one process")
    _option(run, "site", DEFAULT_SITE, "site file")
    _option(run, "broker", DEFAULT_BROKER, "mqtt://user:password@host:port")
    _option(run, "db", DEFAULT_DB, "SQLite file")
    _option(run, "listen", DEFAULT_LISTEN, "HTTP HOST:PORT")
    _option(
        run,
        "connect-timeout",
        str(DEFAULT_CONNECT_TIMEOUT_S),
        "seconds to reach the broker",
        kind=float,
    )
    _option(
        run,
        "client-id",
        DEFAULT_CLIENT_ID,
        "MQTT client id of the persistent session; empty: the broker user, which the shipped "
        "mosquitto.conf uses whatever is set",
    )
    _option(run, "topic-prefix", "facilities", "MQTT topic prefix")
    _option(
        run,
        "opens-per-minute",
        str(DEFAULT_OPENS_PER_MINUTE),
        "gate opens a resident may ask for in any minute",
        kind=int,
    )
    _option(
        run,
        "public-url",
        "",
        "address residents reach the service at, printed in QR codes (e.g. https://…);"
        " default: the listen address",
    )
    _option(
        run,
        "auth-failures-per-minute",
        str(DEFAULT_AUTH_FAILURES_PER_MINUTE),
        "failed authentications from one address before 429, in any minute",
        kind=int,
    )
    _option(
        run,
        "trusted-proxy",
        "",
        "addresses or networks of reverse proxies whose X-Forwarded-For is believed"
        " (comma-separated; none: the socket's peer is the client)",
    )
    _option(
        run,
        "client-timeout",
        str(DEFAULT_CLIENT_TIMEOUT_S),
        "seconds a client has to send a whole request (the connection is closed after)",
        kind=float,
    )
    _option(
        run,
        "max-connections",
        str(DEFAULT_MAX_CONNECTIONS),
        "open HTTP and WebSocket connections; past it a request is answered 503",
        kind=int,
    )

    _retention_options(run)

    demo = commands.add_parser("demo", help="private broker + service + simulators")
    _option(demo, "site", DEFAULT_SITE, "site file")
    _option(demo, "listen", DEFAULT_LISTEN, "HTTP HOST:PORT (port 0: any free port)")
    _option(demo, "speed", "60", "simulated time runs this many times faster", kind=float)
    _option(demo, "scenario", "normal", "normal, or a fault scenario (see simulate)")
    _option(demo, "run-for", "0", "stop after this many seconds (0: until Ctrl-C)", kind=float)
    _option(demo, "db", "./var/demo.db", "SQLite file of the demo")

    simulate = commands.add_parser("simulate", help="device simulators only")
    _option(simulate, "site", DEFAULT_SITE, "site file")
    _option(simulate, "broker", DEFAULT_BROKER, "mqtt://host:port (user/password: see below)")
    _option(simulate, "credentials", "", "TOML file of device passwords from broker-config")
    _option(
        simulate,
        "scenario",
        "normal",
        "normal, or a fault 10 s in: overload, overheat, leakage, smoke, garage-smoke",
    )
    _option(simulate, "speed", "1", "simulated time runs this many times faster", kind=float)
    _option(simulate, "run-for", "0", "stop after this many seconds (0: until Ctrl-C)", kind=float)
    _option(simulate, "topic-prefix", "facilities", "MQTT topic prefix")

    broker = commands.add_parser(
        "broker-config",
        help="Mosquitto password file and ACL; safe to run again on a live site",
        description="Brings DIR/passwd and DIR/acl in line with the site file: users already "
        "in DIR/passwd keep their passwords, new devices get one, devices no longer in the "
        f"site are removed. New and rotated passwords go to DIR/{CREDENTIALS_FILE} (mode "
        "0600) and to stdout; the others cannot be shown (only their hashes are kept). "
        "Reload the broker afterwards (SIGHUP).",
    )
    broker.add_argument("--site", default=_env("site", DEFAULT_SITE), help="site file")
    broker.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write passwd and acl into"
    )
    _option(broker, "topic-prefix", "facilities", "MQTT topic prefix")
    broker.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="ID",
        help=f"a new password for this device (or {SERVICE_USER}, the service); repeatable",
    )
    _option(
        broker,
        "broker-group",
        BROKER_GROUP if os.geteuid() == 0 else "",
        "group that may read passwd and acl (mode 0640), the group Mosquitto drops root for; "
        "empty: owner only (0600), for a broker run as this user",
    )

    for role, what in ((Role.RESIDENT, "residents"), (Role.STAFF, "staff")):
        _people_parser(commands, role, what)

    check = commands.add_parser("check-site", help="validate a site file")
    check.add_argument("path", help="site file")

    schemas = commands.add_parser("schemas", help="write the payloads' JSON Schemas")
    schemas.add_argument("--out", default="docs/schemas", help="directory (default %(default)s)")
    return parser


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: a finite number above 0 (nothing may be kept for ever, or not at
    all)."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number above 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def _retention_options(run: argparse.ArgumentParser) -> None:
    """What clients and devices make the service store is bounded (docs/operations.md)."""
    _option(
        run,
        "quarantine-per-device-hour",
        str(DEFAULT_QUARANTINE_PER_DEVICE_HOUR),
        "bad messages kept per device and hour; past it they are only counted",
        kind=_positive(int),
    )
    _option(
        run,
        "quarantine-retention-days",
        str(DEFAULT_QUARANTINE_RETENTION_DAYS),
        "days quarantined messages and their counts are kept",
        kind=_positive(float),
    )
    _option(
        run,
        "audit-retention-days",
        str(DEFAULT_AUDIT_RETENTION_DAYS),
        "days the audit of API requests (gate opens, port power) is kept",
        kind=_positive(float),
    )


def _people_parser(commands: Any, role: Role, what: str) -> None:
    """`facilities residents|staff add|revoke|list`."""
    group = commands.add_parser(what, help=f"{what}: tokens for the HTTP API")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="register; prints the new token once, on its last line")
    _option(add, "db", DEFAULT_DB, "SQLite file of the service")
    add.add_argument("--name", required=True, help="name, for the audit log")
    if role is Role.RESIDENT:
        _option(add, "site", DEFAULT_SITE, "site file (garage ids are checked against it)")
        add.add_argument(
            "--garage", action="append", default=[], required=True, help="garage id (repeat)"
        )
    revoke = actions.add_parser("revoke", help="revoke a token: refused from the next request")
    _option(revoke, "db", DEFAULT_DB, "SQLite file of the service")
    revoke.add_argument("id", help="the id printed by add (r-… or s-…)")
    listing = actions.add_parser("list", help="everyone registered, revoked ones marked")
    _option(listing, "db", DEFAULT_DB, "SQLite file of the service")
    group.set_defaults(role=role)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except (OperatorError, BaseExceptionGroup) as exc:
        found = _operator_error(exc)
        if found is None:
            raise
        return _report(found)


def _operator_error(exc: BaseException) -> OperatorError | None:
    """The operator's mistake behind `exc`, looking inside task-group exception groups."""
    if isinstance(exc, OperatorError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _operator_error(inner)
            if found is not None:
                return found
    return None


def _report(exc: OperatorError) -> int:
    """One line on stderr per problem: what and where."""
    if isinstance(exc, SiteError):
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"facilities: {exc}", file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILURE


def _settings(args: argparse.Namespace) -> Settings:
    if args.client_timeout <= 0 or args.max_connections < 1:
        raise UsageError("--client-timeout and --max-connections must be positive")
    return Settings(
        site=Path(args.site),
        broker=args.broker,
        db=Path(args.db),
        listen=Listen.parse(args.listen),
        connect_timeout_s=args.connect_timeout,
        client_id=args.client_id,
        topic_prefix=args.topic_prefix,
        opens_per_minute=args.opens_per_minute,
        auth_failures_per_minute=args.auth_failures_per_minute,
        public_url=public_url(args.public_url),
        trusted_proxies=trusted_proxies(args.trusted_proxy),
        client_timeout_s=args.client_timeout,
        max_connections=args.max_connections,
        quarantine_per_device_hour=args.quarantine_per_device_hour,
        quarantine_retention_days=args.quarantine_retention_days,
        audit_retention_days=args.audit_retention_days,
    )


def _run(args: argparse.Namespace) -> int:
    from facilities.server import serve

    settings = _settings(args)
    site = load_site(settings.site)
    asyncio.run(serve(settings, site))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from facilities.demo import run_demo

    site_path = Path(args.site)
    if not site_path.exists() and args.site == DEFAULT_SITE:
        # run from elsewhere than a checkout: the district shipped with the package
        site_path = Path(str(resources.files("facilities").joinpath(DEFAULT_SITE)))

    asyncio.run(
        run_demo(
            site_path=site_path,
            listen=Listen.parse(args.listen),
            db=Path(args.db),
            speed=args.speed,
            scenario=args.scenario,
            run_for_s=args.run_for,
        )
    )
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from simulators.fleet import run_fleet

    site = load_site(args.site)
    asyncio.run(
        run_fleet(
            site,
            broker=args.broker,
            credentials_path=Path(args.credentials) if args.credentials else None,
            scenario=args.scenario,
            speed=args.speed,
            run_for_s=args.run_for,
            topic_prefix=args.topic_prefix,
        )
    )
    return EXIT_OK


def _broker_config(args: argparse.Namespace) -> int:
    from facilities.broker_config import credentials_toml, write_broker_config

    site = load_site(args.site)
    out = Path(args.out)
    done = write_broker_config(
        site,
        out,
        topic_prefix=args.topic_prefix,
        rotate=args.rotate,
        group=args.broker_group or None,
    )
    readable = f"group {args.broker_group}, mode 0640" if args.broker_group else "mode 0600"
    print(f"# wrote {out / 'passwd'} and {out / 'acl'} ({readable})", file=sys.stderr)
    print(
        f"# users: {len(done.kept)} kept, {len(done.made) - len(done.rotated)} new, "
        f"rotated: {' '.join(done.rotated) or '-'}, removed: {' '.join(done.removed) or '-'}",
        file=sys.stderr,
    )
    if done.credentials is None:
        print("# no new passwords", file=sys.stderr)
        return EXIT_OK
    print(
        f"# new passwords in {done.credentials} (mode 0600): hand them over, then delete it. "
        "Reload the broker (SIGHUP) for the changes to apply.",
        file=sys.stderr,
    )
    print("# new passwords, shown once (facilities simulate --credentials reads this form)")
    print(credentials_toml(done.made), end="")
    return EXIT_OK


def _people(args: argparse.Namespace) -> int:
    from facilities import admin

    role: Role = args.role
    db = Path(args.db)
    if args.action == "add":
        site = load_site(args.site) if role is Role.RESIDENT else None
        garages = getattr(args, "garage", [])
        added = asyncio.run(admin.add(db, role, args.name, garages=garages, site=site))
        person = added.person
        where = f" for {', '.join(sorted(person.garages))}" if person.garages else ""
        print(f"# {role.value} {person.id} ({person.name}){where}; the token is shown once:")
        print(added.token)
    elif args.action == "revoke":
        asyncio.run(admin.revoke(db, role, args.id))
        print(f"revoked {args.id}")
    else:
        for entry in asyncio.run(admin.listing(db, role)):
            state = "revoked" if entry.revoked_at is not None else "active"
            garages = " ".join(sorted(entry.person.garages))
            print(f"{entry.person.id}\t{state}\t{entry.person.name}\t{garages}".rstrip())
    return EXIT_OK


def _check_site(args: argparse.Namespace) -> int:
    site = load_site(args.path)
    print(
        f"{args.path}: ok ({len(site.communities)} communities, {len(site.garages)} garages, "
        f"{len(site.stations)} stations)"
    )
    return EXIT_OK


def _schemas(args: argparse.Namespace) -> int:
    from facilities.schemas import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "demo": _demo,
    "simulate": _simulate,
    "broker-config": _broker_config,
    "check-site": _check_site,
    "residents": _people,
    "staff": _people,
    "schemas": _schemas,
}
