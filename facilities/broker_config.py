"""Mosquitto password file and ACL for every device of the site, and the broker config."""

import base64
import grp
import hashlib
import os
import re
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from facilities.errors import OperatorError, UsageError
from facilities.mqtt.topics import Topics
from facilities.site import SERVICE_USER as SERVICE_USER  # the reserved device id, re-exported
from facilities.site import Site

# Beside the password file: the plaintext passwords of the users a run made (mode 0600).
CREDENTIALS_FILE = "credentials.new"
# The group Debian's and the official packages run Mosquitto as.
BROKER_GROUP = "mosquitto"
# Mosquitto 2.0's own format (`mosquitto_passwd`): $7$ = PBKDF2-HMAC-SHA512, 101 iterations,
# 12-byte salt; checked against mosquitto_passwd output and the real broker in the tests.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A password-file hash that Mosquitto 2.0 accepts."""
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"$7${_PBKDF2_ITERATIONS}${encoded[0]}${encoded[1]}"


def bridge_user(community: str) -> str:
    """The central broker's user for a community's bridge (`bridge.cq4`): a dot is in no
    device id (ID_PATTERN), so it never names a device."""
    return f"bridge.{community}"


def acl_text(
    site: Site, topics: Topics, *, community: str | None = None, partitions: int = 0
) -> str:
    """One block per user: devices write only under their own id; each reads its commands,
    its own `…/rejected` topic and the service's status, nothing else of others. Without
    `community`, the central broker's: the service, the devices of the communities that are
    not bridged, and a bridge user for each one that is (docs/bridge.md). With it, that
    community's own broker's: its devices only."""
    blocks = ["# Written by `facilities broker-config`. Regenerate after changing the site file."]
    if community is None:
        for service in (SERVICE_USER, *partition_users(partitions)):
            blocks += ["", f"user {service}", *service_acl(topics)]
    stations, garages = _devices(site, community)
    for station in stations:
        blocks += ["", f"user {station}", *_station_acl(topics, station)]
    for garage in garages:
        blocks += ["", f"user {garage}", *_garage_acl(topics, garage)]
    for bridged in _bridged(site) if community is None else ():
        blocks += ["", f"user {bridge_user(bridged)}", *bridge_acl(site, topics, bridged)]
    return "\n".join(blocks) + "\n"


def _station_acl(t: Topics, station: str) -> tuple[str, ...]:
    return (
        *(f"topic write {t.station(station, s)}" for s in ("telemetry", "event")),
        f"topic write {t.station(station, 'availability')}",
        f"topic write {t.station(station, 'command/ack')}",
        f"topic read {t.station(station, 'command')}",
        f"topic read {t.station(station, 'rejected')}",
        f"topic read {t.service_status()}",
    )


def _garage_acl(t: Topics, garage: str) -> tuple[str, ...]:
    return (
        f"topic write {t.garage(garage, 'telemetry')}",
        f"topic write {t.garage(garage, 'availability')}",
        f"topic write {t.gate(garage, '+', 'event')}",
        f"topic write {t.gate(garage, '+', 'command/ack')}",
        f"topic read {t.gate(garage, '+', 'command')}",
        f"topic read {t.garage(garage, 'rejected')}",
        f"topic read {t.service_status()}",
    )


def bridge_acl(site: Site, topics: Topics, community: str) -> tuple[str, ...]:
    """The ACL lines of a community's bridge on the central broker: what its devices may
    write and read, for its devices only, and its own state (the bridge's notifications)."""
    stations, garages = _devices(site, community)
    lines = [line for s in stations for line in _station_acl(topics, s)]
    lines += [line for g in garages for line in _garage_acl(topics, g)]
    return (*dict.fromkeys(lines), f"topic write {topics.bridge_state(community)}")


