"""Run every benchmark in bench/, collect their last-line JSON, write bench/results/report.md.

Each bench runs as its own subprocess with a timeout, so one that hangs or crashes is reported as
failed with its error instead of taking the others down or vanishing from the table. Benches this
script does not know by name are found by looking for `if __name__ == "__main__"` in bench/*.py and
run with their defaults (with `--quick` in quick mode, if their `--help` offers it).

Each bench's section ends with its figures as multiples of a floor measured in the same run
(`FLOORS`): a decision against one prepared-statement look-up in the same cache and against
one online verify round trip to a loopback central (cached vs online, bench/online.py), scan-to-relay
against one fsync'd audit append on the same file system, the decisions during a sync against
those just before it, the start against the bare interpreter's. A ratio travels between machines
better than a figure: a Pi is slower at both.

The load bench also writes its raw scan-to-relay latencies, which become
bench/results/scan_to_relay.png (histogram and CDF; needs matplotlib, the `bench` extra).

    python bench/report.py                      # full sizes: takes a while (tens of minutes)
    python bench/report.py --quick              # small sizes, to try it out
    python bench/report.py --grants 100000 --only decide.py load.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
SELF = Path(__file__).name


@dataclass(frozen=True)
class Job:
    """One bench run: a script and its arguments; `latencies` names the load bench's raw output."""

    label: str
    script: str
    args: tuple[str, ...] = ()
    latencies: Path | None = None


@dataclass
class Outcome:
    job: Job
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # 1-minute load average when the bench started and ended: the machine is shared.
    load: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def known_jobs(quick: bool, grants: int) -> list[Job]:
    """Sizes for the benches this script knows; quick mode keeps each to seconds or a minute."""
    lat_main, lat_steady = RESULTS / "load_latencies.json", RESULTS / "load_latencies_steady.json"
    if quick:
        return [
            Job("decide.py", "decide.py", ("--grants", str(grants), "--decisions", "20000")),
            Job("load.py", "load.py", ("--rate", "1000", "--seconds", "2", "--latencies", str(lat_main)), lat_main),
            Job("load.py (steady)", "load.py", ("--rate", "100", "--seconds", "5", "--latencies", str(lat_steady)),
                lat_steady),
            Job("replicate.py", "replicate.py", ("--events", "5000")),
            Job("sync.py", "sync.py", ("--grants", "20000")),
            Job("startup.py", "startup.py", ("--grants", "10000", "--runs", "3")),
        ]
    return [
        Job("decide.py", "decide.py", ("--grants", str(grants))),
        Job("load.py", "load.py", ("--latencies", str(lat_main)), lat_main),
        Job("load.py (steady)", "load.py", ("--rate", "100", "--seconds", "60", "--latencies", str(lat_steady)),
            lat_steady),
        Job("replicate.py", "replicate.py"),
        Job("sync.py", "sync.py"),
        Job("startup.py", "startup.py", ("--grants", str(grants), "--runs", "3")),
    ]


def discover(quick: bool, grants: int) -> list[Job]:
    jobs = [j for j in known_jobs(quick, grants) if (BENCH / j.script).exists()]
    known = {j.script for j in jobs} | {SELF}
    for path in sorted(BENCH.glob("*.py")):
        if path.name in known or path.name.startswith("_"):
            continue
        if 'if __name__ == "__main__"' not in path.read_text(errors="replace"):
            continue  # a helper module, not a bench
        args = ("--quick",) if quick and offers_quick(path) else ()
        jobs.append(Job(path.name, path.name, args))
    return jobs


