"""The `facilities` command (docs/operations.md): its options come from facilities/settings.py."""

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from facilities.access import Role
from facilities.broker_config import CREDENTIALS_FILE, SERVICE_USER
from facilities.errors import OperatorError, SiteError, UsageError
from facilities.logs import configure_logging
from facilities.options import add_options, from_arguments
from facilities.settings import (
    DEFAULT_SITE,
    BrokerConfigSettings,
    DemoSettings,
    GlobalSettings,
    PeopleSettings,
    ResidentAddSettings,
    Settings,
    SimulateSettings,
)
from facilities.site import load_site

log = logging.getLogger("facilities")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facilities",
        description="E-bike charging stations and bicycle garages: ingest, rules, API.",
    )
    add_options(parser, GlobalSettings)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = _command(commands, "run", help="the service: ingest and HTTP API in one process")
    add_options(run, Settings)

    demo = _command(commands, "demo", help="private broker + service + simulators")
    add_options(demo, DemoSettings)

    simulate = _command(commands, "simulate", help="device simulators only")
    add_options(simulate, SimulateSettings)

    broker = _command(
        commands,
        "broker-config",
        help="Mosquitto password file and ACL; safe to run again on a live site",
        description="Brings DIR/passwd and DIR/acl in line with the site file: users already "
        "in DIR/passwd keep their passwords, new devices get one, devices no longer in the "
        f"site are removed. New and rotated passwords go to DIR/{CREDENTIALS_FILE} (mode "
        "0600) and to stdout; the others cannot be shown (only their hashes are kept). "
        "Reload the broker afterwards (SIGHUP).",
    )
    add_options(broker, BrokerConfigSettings)
    broker.add_argument(
        "--out", required=True, metavar="DIR", help="directory to write passwd and acl into"
    )
    broker.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="ID",
        help=f"a new password for this device (or {SERVICE_USER}, the service); repeatable",
    )
    broker.add_argument(
        "--community",
        metavar="ID",
        help="the files of this community's own broker, bridged to the central one: its "
        "devices only (docs/bridge.md); without it, the central broker's",
    )
    broker.add_argument(
        "--partitions",
        type=int,
        default=0,
        metavar="N",
        help="also a service user for each partition of `run --partition K/N` "
        f"({SERVICE_USER}.0-of-N …; docs/scaling.md); default: none",
    )

    for role, what in ((Role.RESIDENT, "residents"), (Role.STAFF, "staff")):
        _people_parser(commands, role, what)

    backup = _command(
        commands,
        "backup",
        help="a consistent copy of the database, taken while the service runs",
        description="Copies the database with SQLite's online backup: the copy is the "
        "database as of one commit, even while the service writes; one file, mode 0600, "
        "checked with integrity_check, put in place whole. To restore, see Backup and "
        "restore in docs/operations.md.",
    )
    backup.add_argument("path", help="the copy (replaced if it exists)")
    add_options(backup, PeopleSettings)

    check = _command(commands, "check-site", help="validate a site file")
    check.add_argument("path", help="site file")

    schemas = _command(commands, "schemas", help="write the payloads' JSON Schemas")
    schemas.add_argument("--out", default="docs/schemas", help="directory (default %(default)s)")
    _conformance_parser(commands)
    return parser


