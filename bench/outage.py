"""A day without WAN, on an accelerated clock: the door keeps deciding, the backlog drains after.

An in-process `Daemon` (real SQLite grant cache and audit outbox with fsync, gpiozero MockFactory
relay, local-first) talks to two loopback fakes: the central (bridge protocol: bundle sync and
event ingest; tests/support/fakes/central.py, in a process of its own so its JSON parsing does not share
the daemon's GIL) and Frontelio (heartbeats; tests/support/fakes/frontelio.py, in this process).

1. Both fakes up: the daemon syncs the central's bundle, whose `not_after` falls inside the day,
   and heartbeats; then both go down and the daemon notices (`daemon.health.upstream` offline).
2. 24 h of door traffic in seconds: the injected clock is moved to each scan's instant and the
   scan goes through `daemon.pipeline.handle`, as an input's would (4 readers on one door; valid cards,
   a revoked card, unknown cards). Every decision is checked against what the cache implies for
   that instant: GRANT/DENY from the cache until `not_after`; from then on `CACHE_STALE` with
   `staleness = "deny"`, the same decisions as before with `"warn"`.
3. The central and Frontelio come back: the backlog (one audit event per scan) must drain in
   order, nothing lost, nothing stored twice; heartbeats resume; a fresh bundle ends staleness.

Intervals shortened from production AFTER config validation (the config refuses them, so a fleet
cannot hammer its central): `heartbeat_interval_s` 0.2 s (≥ 10 s validated, 300 s default).
Within validation but shorter than production: retry deadline 1 s and max wait 0.2 s (240 s and
60 s), breaker 3 failures / 0.5 s (5 / 30 s), sync poll 1 s without jitter (60 s ± 20 %),
replication idle 0.1 s (1 s). So `drain_s` counts from the central's return with no back-off to
sit out; bench/fleet.py measures reconnection with production back-off.

Prints figures on stderr, then one JSON object as the last line. Not a test: nothing here asserts
(tests/integration/test_outage.py runs the same harness at CI size and asserts).

    python bench/outage.py                         # 100,000 scans over 24 h, staleness deny
    python bench/outage.py --events 20000 --staleness warn
    python bench/outage.py --quick                 # 5,000 scans
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import structlog
from gpiozero.pins.mock import MockFactory

from bridge.config import Config, from_dict
from bridge.service.daemon import Daemon
from bridge.inputs.base import Scan
from tests.support.fakes.central import API_KEY as CENTRAL_KEY
from tests.support.fakes.central import FakeCentral
from tests.support.fakes.frontelio import API_KEY as FRONTELIO_KEY
from tests.support.fakes.frontelio import FakeFrontelio
from verifier.types import AccessDecision, Decision, Reason, Source

T0 = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)  # the WAN goes down
BRIDGE_ID = "BRIDGE-1"  # the fake central's registered bridge
RELAY_PIN = 17
REVOKED_CARD = "0A1B2C3D"
Expected = tuple[Decision, Reason | None]


@dataclass(frozen=True)
class OutageSettings:
    work_dir: Path
    events: int = 100_000  # scans during the outage: the backlog is one audit event per scan
    hours: float = 24.0
    staleness: Literal["deny", "warn"] = "deny"
    not_after_h: float = 12.0  # the bundle's not_after, hours after the WAN went down
    readers: int = 4
    holders: int = 200
    deny_one_in: int = 10  # of each reader's scans: alternately the revoked card and an unknown one
    drain_within_s: float = 900.0  # a bound, not a target: give up waiting for the drain after this


@dataclass
class OutageResult:
    settings: OutageSettings
    not_after: datetime
    online_before: bool | None = None
    online_during: bool | None = None  # daemon.health.upstream.online when the first outage scan was decided
    scans: int = 0
    scan_at_not_after: bool = False  # one scan fell exactly on not_after (the half-open boundary)
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (phase, decision, reason)
    wrong: list[str] = field(default_factory=list)  # decisions other than the cache implies (first 20)
    wrong_count: int = 0
    online_decisions: int = 0
    decision_logs: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (phase, decided, upstream)
    warnings: list[dict[str, Any]] = field(default_factory=list)  # warning/error log events (first 500)
    stale_in_status: bool | None = None  # `door-bridge status`'s cache.stale at the end of the day
    pulses_before_stale: int | None = None  # relay pulses when the clock reached not_after
    pulses_after_outage: int = 0
    relay_energised_after: bool | None = None
    backlog: int = 0  # outbox depth when the central came back
    traffic_s: float = 0.0  # real seconds the simulated day took
    first_ack_s: float | None = None  # central back → first events acknowledged
    drain_s: float | None = None  # central back → outbox empty
    local_ids: list[str] = field(default_factory=list)  # every audit event, in the bridge's order
    central_ids: list[str] = field(default_factory=list)  # every event stored, in arrival order
    central_duplicates: int = 0  # ids the central saw again (at-least-once) and did not store
    ingest_requests: int = 0
    heartbeats_before: int = 0
    heartbeats_after: int = 0
    online_after: bool | None = None
    fresh: AccessDecision | None = None  # a valid card after the fresh bundle
    fresh_version: int = 0

    @property
    def events_per_s(self) -> float | None:
        return self.backlog / self.drain_s if self.drain_s else None

    def figures(self) -> dict[str, Any]:
        rate = self.events_per_s
        return {
            "events": self.scans, "hours": self.settings.hours, "staleness": self.settings.staleness,
            "backlog": self.backlog, "traffic_s": round(self.traffic_s, 1),
            "simulated_per_real_s": round(self.settings.hours * 3600 / self.traffic_s) if self.traffic_s else None,
            "first_ack_s": None if self.first_ack_s is None else round(self.first_ack_s, 2),
            "drain_s": None if self.drain_s is None else round(self.drain_s, 2),
            "drain_events_per_s": None if rate is None else round(rate),
            # Batches only: from the first acknowledgement on (leaves out the reconnection).
            "drain_events_per_s_after_first_ack": (round(self.backlog / (self.drain_s - self.first_ack_s))
                                                   if self.drain_s and self.first_ack_s is not None
                                                   and self.drain_s > self.first_ack_s else None),
            "wrong_decisions": self.wrong_count, "lost": len(set(self.local_ids) - set(self.central_ids)),
            "stored_twice": len(self.central_ids) - len(set(self.central_ids)),
            "in_order": self.local_ids == self.central_ids, "central_duplicates": self.central_duplicates,
            "ingest_requests": self.ingest_requests, "heartbeats_after": self.heartbeats_after,
            "online_after": self.online_after,
        }


# --- the traffic --------------------------------------------------------------------------------

def reader_ids(s: OutageSettings) -> list[str]:
    return [f"{BRIDGE_ID}-R{i}" for i in range(s.readers)]


def holder_card(n: int) -> str:
    return f"C0DE{n:06X}"


def records(s: OutageSettings) -> list[dict[str, Any]]:
    wide = {"startsAt": "2026-01-01T00:00:00Z", "endsAt": "2027-01-01T00:00:00Z"}
    out: list[dict[str, Any]] = [{"type": "zone", "id": "zone_main", "name": "Main entrance", "readers": reader_ids(s)},
                                 {"type": "user", "id": "user_rev", "name": "Revoked Holder"},
                                 {"type": "grant", "id": "g_rev", "userId": "user_rev", "zoneId": "zone_main", "revoked": True},
                                 {"type": "card", "number": REVOKED_CARD, "userId": "user_rev"}]
    for n in range(s.holders):
        out += [{"type": "user", "id": f"user_{n}", "name": f"Holder {n}"},
                {"type": "grant", "id": f"g_{n}", "userId": f"user_{n}", "zoneId": "zone_main", **wide},
                {"type": "card", "number": holder_card(n), "userId": f"user_{n}"}]
    return out


def scan_plan(s: OutageSettings, i: int) -> tuple[str, str, Expected]:
    """(reader, card, what the cache implies while fresh) for scan i. Readers take turns; each
    reader sees a deny one scan in `deny_one_in`, so the rate limiter (5 denies a minute) is never
    reached at 100,000 scans a day; a card comes back to a reader only after `holders` scans of
    it, far outside the 2 s replay window."""
    reader_index, turn = i % s.readers, i // s.readers
    reader = reader_ids(s)[reader_index]
    if turn % s.deny_one_in == s.deny_one_in - 1:
        if (turn // s.deny_one_in) % 2:
            return reader, REVOKED_CARD, (Decision.DENY, Reason.GRANT_REVOKED)
        return reader, f"DEAD{turn:06X}", (Decision.DENY, Reason.NO_GRANT)
    return reader, holder_card(turn % s.holders), (Decision.GRANT, None)


def expected(s: OutageSettings, fresh: Expected, at: datetime, not_after: datetime) -> Expected:
    if at >= not_after and s.staleness == "deny":  # windows are half-open: not_after itself is stale
        return Decision.DENY, Reason.CACHE_STALE
    return fresh


class SimClock:
    """The daemon's injected clock: stands still until the harness moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- log tally (a day of decision lines is too many to keep) -------------------------------------

