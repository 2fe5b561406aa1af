"""Crash: SIGKILL a real daemon at random moments, restart it, and account for every decision.

A real `python -m bridge.cli run` process (tests/support/service.py: pty serial reader, mock GPIO, notify
socket, status socket) takes scans at a steady pace and replicates its audit outbox to a loopback
central (tests/support/fakes/central.py) in small batches. A seeded RNG picks, for each run, when the
SIGKILL lands:

- `mid-append`: a few milliseconds after a scan was written (parse → decide → commit+fsync →
  pulse → log line are in flight);
- `mid-pulse`:  once the status socket reports the relay energised;
- `mid-batch`:  right after the central stored a batch, before it answers (half the time), or a
                few milliseconds later while the daemon reads the answer and commits the ack: the
                window that makes resends;
- `random`:     at a uniformly random moment.

After every restart (and at the end, after a clean drain) `audit()` compares three witnesses:
the daemon's `decision` lines (per run, by `cred=` fingerprint and order), the outbox rows in
audit.db (VERIFY rows between one BOOT and the next are one run's decisions), and what the central
stored and answered. Why a scan may be absent: the worker commits the rows of a batch of scans in one
transaction, then pulses and logs them one by one, so a killed run may end with the rows of its
last commit (one `at`) without log lines; usually one row, more when the worker was held up and
several scans waited (4 rows in a mid-batch kill of stop 26's CI run); a scan the
daemon had not committed when it died has neither, and must be one of the last scans written to
that run (anything skipped earlier would be a scan dropped mid-run).

Prints progress on stderr and one JSON line (the figures) last on stdout. Nothing here asserts:
tests/integration/test_crash.py runs this harness at CI size and asserts on the problems it found.

    python bench/crash.py --kills 200 --seed 7
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.service.status_socket import StatusUnavailable, fetch_status
from tests.support.fakes.central import FakeCentral, write_api_key
from tests.support.fakes.server import RecordedRequest, Reply
from tests.support.harness import Site, iso
from tests.support.service import READER, Service, central_section, write_config
from verifier.credentials import parse
from bridge.state import files as state_files
from verifier.types import fingerprint

BRIDGE_ID = "BRIDGE-SVC"  # what tests/support/service.py writes as bridge.id
KILL_KINDS = ("mid-append", "mid-pulse", "mid-batch", "random")
PROBLEM_KINDS = ("lost", "stored_twice", "relay", "boot", "skipped", "log", "central", "exit")
_DECISION = re.compile(r"^<\d>decision .*\bcred=(\S+)")


@dataclass(frozen=True)
class CrashSettings:
    kills: int = 20
    seed: int = 7
    scan_interval_s: float = 0.04
    grant_share: float = 0.4
    grant_cards: int = 5000  # distinct valid cards, cycled: no scan repeats within the replay window
    pulse_s: float = 0.2
    batch_size: int = 5
    replicate_idle_s: float = 0.05
    warmup_s: tuple[float, float] = (0.3, 0.9)  # range of KillPlan.warmup_s
    kill_fallback_s: float = 5.0  # an armed kill that found no moment by then happens anyway
    final_scans: int = 20
    drain_timeout_s: float = 30.0
    work_dir: Path | None = None


@dataclass(frozen=True)
class KillPlan:
    """Drawn for every run before the first start, so a seed names the same kills whatever the timing."""

    kind: str
    warmup_s: float  # scans flow this long before the kill is armed
    delay_s: float  # random: after the warm-up; mid-append: after the scan; mid-pulse: after the relay
    # was seen energised; mid-batch: after the central stored the batch (0: before it answers)


def kill_plans(settings: CrashSettings) -> list[KillPlan]:
    rng = random.Random(settings.seed)
    kinds = [KILL_KINDS[i % len(KILL_KINDS)] for i in range(settings.kills)]
    rng.shuffle(kinds)
    delays = {"random": lambda: rng.uniform(0.0, 1.0), "mid-append": lambda: rng.uniform(0.0, 0.006),
              "mid-pulse": lambda: rng.uniform(0.0, settings.pulse_s / 2),
              "mid-batch": lambda: rng.choice((0.0, rng.uniform(0.0, 0.005)))}
    return [KillPlan(kind, rng.uniform(*settings.warmup_s), delays[kind]()) for kind in kinds]


@dataclass(frozen=True)
class SentScan:
    run: int
    fingerprint: str
    grant: bool


@dataclass
class Run:
    index: int
    plan: KillPlan | None  # None: the last run, stopped with SIGTERM after the drain
    log_path: Path
    ready_status: dict[str, Any] = field(default_factory=dict)
    pulse_witness: int | None = None  # decisions.total when the status socket showed the relay energised
    killed_at_fallback: bool = False
    exit_code: int | None = None

    @property
    def kill_kind(self) -> str | None:
        return self.plan.kind if self.plan else None


@dataclass
class CentralView:
    """What the central held and answered, read at one instant under the tap's lock."""

    events: dict[str, dict[str, Any]]
    stored: collections.Counter[str]
    answered_duplicate: collections.Counter[str]
    posted: collections.Counter[str]