def service_acl(topics: Topics) -> tuple[str, ...]:
    """The service's ACL lines: it reads everything and writes only commands, refusals told
    to devices (`…/rejected`), alerts and its own status."""
    t = topics
    return (
        f"topic read {t.everything()}",
        f"topic write {t.station('+', 'command')}",
        f"topic write {t.gate('+', '+', 'command')}",
        f"topic write {t.station('+', 'rejected')}",
        f"topic write {t.garage('+', 'rejected')}",
        f"topic write {t.all_service()}",
        f"topic write {t.all_alerts()}",
    )


def users_of(site: Site, *, community: str | None = None, partitions: int = 0) -> tuple[str, ...]:
    """Every broker user the central broker needs: the service (and one for each of
    `partitions`), then each station and garage that is not in a bridged community, then
    each bridged community's bridge. With `community`, every user of that community's own
    broker: its stations and garages."""
    stations, garages = _devices(site, community)
    if community is not None:
        return (*stations, *garages)
    services = (SERVICE_USER, *partition_users(partitions))
    return (*services, *stations, *garages, *(bridge_user(c) for c in _bridged(site)))


def partition_users(partitions: int) -> tuple[str, ...]:
    """The service's users for `--partition K/N` of N = `partitions` (`facilities.0-of-2`):
    the broker takes the client id, so the session, from the user (mosquitto.conf); owner
    and standby of one partition share its user (docs/scaling.md). The dot keeps them apart
    from device ids, which have none."""
    return tuple(f"{SERVICE_USER}.{k}-of-{partitions}" for k in range(partitions))


def _bridged(site: Site) -> tuple[str, ...]:
    return tuple(c.id for c in site.communities.values() if c.bridged)