def _command(commands: Any, name: str, **described: str) -> argparse.ArgumentParser:
    """A command's parser; the options of every command (`--log-level`, `--log-format`) may
    also follow its name (`facilities run --log-level DEBUG`)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, **described)
    add_options(parser, GlobalSettings, repeated=True)
    return parser


def _people_parser(commands: Any, role: Role, what: str) -> None:
    """`facilities residents|staff add|revoke|list`."""
    group = commands.add_parser(what, help=f"{what}: tokens for the HTTP API")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = _command(actions, "add", help="register; prints the new token once, on its last line")
    add_options(add, ResidentAddSettings if role is Role.RESIDENT else PeopleSettings)
    add.add_argument("--name", required=True, help="name, for the audit log")
    if role is Role.RESIDENT:
        add.add_argument(
            "--garage", action="append", default=[], required=True, help="garage id (repeat)"
        )
    revoke = _command(actions, "revoke", help="revoke a token: refused from the next request")
    add_options(revoke, PeopleSettings)
    revoke.add_argument("id", help="the id printed by add (r-… or s-…)")
    listing = _command(actions, "list", help="everyone registered, revoked ones marked")
    add_options(listing, PeopleSettings)
    group.set_defaults(role=role)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logs = from_arguments(args, GlobalSettings)
    except UsageError as exc:
        return _report(exc)
    configure_logging(level=logs.log_level, log_format=logs.log_format)
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


def _run(args: argparse.Namespace) -> int:
    from facilities.server import serve

    settings = from_arguments(args, Settings)
    site = load_site(settings.site)
    asyncio.run(serve(settings, site))
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from facilities.demo import run_demo

    options = from_arguments(args, DemoSettings)
    site_path = options.site
    if not site_path.exists() and site_path == Path(DEFAULT_SITE):
        # run from elsewhere than a checkout: the district shipped with the package
        site_path = Path(str(resources.files("facilities").joinpath(DEFAULT_SITE)))

    asyncio.run(
        run_demo(
            site_path=site_path,
            listen=options.listen,
            db=options.db,
            speed=options.speed,
            scenario=options.scenario,
            run_for_s=options.run_for_s,
        )
    )
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    from simulators.fleet import run_fleet

    options = from_arguments(args, SimulateSettings)
    site = load_site(options.site)
    asyncio.run(
        run_fleet(
            site,
            broker=options.broker.get_secret_value(),
            broker_ca=options.broker_ca,
            credentials_path=Path(options.credentials) if options.credentials else None,
            scenario=options.scenario,
            speed=options.speed,
            run_for_s=options.run_for_s,
            topic_prefix=options.topic_prefix,
        )
    )
    return EXIT_OK


def _broker_config(args: argparse.Namespace) -> int:
    from facilities.broker_config import credentials_toml, write_broker_config

    options = from_arguments(args, BrokerConfigSettings)
    if args.partitions < 0:
        raise UsageError(f"--partitions {args.partitions}: must be 0 or more")
    site = load_site(options.site)
    out = Path(args.out)
    done = write_broker_config(
        site,
        out,
        topic_prefix=options.topic_prefix,
        rotate=args.rotate,
        group=options.broker_group or None,
        community=args.community,
        partitions=args.partitions,
    )
    group = options.broker_group
    readable = f"group {group}, mode 0640" if group else "mode 0600"
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
    if role is Role.RESIDENT and args.action == "add":
        resident = from_arguments(args, ResidentAddSettings)
        db, site = resident.db, load_site(resident.site)
    else:
        db, site = from_arguments(args, PeopleSettings).db, None
    if args.action == "add":
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


def _backup(args: argparse.Namespace) -> int:
    from facilities.store.backup import backup

    db = from_arguments(args, PeopleSettings).db
    copied = backup(db, Path(args.path))
    print(
        f"backed up {db} to {copied.path} (schema version {copied.schema_version},"
        f" {copied.size_bytes} bytes, integrity ok)"
    )
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


def _conformance_parser(commands: Any) -> None:
    """`facilities conformance --device ID`: docs/protocol.md, "Conformance"."""
    from facilities.conformance.link import ConformanceSettings

    conformance = _command(
        commands,
        "conformance",
        help="watch one device and list its deviations from the protocol",
        description="Watches a station or garage controller on the broker and prints one line "
        "per kind of deviation from docs/protocol.md (with a count and the first example), "
        "then PASS or FAIL (exit 0 or 1).",
    )
    add_options(conformance, ConformanceSettings)
    conformance.add_argument("--device", required=True, metavar="ID", help="station or garage id")
    conformance.add_argument(
        "--send-command",
        action="store_true",
        help="stations: send one power_on of a port the station reports powered (it changes "
        "nothing) to test the ack path; off by default",
    )


def _conformance(args: argparse.Namespace) -> int:
    from facilities.conformance.link import ConformanceSettings, run_conformance

    options = from_arguments(args, ConformanceSettings)
    site = load_site(options.site)
    passed = run_conformance(options, args.device, site=site, send_command=args.send_command)
    return EXIT_OK if passed else EXIT_FAILURE


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _run,
    "demo": _demo,
    "simulate": _simulate,
    "broker-config": _broker_config,
    "backup": _backup,
    "check-site": _check_site,
    "residents": _people,
    "staff": _people,
    "schemas": _schemas,
    "conformance": _conformance,
}