@dataclass
class Tally:
    """Per-audit counts (the last audit's are the figures)."""

    decisions_logged: int = 0
    committed_not_logged: int = 0
    scans_absent: int = 0
    foreign_rows: int = 0
    events_local: int = 0
    pending_local: int = 0
    grants_committed: int = 0


@dataclass
class CrashResult:
    settings: CrashSettings
    runs: list[Run] = field(default_factory=list)
    sent: list[SentScan] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in PROBLEM_KINDS})
    audits: int = 0
    tally: Tally = field(default_factory=Tally)
    central: CentralView | None = None
    drained: bool = False
    exit_code: int | None = None
    wall_s: float = 0.0

    def note(self, kind: str, message: str) -> None:
        if message not in self.problems[kind]:
            self.problems[kind].append(message)

    @property
    def kills(self) -> int:
        return sum(r.kill_kind is not None for r in self.runs)

    def figures(self) -> dict[str, Any]:
        c = self.central
        kinds = collections.Counter(r.kill_kind for r in self.runs if r.kill_kind)
        return {
            "kills": self.kills, "kills_by_kind": dict(sorted(kinds.items())),
            "kills_relay_energised": sum(r.pulse_witness is not None for r in self.runs),
            "scans_sent": len(self.sent), "decisions_logged": self.tally.decisions_logged,
            "committed_not_logged": self.tally.committed_not_logged, "scans_absent": self.tally.scans_absent,
            "grants_committed": self.tally.grants_committed,
            "events_local": self.tally.events_local, "events_central": len(c.events) if c else 0,
            "lost": len(self.problems["lost"]),
            "duplicates_central": sum(c.answered_duplicate.values()) if c else 0,
            "resent_ids": sum(n > 1 for n in c.posted.values()) if c else 0,
            "stored_twice": sum(n > 1 for n in c.stored.values()) if c else 0,
            "relay_energised_after_restart": len(self.problems["relay"]),
            "boot_not_crash": len(self.problems["boot"]),
            "pending_after_stop": self.tally.pending_local, "drained": self.drained, "audits": self.audits,
            "problems": sum(len(v) for v in self.problems.values()), "wall_s": round(self.wall_s, 1),
        }


