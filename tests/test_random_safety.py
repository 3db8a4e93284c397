"""Random sequences of device messages, staff requests and SIGKILLs against the real service
process through the real broker, with the safety invariants checked after every step.

The steps come from `random.Random(seed)`: the same seed always plays the same steps (what the
service does in between is timed by the machine; the invariants hold whatever the timing).
A step is one of: telemetry, a charger plugged in or out, a hazard appearing or clearing
(socket or cabinet over-temperature, overload, a fast temperature rise, leakage, smoke, garage
smoke), a fault and its clearing, bad input (malformed, wrong schema, NaN, unknown device, a
seq past 2**63, a port the station lacks), QoS 0 telemetry and a retained QoS 0 `online`, a
device repeating its last messages, late (buffered) and reordered samples, a device switching
to answering late, never or with a refusal, staff acknowledging alerts and powering ports on
and off (HTTP with a staff token), and SIGKILL + restart (right after a step, with messages in
flight, or after it settled; devices publish while the service is down).

After each step (except one followed at once by a SIGKILL), once settled — polling, never a
fixed sleep — these must hold (tests/random_checks.py):

- `stored_once`: every QoS 1 message is stored exactly once, or quarantined once (bad input
  always quarantined); a QoS 0 message at most once;
- `alive` / `healthy`: the process runs, /healthz is 200, and it never reconnected to a broker
  that never went away;
- `cut_or_failed`: every critical alert of a cutting rule sent its power-off, no command is
  left pending, and every power-off (the rules' or staff's) was acknowledged by the device or
  raised `command_failed` (anew after an acknowledged one);
- `evidence`: every power-off the rules sent has, in the stored telemetry, a reading of its
  subject over the limit on the device's own clock;
- `consistent`: every hazard the devices read has its open alert; GET /api/alerts and
  GET /api/stations/{id} agree on the open alerts; a port with an open critical cut-off alert
  (or a fault) is never shown free.

In CI: seed 20261202, 150 steps (about 6 SIGKILLs), under a minute. On demand, a longer run:

    FACILITIES_RANDOM_SEED=7 FACILITIES_RANDOM_STEPS=2000 .venv/bin/pytest tests/test_random_safety.py

`FACILITIES_RANDOM_REPLAY='hazard_on cs-01 2 port_hot; kill cs-01 0 early'` plays the
steps a failure printed instead. `FACILITIES_RANDOM_SKIP=qos0,kill` leaves step kinds out (AWAITING lists which kinds stress
points of issue 10 whose fixes were not merged when this test was written); with
`FACILITIES_RANDOM_SHRINK=1` a failure is shrunk to the shortest sequence that still breaks the
same invariant (a few minutes), printed with the seed.
"""

import os
from pathlib import Path

from facilities.mosquitto import PrivateBroker
from facilities.site import load_site
from tests.random_devices import SITE_TOML
from tests.random_driver import play, shrink
from tests.random_steps import WEIGHTS, parse_steps
from tests.random_steps import generate as generate_steps

SEED = int(os.environ.get("FACILITIES_RANDOM_SEED", "20261202"))
STEPS = int(os.environ.get("FACILITIES_RANDOM_STEPS", "150"))
SKIP = {k for k in os.environ.get("FACILITIES_RANDOM_SKIP", "").split(",") if k}
SHRINK = os.environ.get("FACILITIES_RANDOM_SHRINK") == "1"
REPLAY = os.environ.get("FACILITIES_RANDOM_REPLAY", "")

# Step kinds that stress points of issue 10 not yet fixed on main when this test was written
# (the point in brackets); all stay enabled: FACILITIES_RANDOM_SKIP leaves them out by hand.
AWAITING = {
    "qos0": "1",
    "retained_qos0": "1",
    "huge_seq": "2",
    "big_port": "2",
    "kill": "3, 6",
    "burst": "10 (with kill)",
    "staff_power_on": "4",
    "late_burst": "5",
    "reorder": "5",
    "staff_power_off": "7",
    "behaviour": "4, 7",
}
ENABLED = [kind for kind in WEIGHTS if kind not in SKIP]


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