def _devices(site: Site, community: str | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The stations and garages whose users are on the central broker (`community` None: those
    of the communities that are not bridged), or on `community`'s own broker."""
    if community is not None and community not in site.communities:
        raise UsageError(f"--community {community}: not a community of the site")
    if community is None:
        on = {c.id for c in site.communities.values() if not c.bridged}
    else:
        on = {community}
    return (
        tuple(s.id for s in site.stations.values() if s.community in on),
        tuple(g.id for g in site.garages.values() if g.community in on),
    )


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What one run of `broker-config` did. `made` holds the only plaintext passwords: those
    of new and rotated users (the kept ones exist only as hashes, in the password file)."""

    made: dict[str, str]
    kept: tuple[str, ...]
    rotated: tuple[str, ...]
    removed: tuple[str, ...]
    credentials: Path | None  # where `made` was written; None when nothing was made


def read_passwd(path: Path) -> dict[str, str]:
    """`user → hash` of a Mosquitto password file, hashes as written; {} if there is none."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise OperatorError(f"{path}:{number}: expected user:hash")
        hashes[user] = hashed
    return hashes


def write_broker_config(
    site: Site,
    out: Path,
    *,
    topic_prefix: str = "facilities",
    rotate: Collection[str] = (),
    group: str | None = None,
    community: str | None = None,
    partitions: int = 0,
) -> BrokerFiles:
    """Bring `out/passwd` and `out/acl` in line with the site, safe to run on a live site:
    users already in the password file keep their hash line as it is, new users get a new
    password, users no longer in the site are removed, and `rotate` names users that get a
    new password. The new passwords go to `out/credentials.new` (mode 0600) and are
    returned. With `group`, the password file and ACL are that group's to read (mode 0640;
    Mosquitto opens them after dropping root for its own user); without, mode 0600. With
    `community`, the files of that community's own broker (docs/bridge.md). `partitions`: a
    service user for each partition of `facilities run --partition K/N` (docs/scaling.md)."""
    users = users_of(site, community=community, partitions=partitions)
    unknown = sorted(set(rotate) - set(users))
    if unknown:
        raise UsageError(f"--rotate {', '.join(unknown)}: not the service nor a device of the site")
    gid = _group_id(group)
    if not out.exists():
        out.mkdir(parents=True, mode=0o750)
        if gid is not None:
            os.chown(out, -1, gid)
    existing = read_passwd(out / "passwd")
    made = {
        user: secrets.token_urlsafe(18) for user in users if user not in existing or user in rotate
    }
    hashes = {user: hash_password(made[user]) if user in made else existing[user] for user in users}
    readable = 0o640 if gid is not None else 0o600
    _write_atomic(out / "passwd", "".join(f"{u}:{h}\n" for u, h in hashes.items()), readable, gid)
    acl = acl_text(site, Topics(topic_prefix), community=community, partitions=partitions)
    _write_atomic(out / "acl", acl, readable, gid)
    credentials = None
    if made:
        credentials = out / CREDENTIALS_FILE
        _write_atomic(credentials, credentials_toml(made), 0o600, None)
    return BrokerFiles(
        made=made,
        kept=tuple(u for u in users if u not in made),
        rotated=tuple(u for u in users if u in made and u in existing),
        removed=tuple(u for u in existing if u not in hashes),
        credentials=credentials,
    )


def credentials_toml(passwords: dict[str, str]) -> str:
    """`user = "password"` lines: the file `facilities simulate --credentials` reads."""
    return "".join(f'{user} = "{password}"\n' for user, password in passwords.items())


def _group_id(group: str | None) -> int | None:
    """The group that may read the broker's files; None: only their owner may (then the
    broker must run as whoever runs this)."""
    if not group:
        return None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise OperatorError(
            f"group {group!r} does not exist: pass --broker-group with the group Mosquitto "
            "runs as (its `user`), or --broker-group '' when it runs as this user"
        ) from None
    if os.geteuid() != 0 and gid not in (os.getegid(), *os.getgroups()):
        raise OperatorError(f"cannot give files to group {group!r}: run as root or a member")
    return gid


def _write_atomic(path: Path, text: str, mode: int, gid: int | None) -> None:
    """Write a new file beside `path` with its final mode and group, then rename it over
    `path`: a broker reloading meanwhile reads the old file or the new, never half of one,
    and the secret is never readable by others, not even for an instant."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            # before the first byte; a leftover of an interrupted run may have another mode
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
            file.write(text)
            file.flush()
            os.fsync(fd)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def shipped_mosquitto_conf() -> str:
    """The `mosquitto.conf` shipped with the project."""
    return resources.files("facilities").joinpath("mosquitto.conf").read_text("utf-8")


# Per-listener options go with the listener they follow: left behind without it, Mosquitto
# would give them to a default listener on port 1883 (man mosquitto.conf, "Listeners").
_REPLACED = re.compile(
    r"^(listener|use_username_as_clientid|password_file|acl_file|persistence_location"
    r"|log_dest|user)\b.*$",
    re.M,
)


def render_bridge_conf(*, community: str, centre: str, password: str) -> str:
    """The shipped bridge section (mosquitto-bridge.conf) for `community`'s own broker, to the
    central broker at `centre` (`host:port`) as its user `bridge.<community>`."""
    text = resources.files("facilities").joinpath("mosquitto-bridge.conf").read_text("utf-8")
    for placeholder, value in (
        ("CHANGE-ME-COMMUNITY", community),
        ("CHANGE-ME-CENTRE", centre),
        ("CHANGE-ME-PASSWORD", password),
    ):
        text = text.replace(placeholder, value)
    return text


def render_mosquitto_conf(*, port: int, config_dir: Path, data_dir: Path, user: str) -> str:
    """The shipped config for a private broker: loopback port, our files, our user."""
    body = _REPLACED.sub("", shipped_mosquitto_conf())
    return (
        f"{body}\n# --- private instance ---\n"
        f"listener {port} 127.0.0.1\n"
        "use_username_as_clientid true\n"
        f"password_file {config_dir / 'passwd'}\n"
        f"acl_file {config_dir / 'acl'}\n"
        f"persistence_location {data_dir}/\n"
        f"user {user}\n"
        "log_dest stderr\n"
    )