class IngestTap:
    """Wraps the fake central's ingest route: counts, per event id, what was posted, stored and
    answered as a duplicate, and can SIGKILL the daemon a moment after the central stored a batch."""

    def __init__(self, central: FakeCentral) -> None:
        self.central = central
        self._key = ("POST", f"/bridges/{central.bridge_id}/events")
        self._inner = central.server.routes[self._key]
        central.server.routes[self._key] = self._handle
        self._lock = threading.Lock()
        self._stored: collections.Counter[str] = collections.Counter()
        self._duplicate: collections.Counter[str] = collections.Counter()
        self._posted: collections.Counter[str] = collections.Counter()
        self._armed: tuple[Callable[[], None], float] | None = None

    def arm(self, kill: Callable[[], None], delay_s: float) -> None:
        with self._lock:
            self._armed = (kill, delay_s)

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            reply = self._inner(request)
            if reply.status == 200 and isinstance(request.json, dict):
                self._posted.update(str(e.get("id")) for e in request.json["events"] if isinstance(e, dict))
                self._stored.update(reply.body["stored"])
                self._duplicate.update(reply.body["duplicates"])
            armed, self._armed = self._armed, None
        if armed is not None:
            kill, delay_s = armed
            if delay_s <= 0:
                kill()  # stored, and the daemon dies before it hears so: the whole batch must come again
            else:
                threading.Timer(delay_s, kill).start()  # while the answer travels or the ack commits
        return reply

    def view(self) -> CentralView:
        with self._lock:
            return CentralView(dict(self.central.events), self._stored.copy(), self._duplicate.copy(),
                               self._posted.copy())


class Killer:
    """One SIGKILL per run, whichever thread (main loop or the tap's timer) gets there first."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc  # this run's process: a late timer must never hit the next run's
        self._lock = threading.Lock()
        self.fired = False

    def __call__(self) -> None:
        with self._lock:
            if not self.fired and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.fired = True


class ScanFeed:
    """Unique scans (every card at most once per cycle of the grant pool), so a fingerprint names one scan."""

    def __init__(self, svc: Service, rng: random.Random, settings: CrashSettings) -> None:
        self.svc, self.rng, self.settings = svc, rng, settings
        # The daemon's own key source (state_dir/fingerprint.key), so sent fingerprints match its lines.
        self.fp_key = state_files.fingerprint_key(svc.state)
        self.sent: list[SentScan] = []
        self._grants = 0
        self._denies = 0

    @staticmethod
    def grant_card(i: int) -> str:
        return f"C0{i:012X}"

    def send(self, run: int) -> SentScan:
        grant = self.rng.random() < self.settings.grant_share
        if grant:
            raw = self.grant_card(self._grants % self.settings.grant_cards)
            self._grants += 1
        else:
            raw = f"DE{self._denies:012X}"  # in no bundle: DENY NO_GRANT
            self._denies += 1
        scan = SentScan(run, fingerprint(parse(raw.encode()), self.fp_key), grant)
        self.sent.append(scan)
        self.svc.pty.type(raw)
        return scan


def site_records(settings: CrashSettings, now: datetime) -> list[dict[str, Any]]:
    day = timedelta(days=1)
    return [
        {"type": "zone", "id": "zone_a", "name": "Stockroom", "readers": [READER]},
        {"type": "user", "id": "user_ok", "name": "Layla Hassan"},
        {"type": "grant", "id": "g1", "userId": "user_ok", "zoneId": "zone_a",
         "startsAt": iso(now - 30 * day), "endsAt": iso(now + 30 * day)},
        *({"type": "card", "number": ScanFeed.grant_card(i), "userId": "user_ok"} for i in range(settings.grant_cards)),
    ]


def status(svc: Service) -> dict[str, Any] | None:
    try:
        return fetch_status(svc.runtime / "status.sock", timeout=2.0)
    except StatusUnavailable:
        return None


def logged_fingerprints(path: Path) -> list[str]:
    """`cred=` of each complete `decision` line, in order (a line cut by the kill is not a decision line)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return [m.group(1) for line in text.splitlines(keepends=True)
            if line.endswith("\n") and (m := _DECISION.match(line))]


