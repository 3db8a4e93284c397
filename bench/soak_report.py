"""The soak's figures: RSS over time; stored against sent; commands; alerts against expected."""

import os
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.soak_store import Expected, Stored

if TYPE_CHECKING:
    from facilities.mosquitto import PrivateBroker
    from simulators.client import DeviceClient
    from simulators.fleet import Fleet

# RSS is judged on the last service process only, once the last fault is a minute past (a
# fault allocates: alerts, command tasks, a reconnect, the backlog after a restart), and only
# over a window long enough for the slope to mean something: over 5 minutes a leak of 10 MB/h
# is 0.8 MB, about the noise seen here.
WARMUP_S = 60.0
JUDGE_MIN_S = 300.0
# Flat: under 10 MB/h at 50 times the district's rate, i.e. ~0.2 MB/h (~5 MB/day) at its own.
RSS_SLOPE_MAX_MB_H = 10.0
TABLE_ROWS = 30  # RSS samples printed (all of them are in rss.csv in the work directory)


@dataclass
class RssSampler:
    """VmRSS of the service's process from /proc, every `every_s` seconds."""

    pid: int
    every_s: float
    # (t, pid, VmRSS MB, RssAnon MB): anonymous memory is the heap (Python's and SQLite's),
    # the rest is mapped files (code, the WAL index)
    samples: list[tuple[float, int, float, float]] = field(default_factory=list)
    quiet_from: float = 0.0  # t of the last fault: the slope is judged after it
    restarted_at: dict[int, float] = field(default_factory=dict)  # pid: t of its first sample
    loads: list[float] = field(default_factory=list)  # the machine's 1-minute load average

    def follow(self, pid: int) -> None:
        self.pid = pid

    def sample(self, elapsed: float, *, force: bool = False) -> None:
        if not force and self.samples and elapsed - self.samples[-1][0] < self.every_s:
            return
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return  # between a SIGKILL and the restart
        kb = {
            name: int(value.split()[0])
            for name, _, value in (line.partition(":") for line in status.splitlines())
            if name in ("VmRSS", "RssAnon")
        }
        if "VmRSS" not in kb:
            return  # a process that has exited but not been reaped yet
        self.restarted_at.setdefault(self.pid, elapsed)
        self.loads.append(os.getloadavg()[0])
        self.samples.append((elapsed, self.pid, kb["VmRSS"] / 1024, kb.get("RssAnon", 0) / 1024))

    def steady(self, column: int = 2) -> list[tuple[float, float]]:
        """(t, MB) of the last process, a minute after its start and after the last fault."""
        since = max(self.restarted_at.get(self.pid, 0.0), self.quiet_from) + WARMUP_S
        return [
            (row[0], row[column]) for row in self.samples if row[1] == self.pid and row[0] >= since
        ]

    def slope_mb_h(self, column: int = 2) -> tuple[float | None, float]:
        """Least-squares slope of the steady samples in MB per hour, and the window's length."""
        points = self.steady(column)
        if len(points) < 3:
            return None, 0.0
        fit = statistics.linear_regression([t for t, _ in points], [mb for _, mb in points])
        return fit.slope * 3600, points[-1][0] - points[0][0]


