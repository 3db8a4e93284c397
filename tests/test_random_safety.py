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