class LogTally:
    """A structlog processor: counts `decision` lines by (phase, decided, upstream), keeps warning
    and error events, drops the rest (as `structlog.testing.capture_logs` does, nothing rendered)."""

    def __init__(self) -> None:
        self.phase = "start"
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.kept: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, method_name: str, event_dict: dict[str, Any]) -> Any:
        if event_dict.get("event") == "decision":
            self.decisions[(self.phase, str(event_dict.get("decided")), str(event_dict.get("upstream")))] += 1
        elif method_name in ("warning", "error", "critical") and len(self.kept) < 500:
            self.kept.append({**event_dict, "log_level": method_name, "phase": self.phase})
        raise structlog.DropEvent


@contextlib.contextmanager
def tallied_logs() -> Iterator[LogTally]:
    tally = LogTally()
    processors = structlog.get_config()["processors"]
    saved = processors.copy()
    processors.clear()
    processors.append(tally)
    structlog.configure(processors=processors)
    try:
        yield tally
    finally:
        processors.clear()
        processors.extend(saved)
        structlog.configure(processors=processors)


# --- the central, in its own process -------------------------------------------------------------

def serve_central(pipe: Any) -> None:
    """`multiprocessing` target: the stock fake central. Sends (url, public key), then obeys
    ("publish", records, issued_at, not_after) → version, ("down",), ("up",), ("report",) →
    stored ids in arrival order and counters, ("stop",)."""
    from verifier.bundle import public_key_text

    fake = FakeCentral(bridge_id=BRIDGE_ID)
    fake.server.start()
    pipe.send((fake.url, public_key_text(fake.signing_key.public_key())))
    while True:
        command, *args = pipe.recv()
        if command == "publish":
            fake.issued_at, fake.not_after = args[1], args[2]
            pipe.send(fake.publish_full(args[0]))
        elif command == "down":
            fake.server.go_down()
            pipe.send(True)
        elif command == "up":
            fake.server.come_up()
            pipe.send(True)
        elif command == "report":
            ingests = fake.server.requests_to(f"/bridges/{BRIDGE_ID}/events")
            pipe.send({"ids": list(fake.events), "duplicates": len(fake.duplicates_seen), "ingest_requests": len(ingests)})
        else:
            fake.server.stop()
            pipe.send(True)
            return