def read_outbox(state: Path) -> list[tuple[int, str, str, str, dict[str, Any], int]]:
    """Every row of audit.db, by seq. Read-only, alongside the running daemon (WAL)."""
    with closing(sqlite3.connect(f"file:{state / 'audit.db'}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute("SELECT seq, id, at, type, body, acked FROM events ORDER BY seq").fetchall()
    return [(seq, id_, at, type_, json.loads(body), acked) for seq, id_, at, type_, body, acked in rows]


def last_commit(verify: list[tuple[int, str, str, str, dict[str, Any], int]]) -> int:
    """How many of a run's last VERIFY rows came from its last commit. The worker commits a batch
    of scans in one transaction, then pulses and logs them one by one, so a kill can leave the
    whole batch without lines. The rows of one `append_many` share `at` to the millisecond; scans
    that were committed one by one, 40 ms apart, do not."""
    if not verify:
        return 0
    last = verify[-1][2]
    return sum(1 for _ in itertools.takewhile(lambda r: r[2] == last, reversed(verify)))


def audit(result: CrashResult, state: Path, central: Callable[[], CentralView], finished: list[Run],
          final: bool) -> None:
    """Compare log lines, outbox rows and the central for every finished run; note what is wrong."""
    result.audits += 1
    view = central()  # first the central, then the outbox: whatever it holds was committed locally before
    rows = read_outbox(state)
    tally = Tally(events_local=len(rows), pending_local=sum(not r[5] for r in rows))
    local = {r[1]: r for r in rows}
    boots = [i for i, r in enumerate(rows) if r[3] == "BOOT"]
    if len(boots) != len(result.runs):
        result.note("lost", f"{len(boots)} BOOT events for {len(result.runs)} daemon starts")
    for k, at in enumerate(boots):
        expected = "first-start" if k == 0 else "crash"
        reason = rows[at][4].get("previousExit", {}).get("reason")
        if reason != expected:
            result.note("boot", f"run {k}: BOOT previousExit.reason={reason!r}, expected {expected!r}")
    committed: list[tuple[int, str]] = []  # (run, fingerprint) of every VERIFY row, in seq order
    for k, run in enumerate(finished):
        end = boots[k + 1] if k + 1 < len(boots) else len(rows)
        verify = [r for r in rows[boots[k] + 1:end] if r[3] == "VERIFY"] if k < len(boots) else []
        row_fps = [str(r[4].get("credentialFingerprint")) for r in verify]
        committed += [(k, fp) for fp in row_fps]
        tally.grants_committed += sum(r[4].get("decision") == "GRANT" for r in verify)
        log_fps = logged_fingerprints(run.log_path)
        tally.decisions_logged += len(log_fps)
        missing = collections.Counter(log_fps) - collections.Counter(row_fps)
        for fp in missing.elements():
            result.note("lost", f"run {k}: decision cred={fp} was logged but is in no audit row")
        if not missing and row_fps[:len(log_fps)] != log_fps:
            result.note("log", f"run {k}: decision lines and audit rows disagree on order")
        unlogged = len(row_fps) - len(log_fps)
        tally.committed_not_logged += max(0, unlogged)
        allowed = last_commit(verify) if run.kill_kind is not None else 0
        if unlogged > allowed:
            result.note("log", f"run {k}: {unlogged} audit rows without a decision line (at most {allowed}, "
                               "the rows of the last commit, may be in flight)")
        if run.pulse_witness is not None:
            n = run.pulse_witness
            if len(verify) < n or not any(r[4].get("decision") == "GRANT" and not r[4].get("replay") for r in verify[:n + 1]):
                result.note("lost", f"run {k}: relay seen energised after {n} decisions, but no GRANT row among the first {n + 1}")
        if run.kill_kind is not None and run.exit_code != -signal.SIGKILL:
            result.note("exit", f"run {k}: the daemon ended with {run.exit_code} before the SIGKILL")
        ready = run.ready_status
        relay = ready.get("doors", {}).get("main", {}).get("relay")
        if relay != "released":
            result.note("relay", f"run {k}: status right after READY says relay={relay!r}")
        if k and ready.get("previous_exit") != "crash":
            result.note("boot", f"run {k}: status says previous_exit={ready.get('previous_exit')!r}")
    _audit_scans(result, committed, finished, tally, final)
    _audit_central(result, view, rows, local, final)
    result.tally = tally
    result.central = view


def _audit_scans(result: CrashResult, committed: list[tuple[int, str]], finished: list[Run], tally: Tally,
                 final: bool) -> None:
    """Rows follow the scans written, in order; a scan never committed must be in a killed run's tail."""
    sent = [s for s in result.sent if s.run < len(finished)]
    i = 0
    taken: list[int] = []
    for run, fp in committed:
        j = i
        while j < len(sent) and sent[j].fingerprint != fp:
            j += 1
        if j == len(sent):
            tally.foreign_rows += 1
            result.note("skipped", f"run {run}: audit row cred={fp} matches no scan written after the previous row")
            continue
        taken.append(j)
        i = j + 1
    last_taken: dict[int, int] = {}
    for j in taken:
        last_taken[sent[j].run] = j
    taken_set = set(taken)
    for j, scan in enumerate(sent):
        if j in taken_set:
            continue
        tally.scans_absent += 1
        if j < last_taken.get(scan.run, -1):
            result.note("skipped", f"run {scan.run}: scan cred={scan.fingerprint} was never decided, a later one was")
        elif final and finished[scan.run].kill_kind is None:
            result.note("lost", f"run {scan.run} (stopped cleanly): scan cred={scan.fingerprint} was never decided")


def _audit_central(result: CrashResult, view: CentralView, rows: list[Any], local: dict[str, Any], final: bool) -> None:
    for event_id, event in view.events.items():
        row = local.get(event_id)
        if row is None:
            result.note("central", f"central holds {event_id}, which is in no local row")
        elif event != {"id": row[1], "at": row[2], "type": row[3], **row[4]}:
            result.note("central", f"central's copy of {event_id} differs from the local row")
    for event_id, n in view.stored.items():
        if n > 1:
            result.note("stored_twice", f"{event_id} stored {n} times")
    for event_id, n in view.posted.items():
        if view.answered_duplicate[event_id] != n - view.stored[event_id]:
            result.note("stored_twice", f"{event_id} posted {n}×, stored {view.stored[event_id]}×, "
                        f"answered duplicate {view.answered_duplicate[event_id]}×")
    for r in rows:
        if r[5] and r[1] not in view.events:
            result.note("lost", f"row seq {r[0]} ({r[3]}) is acked but the central does not hold it")
    if final:
        if set(view.events) != set(local):
            gone = len(set(local) - set(view.events))
            result.note("lost", f"after the drain {gone} local events are not at the central")
        elif list(view.events) != [r[1] for r in rows]:
            result.note("central", "the central stored the events in another order than the outbox's")


def _drive(svc: Service, run: Run, feed: ScanFeed, tap: IngestTap, s: CrashSettings) -> None:
    """Scans at a steady pace until the kill chosen for this run has landed."""
    assert svc.proc is not None
    kill = Killer(svc.proc)
    start = time.monotonic()
    next_scan = next_poll = start
    plan = run.plan
    assert plan is not None
    armed_at = start + plan.warmup_s
    batch_armed = False
    while svc.proc.poll() is None:
        now = time.monotonic()
        if now >= next_scan:
            feed.send(run.index)
            next_scan += s.scan_interval_s
            if plan.kind == "mid-append" and now >= armed_at:
                time.sleep(plan.delay_s)
                kill()
        if now >= armed_at and not kill.fired:
            if plan.kind == "random" and now >= armed_at + plan.delay_s:
                kill()
            elif plan.kind == "mid-pulse" and now >= next_poll:
                next_poll = now + 0.01
                snap = status(svc)
                if snap and snap.get("doors", {}).get("main", {}).get("relay") == "energised":
                    run.pulse_witness = snap["decisions"]["total"]
                    time.sleep(plan.delay_s)
                    kill()
            elif plan.kind == "mid-batch" and not batch_armed:
                tap.arm(kill, plan.delay_s)
                batch_armed = True
        if now >= armed_at + s.kill_fallback_s and not kill.fired:
            run.killed_at_fallback = True
            kill()
        time.sleep(max(0.0, min(next_scan - time.monotonic(), 0.005)))
    tap.disarm()
    run.exit_code = svc.proc.wait(10)


def _start_run(result: CrashResult, svc: Service, plan: KillPlan | None) -> Run:
    svc.restart()
    run = Run(len(result.runs), plan, svc.log)
    run.ready_status = status(svc) or {}  # before any scan: nothing has been written to the pty yet
    result.runs.append(run)
    svc.wait_log("reader_connected")  # a pty discards what is written while no one holds its slave
    return run


def run_crash(settings: CrashSettings, progress: Callable[[str], None] = lambda _: None) -> CrashResult:
    started = time.monotonic()
    result = CrashResult(settings)
    plans = kill_plans(settings)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="crash-") if settings.work_dir is None else None
    work = Path(tmp_ctx.name) if tmp_ctx else settings.work_dir
    assert work is not None
    if (work / "state").exists():
        raise ValueError(f"{work}/state exists: give an empty work dir (the audit would mix two runs)")
    central = FakeCentral(bridge_id=BRIDGE_ID)
    tap = IngestTap(central)
    central.server.start()
    svc: Service | None = None
    try:
        site, now = Site(), datetime.now(UTC)
        (work / "state").mkdir(parents=True, exist_ok=True)
        site.install(work / "state", site_records(settings, now), now=now)
        key_file = write_api_key(work / "central.key")
        svc = Service(work, site=site)
        tail = central_section(central.url, key_file, batch_size=settings.batch_size,
                               replicate_idle_s=settings.replicate_idle_s, poll_interval_s=1.0)
        tail += "[policy]\nrate_limit_denies = 1000000\n"  # unknown cards are the DENYs; none may turn into RATE_LIMITED
        write_config(svc.config, svc.state, site, svc.pty.path, pulse_s=str(settings.pulse_s), tail=tail)
        feed = ScanFeed(svc, random.Random(settings.seed + 1), settings)
        result.sent = feed.sent
        for plan in plans:
            run = _start_run(result, svc, plan)
            audit(result, svc.state, tap.view, result.runs[:-1], final=False)
            _drive(svc, run, feed, tap, settings)
            progress(f"kill {run.index + 1}/{settings.kills} {plan.kind}: {len(feed.sent)} scans so far, "
                     f"{sum(len(v) for v in result.problems.values())} problems")
        last = _start_run(result, svc, None)
        audit(result, svc.state, tap.view, result.runs[:-1], final=False)
        for _ in range(settings.final_scans):
            feed.send(last.index)
            time.sleep(settings.scan_interval_s)
        _wait_logged(last, settings.final_scans, settings.drain_timeout_s)
        result.drained = _wait_drained(svc, tap, settings.drain_timeout_s)
        svc.signal(signal.SIGTERM)
        result.exit_code = svc.wait(15)
        audit(result, svc.state, tap.view, result.runs, final=True)
    finally:
        if svc is not None:
            svc.close()
        central.server.stop()
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    result.wall_s = time.monotonic() - started
    return result


def _wait_logged(run: Run, count: int, timeout_s: float) -> None:
    """Until `count` decision lines (or timeout: the final audit then names the scans not decided)."""
    deadline = time.monotonic() + timeout_s
    while len(logged_fingerprints(run.log_path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_drained(svc: Service, tap: IngestTap, timeout_s: float) -> bool:
    """Until the central holds every local event and the daemon has nothing pending (or timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        held = set(tap.view().events)
        rows = read_outbox(svc.state)
        if all(r[1] in held for r in rows) and all(r[5] for r in rows):
            return True
        time.sleep(0.1)
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=CrashSettings.kills)
    ap.add_argument("--seed", type=int, default=CrashSettings.seed)
    ap.add_argument("--interval", type=float, default=CrashSettings.scan_interval_s, help="seconds between scans")
    ap.add_argument("--batch-size", type=int, default=CrashSettings.batch_size)
    ap.add_argument("--work-dir", type=Path, help="keep state, config and every run's log here")
    args = ap.parse_args()
    settings = CrashSettings(kills=args.kills, seed=args.seed, scan_interval_s=args.interval,
                             batch_size=args.batch_size, work_dir=args.work_dir)
    result = run_crash(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    for kind, messages in result.problems.items():
        for message in messages:
            print(f"PROBLEM {kind}: {message}", file=sys.stderr)
    print(json.dumps(result.figures()))


if __name__ == "__main__":
    main()
