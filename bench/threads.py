"""Where the service's CPU goes, thread by thread, while it drains a backlog.

Run on demand (`.venv/bin/python bench/threads.py --ports 1 10`); never in `make test`. For
each message size: N messages are queued while `facilities run` is away, then it starts and
drains them, as `bench/ingest.py`'s backlog case. Each of its threads' user and system CPU
over the drain comes from the kernel's own counters (/proc/<pid>/task/<tid>/stat), per
stored message, with the thread's name as `py-spy dump` gives it (paho's network thread:
MQTT, decoding and the rules; MainThread: the event loop, the batches' rows, acks, metrics;
the database driver's threads). `--profile` also samples the thread holding the interpreter
lock (py-spy `--gil`) and prints the largest inclusive shares of paho's thread.
"""

import argparse
import collections
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import Bench  # noqa: E402
from bench.stores import open_store  # noqa: E402

_TICKS_PER_S = 100
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def cpu_by_thread(pid: int) -> dict[int, tuple[int, int]]:
    """tid → (user, system) clock ticks so far."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        ticks[int(task.name)] = (int(fields[11]), int(fields[12]))
    return ticks


def thread_names(pid: int) -> dict[int, str]:
    """tid → the Python thread's name, from `py-spy dump` ("Thread 123 (idle): "name"")."""
    out = subprocess.run(
        [str(PY_SPY), "dump", "--pid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    names = {}
    for line in out.splitlines():
        if line.startswith("Thread "):
            tid, _, rest = line[len("Thread ") :].partition(" ")
            if tid.isdigit():
                names[int(tid)] = rest.partition(": ")[2].strip('"')
    return names


def inclusive_shares(profile: Path, root: str, top: int = 25) -> list[tuple[float, str]]:
    """Functions by the share of `root`'s samples they appear in (py-spy raw format)."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [frame.split(" (")[0] for frame in stack.split(";")]
        if root not in frames:
            continue
        total += int(count)
        for name in set(frames[frames.index(root) :]):
            counts[name] += int(count)
    return [(n / max(total, 1), name) for name, n in counts.most_common(top)]


def drain(bench: Bench, ports: int, *, profile: Path | None) -> None:
    store = open_store("sqlite", bench.workdir)
    try:
        service = bench.new_service(f"threads{ports}", store=store)
        service.start()  # its persistent session
        service.stop()
        bench.publish(ports)
        service.start()
        first = service.wait_stored(1)
        before, already = cpu_by_thread(service.pid), service.stored()
        names = thread_names(service.pid)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    *(str(PY_SPY), "record", "--pid", str(service.pid), "--gil"),
                    *("--rate", "400", "--format", "raw", "--output", str(profile)),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        done = service.wait_stored(bench.messages)
        after = cpu_by_thread(service.pid)
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        service.stop()
        drained = bench.messages - already
        rate = drained / (done - first)
        print(f"\n{ports} ports: {drained} messages drained at {rate:,.0f} msg/s")
        print(f"  {'thread':<44} {'user us/msg':>11} {'sys us/msg':>10}")
        total_user = total_sys = 0.0
        for tid in sorted(after, key=lambda t: -sum(after[t]) + sum(before.get(t, (0, 0)))):
            user, system = (
                (now - then) / _TICKS_PER_S / drained * 1e6
                for now, then in zip(after[tid], before.get(tid, (0, 0)), strict=True)
            )
            total_user, total_sys = total_user + user, total_sys + system
            if user + system >= 0.5:
                print(f"  {names.get(tid, f'tid {tid}'):<44} {user:>11.1f} {system:>10.1f}")
        print(f"  {'all threads':<44} {total_user:>11.1f} {total_sys:>10.1f}")
        if profile is not None:
            print("  paho's thread, inclusive shares of its samples (py-spy --gil):")
            for share, name in inclusive_shares(profile, "Client._thread_main"):
                print(f"    {share:6.1%}  {name}")
    finally:
        store.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--ports", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--profile", action="store_true", help="py-spy --gil the drain")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="facilities-threads-"))
    bench = Bench(workdir, args.messages)
    try:
        for ports in args.ports:
            profile = workdir / f"profile-{ports}.txt" if args.profile else None
            drain(bench, ports, profile=profile)
    finally:
        bench.broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
