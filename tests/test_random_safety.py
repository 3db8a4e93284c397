"""Random steps against the real service process and broker; safety invariants after each.

Issue 10, point 15. The steps come from `random.Random(seed)`: a seed always plays the same
steps (the service's timing in between is the machine's; the invariants hold whatever it is).
A step is one of: telemetry; a charger plugged in or out; a hazard appearing or clearing
(socket or cabinet over-temperature, overload, a one-sample spike, a fast temperature rise,
leakage, smoke, garage smoke); a fault and its clearing; bad input (malformed, wrong schema,
NaN, unknown device, a seq past 2**63, a port the station lacks); QoS 0 telemetry and a
retained QoS 0 `online`; a device repeating its last messages; a burst of good and bad
messages; late (buffered) and reordered samples; a device switching to answering late, never
or with a refusal; staff acknowledging alerts and powering ports on and off (HTTP, staff
token from the command line); a station rebooting (relays on, seq from 0); SIGKILL and restart, right after a step (0-150 ms: amid a
commit, an ack, a command) or once it settled, with devices publishing while it is down.

After each step (except one followed at once by a SIGKILL), once settled by polling, these
hold (tests/random_checks.py), and once more after the last step and 2.5 s of /healthz:

- `stored_once`: every QoS 1 message stored exactly once, bad input quarantined exactly once;
  a QoS 0 message at most once;
- `alive`, `healthy`: the process runs, /healthz is 200, it never reconnected to a broker that
  never went away;
- `cut_or_failed`: every critical alert of a cutting rule sent its power-off; no command is
  left pending; every power-off (the rules' or staff's) was acknowledged by the device or
  raised `command_failed` (anew after an acknowledged one); every lasting hazard the devices
  read has its power off at the device now (cut again after a power-on or a reboot), or
  `command_failed` open;
- `evidence`: every power-off the rules sent has, in the stored telemetry, a reading of its
  subject over the limit on the device's own clock;
- `consistent`: every hazard and fault the devices read has its open alert; GET /api/alerts
  and GET /api/stations/{id} agree on the open alerts; a port with an open critical cut-off
  alert, or a fault, is never shown free.

CI runs seed 20261202, 150 steps (7 SIGKILLs): 20-35 s on a busy 2-core machine. On demand, a longer run, another seed, fewer step kinds
(POINTS: the points of issue 10 that a step kind stresses; `pointN` skips those kinds),
the steps a failure printed, or a failure shrunk to its shortest sequence (minutes):

    FACILITIES_RANDOM_SEED=7 FACILITIES_RANDOM_STEPS=2000 .venv/bin/pytest tests/test_random_safety.py
    FACILITIES_RANDOM_SKIP=qos0,kill …     (or: point5, point1,point2)
    FACILITIES_RANDOM_REPLAY='hazard_on cs-01 2 port_hot; kill cs-01 0 early:20' …
    FACILITIES_RANDOM_SHRINK=1 …
"""

import os
from pathlib import Path

import pytest

from facilities.mosquitto import PrivateBroker
from facilities.site import load_site
from tests.random_devices import SITE_TOML
from tests.random_driver import play, shrink
from tests.random_steps import WEIGHTS, parse_steps
from tests.random_steps import generate as generate_steps

SEED = int(os.environ.get("FACILITIES_RANDOM_SEED", "20261202"))
STEPS = int(os.environ.get("FACILITIES_RANDOM_STEPS", "150"))
SHRINK = os.environ.get("FACILITIES_RANDOM_SHRINK") == "1"
REPLAY = os.environ.get("FACILITIES_RANDOM_REPLAY", "")

# Step kinds and the points of issue 10 (docs/reliability.md) each one stresses most: a
# failure's kinds say where to look, and FACILITIES_RANDOM_SKIP=pointN leaves them out by
# hand. All are enabled by default. (`behaviour` also found a port shown free while its
# device did not carry out a cut-off.)
POINTS = {
    "qos0": "1",
    "retained_qos0": "1",
    "huge_seq": "2",
    "big_port": "2",
    "burst": "10",  # with kill
    "kill": "3",
    "staff_power_off": "7",
    "behaviour": "7",
}