class CentralProcess:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._process = ctx.Process(target=serve_central, args=(child,), daemon=True)
        self._process.start()
        self.url, self.public_key = self._pipe.recv()

    def ask(self, *command: Any) -> Any:
        self._pipe.send(command)
        return self._pipe.recv()

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError, EOFError):
                self.ask("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


# --- the daemon -----------------------------------------------------------------------------------

def key_file(path: Path, key: str) -> Path:
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    return path


def outage_config(s: OutageSettings, central: CentralProcess, frontelio_url: str) -> Config:
    work = s.work_dir
    cfg = from_dict({
        "bridge": {"id": BRIDGE_ID, "state_dir": str(work / "state"), "mode": "local-first"},
        "cache": {"public_key": central.public_key, "staleness": s.staleness},
        "gpio": {"pin_factory": "mock"},
        "doors": {"main": {"relay_pin": RELAY_PIN, "pulse_s": 0.3}},
        "readers": [],
        "upstream": {
            "http": {"retry_deadline_s": 1.0, "retry_max_wait_s": 0.2, "breaker_failures": 3, "breaker_cooldown_s": 0.5},
            "frontelio": {"base_url": frontelio_url, "api_key_file": str(key_file(work / "frontelio.key", FRONTELIO_KEY))},
            "central": {"base_url": central.url, "api_key_file": str(key_file(work / "central.key", CENTRAL_KEY)),
                        "poll_interval_s": 1.0, "poll_jitter": 0.0, "replicate_idle_s": 0.1},
        },
    }, source="<bench/outage.py>")
    # Validated ≥ 10 s; shortened afterwards so heartbeats resume within a second of recovery.
    http = cfg.upstream.http.model_copy(update={"heartbeat_interval_s": 0.2})
    return cfg.model_copy(update={"upstream": cfg.upstream.model_copy(update={"http": http})})


async def until(predicate: Any, timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


def cache_version(daemon: Daemon) -> int:
    daemon.parts.cache.refresh()
    return daemon.parts.cache.meta.version


def audit_ids(state_dir: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / 'audit.db'}?mode=ro", uri=True)) as c:
        return [row[0] for row in c.execute("SELECT id FROM events ORDER BY seq")]


async def run_outage(s: OutageSettings) -> OutageResult:
    s.work_dir.mkdir(parents=True, exist_ok=True)
    not_after = T0 + timedelta(hours=s.not_after_h)
    result = OutageResult(s, not_after)
    central = CentralProcess()
    frontelio = FakeFrontelio()
    frontelio.server.start()
    factory = MockFactory()
    clock = SimClock(T0)
    try:
        with tallied_logs() as logs:
            central.ask("publish", records(s), T0 - timedelta(hours=1), not_after)
            daemon = Daemon(outage_config(s, central, frontelio.server.url), pin_factory=factory, clock=clock)
            await daemon.start()
            try:
                await _day(s, result, daemon, central, frontelio, factory, clock, logs)
            finally:
                await daemon.stop()
            result.decision_logs = logs.decisions
            result.warnings = logs.kept
        result.local_ids = audit_ids(s.work_dir / "state")
        report = central.ask("report")
        result.central_ids, result.central_duplicates = report["ids"], report["duplicates"]
        result.ingest_requests = report["ingest_requests"]
    finally:
        frontelio.server.stop()
        central.close()
        factory.reset()
    return result


async def _day(s: OutageSettings, r: OutageResult, daemon: Daemon, central: CentralProcess, frontelio: FakeFrontelio,
               factory: MockFactory, clock: SimClock, logs: LogTally) -> None:
    for reader in reader_ids(s):
        daemon.parts.reader_door[reader] = "main"
    door = daemon.doors["main"]
    # 1. Online: the bundle is in, heartbeats flow, nothing pending.
    await until(lambda: cache_version(daemon) == 1, 30, "the first bundle sync")
    await until(lambda: len(frontelio.heartbeats) >= 1 and daemon.health.upstream.online is True, 30, "a heartbeat")
    await until(lambda: daemon.parts.outbox.depth() == 0, 30, "the BOOT event replicated")
    r.online_before = daemon.health.upstream.online
    r.heartbeats_before = len(frontelio.heartbeats)
    # 2. The WAN goes down; the daemon notices through its heartbeats.
    central.ask("down")
    frontelio.server.go_down()
    await until(lambda: daemon.health.upstream.online is False, 30, "the daemon to notice the outage")
    logs.phase = "outage"
    not_after = r.not_after
    step = timedelta(microseconds=int(s.hours * 3600e6) // s.events)
    started = time.perf_counter()
    for i in range(s.events):
        clock.now = at = T0 + i * step
        if at >= not_after and r.pulses_before_stale is None:
            r.pulses_before_stale = door.pulses
        reader, card, fresh = scan_plan(s, i)
        if i == 0:
            r.online_during = daemon.health.upstream.online
        decision = await daemon.pipeline.handle(Scan(reader, Source.CARD, card.encode()))
        want = expected(s, fresh, at, not_after)
        phase = "stale" if at >= not_after else "fresh"
        r.scan_at_not_after |= at == not_after
        r.outcomes[(phase, decision.decision.value, decision.reason.value if decision.reason else "-")] += 1
        r.online_decisions += decision.online
        if (decision.decision, decision.reason) != want or decision.replay:
            r.wrong_count += 1
            if len(r.wrong) < 20:
                r.wrong.append(f"scan {i} at {at.isoformat()} {reader}: {decision.decision.value} "
                               f"{decision.reason} replay={decision.replay}, expected {want[0].value} {want[1]}")
    await daemon.quiesce()
    r.traffic_s = time.perf_counter() - started
    r.scans = s.events
    r.pulses_after_outage = door.pulses
    r.stale_in_status = daemon.health.snapshot()["cache"]["stale"]
    r.backlog = daemon.parts.outbox.depth()
    # 3. The WAN comes back.
    logs.phase = "recovery"
    heartbeats_down = len(frontelio.heartbeats)
    back = time.monotonic()
    central.ask("up")
    frontelio.server.come_up()
    deadline = back + s.drain_within_s
    while daemon.parts.outbox.depth() > 0 and time.monotonic() < deadline:
        if r.first_ack_s is None and daemon.parts.outbox.depth() < r.backlog:
            r.first_ack_s = time.monotonic() - back
        await asyncio.sleep(0.02)
    if daemon.parts.outbox.depth() == 0:
        r.drain_s = time.monotonic() - back
    await until(lambda: len(frontelio.heartbeats) > heartbeats_down and daemon.health.upstream.online is True, 30,
                "heartbeats to resume")
    r.heartbeats_after = len(frontelio.heartbeats) - heartbeats_down
    r.online_after = daemon.health.upstream.online
    r.relay_energised_after = factory.pin(RELAY_PIN).state == 1
    # A fresh bundle ends staleness; a valid card is let in again and its event replicates.
    central.ask("publish", records(s), clock.now, clock.now + timedelta(days=7))
    await until(lambda: cache_version(daemon) == 2, 30, "the fresh bundle")
    r.fresh_version = 2
    logs.phase = "after"
    clock.now += timedelta(seconds=10)
    reader, card, _ = scan_plan(s, 0)
    r.fresh = await daemon.pipeline.handle(Scan(reader, Source.CARD, card.encode()))
    await until(lambda: daemon.parts.outbox.depth() == 0, 30, "the last event replicated")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--staleness", choices=("deny", "warn"), default="deny")
    ap.add_argument("--work-dir", type=Path, help="keep the state dir here (default: a temporary directory)")
    ap.add_argument("--quick", action="store_true", help="5,000 scans (bench/report.py --quick)")
    args = ap.parse_args()
    if args.quick:
        args.events = 5_000
    with tempfile.TemporaryDirectory(prefix="door-bridge-outage-") as tmp:
        s = OutageSettings(work_dir=args.work_dir or Path(tmp), events=args.events, hours=args.hours,
                           staleness=args.staleness)
        result = asyncio.run(run_outage(s))
    f = result.figures()
    outcomes = ", ".join(f"{phase} {d} {reason}: {n}" for (phase, d, reason), n in sorted(result.outcomes.items()))
    print(f"{f['events']} scans over {s.hours:g} h simulated in {f['traffic_s']} s ({f['simulated_per_real_s']}x); "
          f"bundle not_after at +{s.not_after_h:g} h, staleness {s.staleness}", file=sys.stderr)
    print(f"decisions: {outcomes}; wrong {f['wrong_decisions']}; logged {dict(result.decision_logs)}", file=sys.stderr)
    print(f"backlog {f['backlog']} events; central back → first ack {f['first_ack_s']} s, empty outbox "
          f"{f['drain_s']} s ({f['drain_events_per_s']} events/s); lost {f['lost']}, stored twice {f['stored_twice']}, "
          f"in order {f['in_order']}, resent duplicates {f['central_duplicates']}, {f['ingest_requests']} POSTs; "
          f"heartbeats after {f['heartbeats_after']}, upstream online {f['online_after']}", file=sys.stderr)
    print(json.dumps(f))


if __name__ == "__main__":
    main()
