"""What ingest costs per message on paho's thread, counted in instructions.

Run on demand (`.venv/bin/python bench/instructions.py --ports 1 4 10 [--before TREE]`); never
in `make test`. Wall-clock figures on a shared 2-core machine move by a third from one run to
the next; instructions do not. The service is wired as `facilities run` wires it (the site
file, the rules, the live state), opened on nothing, and fed the benchmark publisher's
telemetry through `Ingest.on_message`: decoding, the rules, the rows kept until the commit.
Not counted: paho's receive path, the writer, acks (bench/threads.py times those threads).

Each figure is `valgrind --tool=callgrind`'s total for N2 messages minus that for N1, divided
by N2 - N1 (start-up cancels out), with the collector as the service has it. `--before TREE`
counts the `facilities` package of another checkout the same way, for a before/after table.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The messages of one count: far under the window past which ingest holds paho's thread.
FEWER, MORE = 300, 1200
_COLLECTED = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def feed(ports: int, messages: int) -> float:
    """Wire the service and feed it `messages` telemetry messages of `ports` ports; return
    the wall-clock seconds the feeding took. Imports from whatever `facilities` is first on
    the path (this checkout, or the one `--before` names)."""
    from bench.publisher import payload
    from facilities import heap
    from facilities.mqtt.session import Delivery
    from facilities.mqtt.topics import Topics
    from facilities.settings import Settings
    from facilities.site import load_site
    from facilities.wiring import build

    site = load_site(ROOT / "site.example.toml")
    service = build(Settings(), site)
    topics = [Topics().station(station, "telemetry") for station in site.stations]
    # as many made in every run (only the feeding differs between the two counts)
    bodies = [payload(seq, ports) for seq in range(MORE)][:messages]
    heap.settle()  # the collector as `facilities run` leaves it once started (server.py)
    on_message = service.ingest.on_message
    started = time.perf_counter()
    for seq, body in enumerate(bodies):
        on_message(topics[seq % len(topics)], body, Delivery(seq % 65535 + 1, 1, 0))
    took = time.perf_counter() - started
    assert service.ingest.waiting == messages, "every message was queued for its batch"
    return took


def instructions(ports: int, messages: int, tree: Path) -> int:
    """Callgrind's instruction count of a whole run feeding `messages` messages."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                __file__,
                "--feed",
                str(ports),
                str(messages),
            ],
            check=True,
            capture_output=True,
            env=_env(tree),
        )
        found = _COLLECTED.search(Path(out, "callgrind.out").read_text(errors="replace"))
    if found is None:
        raise SystemExit("callgrind wrote no summary line")
    return int(found.group(1))


def per_message(ports: int, tree: Path) -> float:
    return (instructions(ports, MORE, tree) - instructions(ports, FEWER, tree)) / (MORE - FEWER)


def wall_us(ports: int, tree: Path) -> float:
    """Wall-clock µs per message, in-process, outside valgrind (best of three runs)."""
    best = min(
        float(
            subprocess.run(
                [sys.executable, __file__, "--feed", str(ports), str(MORE)],
                check=True,
                capture_output=True,
                text=True,
                env=_env(tree),
            ).stdout
        )
        for _ in range(3)
    )
    return best / MORE * 1e6


def _env(tree: Path) -> dict[str, str]:
    """`facilities` from `tree`; one hash seed, so that two runs hash and lay out their
    dicts alike (a random seed moved the count by ~0.3 %)."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT)]),
        "PYTHONHASHSEED": "0",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--ports", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument(
        "--before", type=Path, metavar="TREE", help="also count this checkout's `facilities`"
    )
    parser.add_argument("--feed", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed:
        print(feed(*args.feed))
        return 0
    trees = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    print(f"instructions per message on paho's thread ({MORE} minus {FEWER} messages)")
    print(f"{'ports':>5} {'tree':>7} {'instructions':>13} {'wall us':>8}")
    for ports in args.ports:
        for name, tree in trees:
            counted = per_message(ports, tree)
            print(
                f"{ports:>5} {name:>7} {counted:>13,.0f} {wall_us(ports, tree):>8.1f}", flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