def skipped(spec: str) -> set[str]:
    """Step kinds named in FACILITIES_RANDOM_SKIP: kinds, or `point2` (the kinds above that
    stress point 2)."""
    kinds: set[str] = set()
    for word in filter(None, (w.strip() for w in spec.split(","))):
        if word.startswith("point"):
            point = word.removeprefix("point")
            kinds |= {k for k, points in POINTS.items() if point in points.split(", ")}
        else:
            kinds.add(word)
    return kinds


SKIP = skipped(os.environ.get("FACILITIES_RANDOM_SKIP", ""))
ENABLED = [kind for kind in WEIGHTS if kind not in SKIP]


@pytest.mark.slow
def test_random_steps_keep_every_safety_invariant(broker: PrivateBroker, tmp_path: Path) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(SITE_TOML)
    site = load_site(site_file)
    steps = parse_steps(REPLAY) if REPLAY else generate_steps(SEED, STEPS, ENABLED)
    outcome = play(steps, tmp_path / "run", broker, site_file, site)
    stats = outcome.stats
    print(
        f"random safety: seed {SEED}, {stats.steps} steps, {stats.kills} SIGKILLs,"
        f" {stats.seconds:.1f} s; kinds {dict(sorted(stats.kinds.items()))}"
    )
    if outcome.failure is None:
        return
    played, failure = steps[: outcome.at + 1], outcome.failure
    if SHRINK:
        played, failure = shrink(played, failure, tmp_path, broker, site_file, site)
    trace = "; ".join(str(step) for step in played)
    raise AssertionError(
        f"seed {SEED}, after step {outcome.at} of {len(steps)}"
        f" ({'shrunk to' if SHRINK else 'played'} {len(played)} steps;"
        f" FACILITIES_RANDOM_REPLAY='{trace}' plays them again)\n"
        f"{failure}"
    )