@dataclass
class Rig:
    """What the faults act on."""

    workdir: Path
    site_path: Path
    broker: "PrivateBroker"
    fleet: "Fleet"
    service: subprocess.Popen[bytes]
    http_port: int
    bad: "DeviceClient"  # publishes invalid messages as the `bench` user
    rss: RssSampler
    expected: Expected = field(default_factory=Expected)
    log: list[str] = field(default_factory=list)
    hostile: bool = False

    def note(self, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')}  {text}"
        self.log.append(line)
        print(line, flush=True)


def check(rig: Rig, stored: Stored, *, load_s: float) -> list[str]:
    """Every expectation that failed, in words."""
    failures = []
    if rig.service.poll() is not None:
        failures.append(f"the service exited (code {rig.service.returncode})")
    else:
        try:
            health = httpx.get(f"http://127.0.0.1:{rig.http_port}/healthz", timeout=5)
            if health.status_code != 200:
                failures.append(f"/healthz answered {health.status_code}: {health.text[:200]}")
        except httpx.HTTPError as exc:
            failures.append(f"/healthz did not answer: {exc}")
    for key, sent in sorted(stored.sent.items()):
        if stored.stored.get(key, 0) != sent:
            failures.append(f"{key[0]} of {key[1]}: sent {sent}, stored {stored.stored[key]}")
    if stored.port_rows[0] != stored.port_rows[1]:
        failures.append(
            f"port_samples: {stored.port_rows[0]} ports sent, {stored.port_rows[1]} rows"
        )
    extra = set(stored.stored) - set(stored.sent)
    failures += [f"{t} holds rows of {d}, which sent nothing" for t, d in sorted(extra)]
    quarantined = sum(stored.quarantine.values())
    if quarantined != rig.expected.quarantined:
        failures.append(f"quarantine: {quarantined} rows for {rig.expected.quarantined} sent")
    for row in stored.commands:
        want = "timeout" if row["device"] in rig.expected.silent else "acked"
        if row["outcome"] != want:
            failures.append(
                f"command {row['action']} to {row['device']}/{row['port'] or row['gate'] or ''}"
                f" ({row['reason']}): {row['outcome']}, expected {want}"
            )
    for (rule, subject), times in sorted(rig.expected.alerts.items()):
        raised = stored.raised.get((rule, subject), ("", 0))[1]
        if raised != times:
            failures.append(f"alert {rule} on {subject}: raised {raised} times, expected {times}")
    for (rule, subject), (severity, raised) in sorted(stored.raised.items()):
        if (rule, subject) in rig.expected.alerts:
            continue
        if (rule, subject) not in rig.expected.allowed or raised > 1:
            failures.append(f"unexpected {severity} alert {rule} on {subject}: raised {raised}")
    slope, window = rig.rss.slope_mb_h()
    if slope is not None and window >= JUDGE_MIN_S and slope > RSS_SLOPE_MAX_MB_H:
        failures.append(f"RSS grows {slope:.1f} MB/h over the last {window / 60:.0f} min")
    return failures


def _duplicates(http_port: int) -> str:
    """Redeliveries the last service process found already stored (its own counter)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return "unknown (no /metrics)"
    for line in text.splitlines():
        if line.startswith("facilities_messages_duplicate_total "):
            return f"{float(line.split()[1]):.0f}"
    return "unknown"


def _rss_table(rig: Rig) -> None:
    samples = rig.rss.samples
    (rig.workdir / "rss.csv").write_text(
        "t_s,pid,rss_mb,anon_mb\n"
        + "".join(f"{t:.0f},{p},{mb:.1f},{anon:.1f}\n" for t, p, mb, anon in samples)
    )
    step = max(1, len(samples) // TABLE_ROWS)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    print("\nRSS of the service (VmRSS; of which anonymous)\n   t s      pid    MB   anon")
    for t, pid, mb, anon in shown:
        print(f"{t:6.0f} {pid:8d} {mb:6.1f} {anon:6.1f}")
    anon_slope, _ = rig.rss.slope_mb_h(3)
    slope, window = rig.rss.slope_mb_h()
    if slope is None:
        print("slope: too few samples after the warm-up")
    else:
        verdict = "judged" if window >= JUDGE_MIN_S else f"not judged: under {JUDGE_MIN_S:.0f} s"
        peak = max(row[2] for row in samples)
        print(
            f"slope from a minute after the last fault: {slope:+.2f} MB/h (anonymous"
            f" {anon_slope or 0:+.2f}) over {window / 60:.1f} min ({verdict}; flat means under"
            f" {RSS_SLOPE_MAX_MB_H:g} MB/h); peak {peak:.1f} MB"
        )
    loads = rig.rss.loads or [0.0]
    print(
        f"machine: {os.cpu_count()} CPUs, 1-minute load average during the run min"
        f" {min(loads):.1f}, mean {statistics.fmean(loads):.1f}, max {max(loads):.1f}"
    )


def print_figures(
    rig: Rig, stored: Stored, *, load_s: float, rate: float, failures: list[str]
) -> None:
    _rss_table(rig)
    sent, kept = sum(stored.sent.values()), sum(stored.stored.values())
    print(
        f"\nmessages: sent {sent} in {load_s:.0f} s ({sent / load_s:.1f} msg/s, {rate:.0f} asked),"
        f" stored {kept}; invalid sent {rig.expected.quarantined}, quarantined"
        f" {sum(stored.quarantine.values())} ({dict(stored.quarantine)})"
    )
    by_table: Counter[str] = Counter()
    for (table, _), count in stored.sent.items():
        by_table[table] += count
    print(
        "  redelivered and already stored (the last service process's count):"
        f" {_duplicates(rig.http_port)}"
    )
    print(
        "  sent by kind: "
        + ", ".join(f"{t} {n}" for t, n in sorted(by_table.items()))
        + f"; port readings {stored.port_rows[0]}, port_samples rows {stored.port_rows[1]}"
    )
    outcomes = Counter(row["outcome"] for row in stored.commands)
    tries = sum(row["tries"] for row in stored.commands)
    print(
        f"commands: sent {len(stored.commands)} ({tries} tries), outcomes {dict(outcomes)};"
        f" the devices received {stored.device_commands}"
    )
    for row in stored.commands:
        where = f"{row['device']}/{row['port'] or row['gate'] or '-'}"
        print(f"  {row['action']:>10} {where:<14} {row['reason']:<24} {row['outcome']}")
    print("alerts (rule, subject, severity, raised, expected; 0-1: allowed, not required):")
    keys = sorted(set(stored.raised) | set(rig.expected.alerts))
    for rule, subject in keys:
        severity, raised = stored.raised.get((rule, subject), ("-", 0))
        want = str(rig.expected.alerts.get((rule, subject), 0))
        if (rule, subject) in rig.expected.allowed:
            want = "0-1"
        print(f"  {rule:<22} {subject:<12} {severity:<9} {raised:>3} {want:>3}")
    print("\nevents of the run:")
    for line in rig.log:
        print(f"  {line}")
    if failures:
        print(f"\nFAILED ({len(failures)}):")
        for failure in failures:
            print(f"  - {failure}")
    else:
        print("\nall expectations held")