def offers_quick(path: Path) -> bool:
    try:
        proc = subprocess.run([sys.executable, str(path), "--help"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return False
    return "--quick" in proc.stdout


def last_json(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        value = json.loads(lines[-1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def run(job: Job, timeout: float) -> Outcome:
    before = os.getloadavg()[0]
    outcome = _run(job, timeout)
    outcome.load = (round(before, 2), round(os.getloadavg()[0], 2))
    return outcome


def _run(job: Job, timeout: float) -> Outcome:
    cmd = [sys.executable, str(BENCH / job.script), *job.args]
    print(f"… {job.label} {' '.join(job.args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or "")[-800:]
        return Outcome(job, time.monotonic() - started, error=f"timed out after {timeout:.0f} s\n{tail}".rstrip())
    seconds = time.monotonic() - started
    figures = last_json(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        return Outcome(job, seconds, error=f"exit code {proc.returncode}\n{tail}".rstrip())
    if figures is None:
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1][:200]
        return Outcome(job, seconds, error=f"last line of stdout is not a JSON object: {last}")
    return Outcome(job, seconds, figures)


# --- figures against their floors ---------------------------------------------------------------


@dataclass(frozen=True)
class Floor:
    """`figure` / `floor`, both keys of the same bench's JSON (same unit), and what the floor is."""

    figure: str
    floor: str
    floor_is: str


FLOORS: dict[str, tuple[Floor, ...]] = {
    "decide.py": (
        Floor("p99_us_card", "lookup_us_prepared", "one prepared-statement card look-up in the same cache (mean)"),
        # Percentile against percentile: the look-up's own p99 carries the same VM jitter and
        # page-cache misses as the decisions' p99 (bench/decide.py times each look-up alone).
        Floor("p99_us_card", "lookup_us_prepared_p99", "one prepared-statement card look-up in the same cache (its p99)"),
        Floor("p99_us_jwt", "lookup_us_prepared", "one prepared-statement card look-up in the same cache (mean)"),
        Floor("p99_us", "lookup_us_prepared", "one prepared-statement card look-up in the same cache (mean)"),
        # Cached vs online: below 1, a decision from the cache beats the best an online answer can do.
        Floor("p99_us_card", "online_p50_us", "one online verify round trip to a loopback central (median)"),
        Floor("p99_us_jwt", "online_p50_us", "one online verify round trip to a loopback central (median)"),
    ),
    "load.py": (
        Floor("p99_ms", "outbox_append_ms", "one fsync'd audit append on the same file system"),
        Floor("max_ms", "outbox_append_ms", "one fsync'd audit append on the same file system"),
    ),
    "sync.py": (
        Floor("p99_us_during", "p99_us_before", "decisions' p99 in the seconds before the sync"),
        Floor("p99_us_fetching", "p99_us_before", "decisions' p99 in the seconds before the sync"),
        Floor("max_us_during", "p99_us_before", "decisions' p99 in the seconds before the sync"),
    ),
    "startup.py": (
        Floor("ready_ms", "python_start_ms", "the interpreter's own start (python -c pass)"),
        Floor("first_decision_ms", "python_start_ms", "the interpreter's own start (python -c pass)"),
    ),
}


def against_floors(script: str, figures: dict[str, Any]) -> list[tuple[Floor, float]]:
    """Each known (figure, floor) pair this run has, as figure / floor; pairs missing a value or
    with a zero floor are left out rather than shown as 0 or infinity."""
    found = []
    for f in FLOORS.get(script, ()):
        value, floor = figures.get(f.figure), figures.get(f.floor)
        if isinstance(value, (int, float)) and isinstance(floor, (int, float)) and floor > 0:
            found.append((f, value / floor))
    return found


def times(ratio: float) -> str:
    """`18.0×`, or for a fraction two significant digits (`0.029×`): cached against online is small."""
    return f"{ratio:,.1f}×" if ratio >= 1 else f"{ratio:.2g}×"


# --- the machine -----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):  # x86 / Raspberry Pi
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = f"{release.get('PRETTY_NAME', '').strip(chr(34))} ({platform.system()} {platform.release()})"
    except OSError:
        pass
    return {
        "CPU": cpu, "cores": f"{psutil.cpu_count(logical=False) or '?'} physical, {os.cpu_count()} logical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB", "Python": platform.python_version(), "OS": os_name,
    }


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


# --- the plot --------------------------------------------------------------------------------------


def plot(outcomes: list[Outcome], path: Path) -> str | None:
    """Histogram and CDF of every load run's scan-to-relay latencies; returns why not, if not."""
    series = []
    for o in outcomes:
        if o.ok and o.job.latencies is not None and o.job.latencies.exists():
            values = json.loads(o.job.latencies.read_text()).get("scan_to_relay_ms", [])
            if values:
                series.append((f"{o.job.label}: {o.figures.get('target_rate')}/s target", sorted(values)))
    if not series:
        return "no load run produced latencies"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    low = max(0.01, min(v[0] for _, v in series))
    high = max(v[-1] for _, v in series)
    bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 60
    for label, values in series:
        n = len(values)
        hist.hist(values, bins=bins, weights=[1 / n] * n, alpha=0.6, label=label)
        cdf.plot(values, [(i + 1) / n for i in range(n)], label=label)
    for ax in (hist, cdf):
        ax.set_xscale("log")
        ax.set_xlabel("scan to relay (ms, log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    hist.set_ylabel("fraction of scans")
    cdf.set_ylabel("fraction of scans ≤ x")
    hist.set_title("Scan-to-relay latency")
    cdf.set_title("CDF")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --- the report ------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def render(outcomes: list[Outcome], quick: bool, plot_note: str | None, png: Path) -> str:
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out = ["# door-bridge benchmarks", "",
           (f"{now} · commit `{commit()}` · {'quick sizes (`--quick`)' if quick else 'full sizes'} · "
            f"generated by `python bench/report.py{' --quick' if quick else ''}`"), "",
           "## Machine", "", "| | |", "| --- | --- |"]
    out += [f"| {k} | {cell(v)} |" for k, v in machine().items()]
    out += ["", "## Runs", "", "| bench | arguments | result | seconds | load (1 min) at start → end |",
            "| --- | --- | --- | ---: | --- |"]
    for o in outcomes:
        args = " ".join(a for a in o.job.args if not a.endswith(".json") and a != "--latencies") or "(defaults)"
        load = f"{o.load[0]} → {o.load[1]}" if o.load else "?"
        out.append(f"| {o.job.label} | `{args}` | {'ok' if o.ok else '**FAILED**'} | {o.seconds:.0f} | {load} |")
    for o in outcomes:
        out += ["", f"## {o.job.label}", ""]
        if not o.ok:
            out += ["**Failed:**", "", "```", o.error or "", "```"]
            continue
        out += ["| figure | value |", "| --- | ---: |"]
        out += [f"| {k} | {cell(v)} |" for k, v in o.figures.items()]
        if ratios := against_floors(o.job.script, o.figures):
            out += ["", "| figure | × its floor | floor (same run) |", "| --- | ---: | --- |"]
            out += [f"| {f.figure} | {times(ratio)} | {f.floor} = {cell(o.figures[f.floor])}: {f.floor_is} |"
                    for f, ratio in ratios]
        if o.job.script == "load.py":
            out += load_notes(o.figures)
    out += ["", "## Scan to relay", ""]
    out += [f"![scan-to-relay latency]({png.name})"] if plot_note is None else [f"No plot: {plot_note}."]
    return "\n".join(out) + "\n"


def load_notes(f: dict[str, Any]) -> list[str]:
    notes = []
    target, rate, append_ms = f.get("target_rate") or 0, f.get("rate") or 0, f.get("outbox_append_ms") or 0
    if target and rate < 0.95 * target:
        notes.append(f"The daemon did not keep up: {rate:,.0f} decisions/s against {target:,.0f} scans/s offered, so "
                     f"scans queued and latency grew with the backlog (drained {f.get('drain_s')} s after the last "
                     f"write). Daemon CPU was {f.get('cpu_percent')} % of one core; one fsync'd audit append took "
                     f"{append_ms} ms on {f.get('state_fs')}, i.e. at most ~{1000 / append_ms:,.0f}/s when every "
                     "decision commits its own row before the relay moves." if append_ms else
                     f"The daemon did not keep up: {rate:,.0f} decisions/s against {target:,.0f} scans/s offered.")
    if f.get("dropped") or f.get("duplicated") or f.get("wrong_decisions") or f.get("healthy") is False:
        notes.append(f"**Correctness problem:** dropped {f.get('dropped')}, duplicated {f.get('duplicated')}, "
                     f"wrong decisions {f.get('wrong_decisions')}, healthy {f.get('healthy')}.")
    else:
        notes.append("Nothing dropped: every scan written is in the audit DB exactly once with the expected decision, "
                     "and every GRANT pulsed its relay.")
    return [""] + notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, to try it out")
    ap.add_argument("--grants", type=int, help="bench/decide.py's cache size (default 1,000,000; 10,000 with --quick)")
    ap.add_argument("--timeout", type=float, help="per bench, seconds (default 1800; 300 with --quick)")
    ap.add_argument("--only", nargs="*", help="run only these (labels or script names)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for report.md and scan_to_relay.png")
    args = ap.parse_args()
    grants = args.grants or (10_000 if args.quick else 1_000_000)
    timeout = args.timeout or (300.0 if args.quick else 1800.0)
    jobs = discover(args.quick, grants)
    if args.only:
        jobs = [j for j in jobs if j.label in args.only or j.script in args.only]
    outcomes = [run(job, timeout) for job in jobs]
    png = args.out / "scan_to_relay.png"
    note = plot(outcomes, png)
    report = args.out / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(outcomes, args.quick, note, png))
    failed = [o.job.label for o in outcomes if not o.ok]
    print(f"wrote {report}{'' if note else f' and {png}'}; {len(outcomes) - len(failed)} ok, {len(failed)} failed",
          file=sys.stderr)
    print(json.dumps({"benches": len(outcomes), "failed": failed, "report": str(report)}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