# What the random steps found, each at its shortest (docs/reliability.md): played again in
# every run, so that each stays fixed. The issue-10 point (or what it broke) names each.
FOUND = {
    "1 qos0": "qos0 cs-01 0 -",
    "1 retained qos0": "retained_qos0 cs-01 1 -",
    "2 huge seq": "huge_seq cs-01 1 -",
    "2 port past the station's": "big_port cs-01 1 -",
    "3 cut in flight at a kill": (
        "plug cs-01 1 in; behaviour cs-01 0 late:0.7; hazard_on cs-01 1 port_hot;"
        " kill cs-01 0 early:150"
    ),
    "4 power-on while hot": (
        "plug cs-01 1 in; hazard_on cs-01 1 port_hot; staff_ack cs-01 0 -; staff_ack cs-01 0 -;"
        " staff_power_on cs-01 1 -"
    ),
    "5 late burst": "late_burst cs-01 2 -",
    "5 reordered": "reorder cs-01 1 -",
    "6 fault before a kill": "fault cs-01 3 over_current; kill cs-01 0 settled",
    "7 failure after an ack": (
        "plug cs-01 1 in; behaviour cs-01 0 never; hazard_on cs-01 1 port_hot;"
        " staff_ack cs-01 0 -; staff_ack cs-01 0 -; staff_ack cs-01 0 -; staff_ack cs-01 0 -;"
        " hazard_on cs-01 1 overload"
    ),
    "7 staff power-off timeout": "behaviour cs-01 0 never; staff_power_off cs-01 1 -",
    "10 quarantine redelivered": "burst cs-01 600 -; kill cs-01 0 early:0",
    "14 reboot while hot": "plug cs-01 1 in; hazard_on cs-01 1 port_hot; reboot cs-01 0 -",
    "ports free under a refused cut": "behaviour cs-01 0 never; hazard_on cs-01 1 leakage",
    # seed 6, 400 steps: an overload raised, cut and cleared between two snapshots was
    # raised again at the next start, from the older snapshot
    "6 replay from an older snapshot": (
        "staff_ack cs-01 9 -; telemetry cs-01 4 -; kill cs-03 2 early:0; "
        "fault_cleared cs-01 4 -; staff_power_off cs-01 2 -; invalid cs-03 1 unknown; "
        "hazard_on cs-01 3 smoke; hazard_off cs-03 4 leakage; telemetry cs-01 3 -; "
        "telemetry cs-01 2 -; staff_ack cs-03 7 -; garage_smoke cs-01 3 on; "
        "big_port cs-03 3 -; huge_seq cs-01 2 -; telemetry cs-03 3 -; late_burst cs-03 4 -; "
        "plug cs-01 1 in; behaviour cs-01 3 late:1.3; staff_power_on cs-03 3 -; "
        "hazard_off cs-03 3 overload; duplicate cs-03 1 -; hazard_off cs-03 1 rise; "
        "plug cs-01 4 in; behaviour cs-03 1 late:1.3; hazard_off cs-03 4 port_hot; "
        "plug cs-03 4 in; late_burst cs-01 1 -; telemetry cs-01 3 -; huge_seq cs-03 2 -; "
        "hazard_on cs-03 3 cabinet_hot; hazard_on cs-03 4 cabinet_hot; "
        "fault_cleared cs-03 4 -; fault_cleared cs-03 4 -; hazard_on cs-03 3 spike; "
        "duplicate cs-03 2 -; duplicate cs-03 2 -; invalid cs-03 1 schema; "
        "telemetry cs-01 3 -; hazard_off cs-03 1 overload; telemetry cs-03 1 -; "
        "hazard_off cs-03 1 rise; plug cs-03 3 in; duplicate cs-01 1 -; telemetry cs-01 1 -; "
        "telemetry cs-03 4 -; late_burst cs-01 1 -; burst cs-01 100 -; qos0 cs-03 4 -; "
        "fault_cleared cs-01 2 -; staff_ack cs-01 16 -; behaviour cs-03 3 late:0.7; "
        "late_burst cs-01 3 -; kill cs-03 0 early:0; fault_cleared cs-03 3 -; "
        "hazard_on cs-03 4 rise; staff_power_off cs-01 1 -; plug cs-01 1 out; "
        "plug cs-03 1 in; kill cs-01 0 early:60; telemetry cs-01 4 -; "
        "invalid cs-03 4 malformed; telemetry cs-03 1 -; plug cs-01 2 in; reorder cs-03 2 -; "
        "kill cs-01 1 settled; behaviour cs-01 1 refuse; staff_ack cs-03 11 -; "
        "staff_power_on cs-03 1 -; hazard_off cs-01 2 leakage; invalid cs-03 3 schema; "
        "kill cs-01 0 early:150; telemetry cs-01 4 -; behaviour cs-01 1 never; "
        "hazard_off cs-01 1 cabinet_hot; plug cs-03 2 out; burst cs-03 600 -; "
        "telemetry cs-01 2 -; staff_power_on cs-03 1 -; kill cs-01 0 settled; "
        "behaviour cs-03 3 obey; hazard_off cs-01 2 spike; huge_seq cs-03 3 -; "
        "behaviour cs-01 1 obey; hazard_off cs-01 2 smoke; telemetry cs-03 4 -; "
        "duplicate cs-01 1 -; telemetry cs-03 1 -; fault_cleared cs-03 3 -; "
        "telemetry cs-03 2 -; telemetry cs-03 2 -; plug cs-03 4 out; "
        "garage_smoke cs-03 3 off; telemetry cs-01 2 -; behaviour cs-01 2 late:1.3; "
        "telemetry cs-01 2 -; telemetry cs-03 4 -; fault_cleared cs-03 2 -; "
        "staff_ack cs-03 15 -; staff_power_on cs-01 3 -; hazard_off cs-03 2 spike; "
        "hazard_off cs-03 2 port_hot; behaviour cs-01 1 late:0.7; qos0 cs-01 1 -; "
        "plug cs-03 2 in; garage_smoke cs-01 4 off; staff_power_on cs-03 4 -; "
        "staff_power_on cs-01 3 -; telemetry cs-01 2 -; staff_ack cs-01 3 -; "
        "reboot cs-01 2 -; hazard_on cs-01 2 overload; kill cs-01 3 early:150; "
        "qos0 cs-01 4 -; kill cs-01 1 settled; kill cs-03 0 early:60"
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FOUND)
def test_what_the_random_steps_found_stays_fixed(
    name: str, broker: PrivateBroker, tmp_path: Path
) -> None:
    site_file = tmp_path / "site.toml"
    site_file.write_text(SITE_TOML)
    outcome = play(
        parse_steps(FOUND[name]), tmp_path / "run", broker, site_file, load_site(site_file)
    )
    assert outcome.failure is None, f"after step {outcome.at}: {outcome.failure}"
