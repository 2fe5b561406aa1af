"""One scan's way through the door: parse → ask → decide → commit → pulse → account.

A scan the cache alone decides (the mode and the credential say no upstream is asked) is parsed
on its input's thread and handed straight to the decision worker: no hop through the event loop,
no task, no chain of futures (at 1,000 scans/s those were most of the loop's time). A scan that
may be asked upstream goes through the event loop, which asks within the budget
(bridge/service/upstream_ask.py). The decision itself runs on the decision worker, in
batches (bridge/service/worker.py): each scan is decided, the batch's audit rows are committed
(fsync) in one transaction, and only then does any relay move. If the rows cannot be written,
nothing moves (fail-secure) and every waiting scan gets the error. Then one journal line per
decision, and the listeners (metrics, MQTT, the demo's printer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import structlog

from bridge.config import Config
from bridge.door.relay import Relay
from bridge.inputs.base import Scan
from bridge.service.health import Health, ReaderState
from bridge.service.upstream_ask import UpstreamAsk
from bridge.state.late_denials import credential_key
from verifier.credentials import parse
from verifier.decide import Lockout
from verifier.sources import presented_source
from verifier.timeutil import from_ms, iso, to_ms
from verifier.types import AccessDecision, Credential, Malformed, Pin, Source

if TYPE_CHECKING:
    from bridge.service.clock_watch import Clock
    from bridge.service.parts import Parts
    from bridge.service.worker import Worker
    from verifier.interlock import DoorState

log = structlog.get_logger()

DecisionListener = Callable[[AccessDecision, float], None]

# Scans accepted but not yet decided. A real door sees a few per minute; this only bounds memory
# against a reader gone mad (each waiting scan is a task and a queue entry).
MAX_SCANS_IN_FLIGHT = 5000
# ... and per reader, so one reader gone mad (or attacked) cannot take every place and starve
# the other readers' scans: they keep being decided while the flood is dropped and counted.
MAX_SCANS_IN_FLIGHT_PER_READER = 1000


@dataclass(frozen=True, slots=True)
class ScanJob:
    scan: Scan
    credential: Credential
    source: Source  # what was presented × how it was read (verifier.sources)
    online: AccessDecision | None
    started: float
    upstream: str | None = None  # the adapter that gave `online`


def lockout_event(lock: Lockout, bridge_id: str) -> dict[str, Any]:
    """READER_RATE_LIMITED: someone is guessing at this reader (docs/bridge-protocol.md: alert on it)."""
    return {"bridgeId": bridge_id, "readerId": lock.reader_id, "bucket": "keypad" if lock.keypad else "other",
            "denies": lock.denies, "windowS": lock.window_s, "cooldownS": lock.cooldown_s,
            "lockedUntil": iso(from_ms(lock.until_ms))}


class ScanPipeline:
    def __init__(self, config: Config, parts: Parts, health: Health, worker: Worker[ScanJob], clock: Clock,
                 clock_trusted: Callable[[], bool], listeners: list[DecisionListener]) -> None:
        self.config = config  # the daemon replaces it on reload
        self.parts = parts
        self.health = health
        self.worker = worker
        self.clock = clock
        self.clock_trusted = clock_trusted
        self.listeners = listeners
        self.upstream = UpstreamAsk(config, parts, health, worker.submit, clock)
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task[AccessDecision]] = set()
        # Places taken by scans not yet decided, on the loop's way or the direct one (input threads
        # take them, the loop and the worker give them back).
        self._places = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._in_flight_total = 0
        self.dropped = 0
        self.dropped_by_reader: collections.Counter[str] = collections.Counter()

    # --- on the event loop ---------------------------------------------------------------------------

    def emit(self, scan: Scan) -> None:
        """Thread-safe: inputs call this from their own threads."""
        try:
            credential, source = self.read(scan)
            adapter, settled = self.upstream.route(credential, source)
        except Exception:  # never in the input's thread: the loop's way logs it as decision_failed
            adapter, settled = None, False
        if adapter is not None or not settled:
            self.loop.call_soon_threadsafe(self.spawn, scan)
            return
        if not self._take_place(scan.reader_id):
            return
        job = ScanJob(scan, credential, source, None, scan.at_monotonic or time.monotonic())
        try:
            future = self.worker.submit_batchable(job)
        except RuntimeError:  # the worker has shut down: the daemon is stopping, inputs last
            self._give_place(scan.reader_id)
            log.warning("scan_after_stop", reader=scan.reader_id, check="none: the daemon was stopping")
            return
        future.add_done_callback(lambda f: self._decided(f, scan.reader_id))

    def spawn(self, scan: Scan) -> None:
        if not self._take_place(scan.reader_id):
            return
        task = asyncio.create_task(self.handle(scan), name=f"scan-{scan.reader_id}")
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _take_place(self, reader_id: str) -> bool:
        with self._places:
            if (self._in_flight_total < MAX_SCANS_IN_FLIGHT
                    and self._in_flight[reader_id] < MAX_SCANS_IN_FLIGHT_PER_READER):
                self._in_flight_total += 1
                self._in_flight[reader_id] += 1
                return True
            first = self.dropped == 0
            self.dropped += 1
            self.dropped_by_reader[reader_id] += 1
            in_flight = self._in_flight_total
        # Far beyond any real door's traffic: a stuck reader or an attack. Memory stays
        # bounded, and the drop is counted into the audit log, never silent.
        if first:
            log.error("scans_dropped_overload", reader=reader_id, in_flight=in_flight,
                      check="a reader sending continuously (stuck scanner, loop in a QR)? door-bridge status")
        return False

    def _give_place(self, reader_id: str) -> None:
        with self._places:
            self._in_flight_total -= 1
            self._in_flight[reader_id] -= 1

    def _done(self, task: asyncio.Task[AccessDecision]) -> None:
        self.tasks.discard(task)
        reader_id = task.get_name().removeprefix("scan-")
        self._give_place(reader_id)
        if not task.cancelled():
            self._failed(task.exception(), reader_id)

    def _decided(self, future: Future[AccessDecision], reader_id: str) -> None:
        """On the worker, for a scan that came the direct way."""
        self._give_place(reader_id)
        if not future.cancelled():
            self._failed(future.exception(), reader_id)

    @staticmethod
    def _failed(e: BaseException | None, reader_id: str) -> None:
        if e is None:
            return
        # Nothing was pulsed (the relay moves only after the batch's audit rows are committed).
        log.error("decision_failed", reader=reader_id, error=f"{type(e).__name__}: {e}"[:200],
                  relay="not pulsed", check="disk space and permissions of the state dir (audit.db); door-bridge doctor")

    def read(self, scan: Scan) -> tuple[Credential, Source]:
        """The credential and how it was presented. Pure: any thread."""
        credential = parse(scan.raw, scan.hint)
        if isinstance(credential, Pin) and scan.hint != "pin" and scan.reader_id not in self.parts.pin_readers:
            # A QR / wedge / serial scanner is not a faster keypad: it types a whole line at once.
            credential = Malformed("a PIN from a scanner that does not take PINs (set accept_pins on a wedge keypad)")
        return credential, presented_source(credential, scan.source)

    async def handle(self, scan: Scan) -> AccessDecision:
        started = scan.at_monotonic or time.monotonic()
        credential, source = self.read(scan)
        online: AccessDecision | None = None
        asked: str | None = None
        adapter = await self.upstream.adapter_for(credential, source)
        if adapter is not None:
            online = await self.upstream.ask(adapter, credential, scan.reader_id, source)
            asked = adapter.name
        job = ScanJob(scan, credential, source, online, started, asked)
        return await asyncio.wrap_future(self.worker.submit_batchable(job))

    async def quiesce(self) -> None:
        """Wait until every scan handed in so far has been decided and recorded."""
        await asyncio.sleep(0)
        while self.tasks:
            await asyncio.wait(list(self.tasks))
        await asyncio.wrap_future(self.worker.submit(lambda: None))

    def report_dropped(self) -> None:
        """Periodic: the scans dropped since the last call, as one SCANS_DROPPED audit row."""
        if not self.dropped:
            return
        dropped, self.dropped = self.dropped, 0
        by_reader, self.dropped_by_reader = dict(self.dropped_by_reader), collections.Counter()
        self.worker.submit(self.parts.outbox.append, "SCANS_DROPPED",
                           {"bridgeId": self.config.bridge.id, "count": dropped, "byReader": by_reader,
                            "reason": f"more than {MAX_SCANS_IN_FLIGHT} scans waiting, or "
                                      f"{MAX_SCANS_IN_FLIGHT_PER_READER} at one reader"})

    # --- on the decision worker ----------------------------------------------------------------------

    def decide_batch(self, jobs: list[ScanJob]) -> list[AccessDecision]:
        """Decide each scan, commit all their audit rows at once, then act."""
        p, bridge_id = self.parts, self.config.bridge.id
        decisions: list[AccessDecision] = []
        decided: list[str] = []
        states = p.emergency.door_states() if p.verifier.rules is not None else None
        modes_before = self._modes_mark()
        with p.verifier.cache.one_version():
            for job in jobs:
                decision, how = self._decide_one(job, states)
                decisions.append(decision)
                decided.append(how)
                if states is not None and decision.granted and (name := p.reader_door.get(job.scan.reader_id)) in states:
                    # Pulsed after this batch: a second GRANT in the same batch sees this door as unlocked.
                    states[name] = replace(states[name], unlocked=True)
        self.health.note_staleness()
        doors = [p.reader_door.get(job.scan.reader_id, "") for job in jobs]
        # The rows that explain the relay go to disk before the relay moves; if they cannot be
        # written, nothing moves (fail-secure) and every waiting scan gets the error.
        rows: list[tuple[str, dict[str, Any]]] = [
            ("VERIFY", {**d.as_wire(), "bridgeId": bridge_id, "door": name if name in p.doors else None})
            for d, name in zip(decisions, doors)]
        for d, name in zip(decisions, doors):
            if d.duress and not d.replay:
                rows.append(("DURESS", {"bridgeId": bridge_id, "door": name or None, "readerId": d.reader_id,
                                        "userId": d.user_id, "userName": d.user_name,
                                        "credentialFingerprint": d.fingerprint}))
                log.warning("duress_alarm", reader=d.reader_id, door=name or "-", user=d.user_id or "-",
                            check="a holder opened this door with the duress PIN: someone may be forcing them. "
                                  "Follow the site's duress procedure; do not call the holder")
        for lock in p.verifier.take_lockouts():
            rows.append(("READER_RATE_LIMITED", lockout_event(lock, bridge_id)))
            log.warning("reader_rate_limited", reader=lock.reader_id, bucket="keypad" if lock.keypad else "other",
                        denies=lock.denies, cooldown_s=lock.cooldown_s,
                        check="someone guessing codes at this reader? door-bridge events tail; the camera")
        p.outbox.append_many(rows)
        p.emergency.flush()  # the admin credential's lockdown, anti-passback presence and violations
        for job, decision, name, how in zip(jobs, decisions, doors, decided):
            door = p.doors.get(name)
            pulse = decision.granted and not decision.replay and door is not None and not door.held
            monitor = p.door_monitors.get(name)
            if pulse:
                assert door is not None
                if monitor is not None:
                    monitor.authorised("grant")
                door.pulse()
            if monitor is not None:
                with contextlib.suppress(Exception):
                    monitor.feedback(decision)
            reader_out = p.reader_feedback.get(job.scan.reader_id)
            if reader_out is not None:
                with contextlib.suppress(Exception):
                    reader_out.feedback(decision)
            self._account(decision, (time.monotonic() - job.started) * 1000, door, pulse, how)
        if self._modes_mark() != modes_before:
            p.modes.apply()  # a first-person-in GRANT unlocks its door at once, a new version's modes apply
        return decisions

    def _modes_mark(self) -> tuple[int, int]:
        """What a batch can change of the doors' effective modes: the cache version it decided
        from, and the first-person-in slots its GRANTs started. Anything else (a slot's start or
        end, an emergency) is applied by the daemon's one-second timer or the emergency shell.
        Applying after every batch cost more than deciding a card (cProfile of the worker at 100
        scans/s: 1.04 of 6.73 s, 17 effective-mode evaluations a batch)."""
        verifier = self.parts.verifier
        return verifier.cache.generation, verifier.door_modes().slots_started

    def _decide_one(self, job: ScanJob, doors: dict[str, DoorState] | None) -> tuple[AccessDecision, str]:
        """(decision, how it was decided: online | late_deny | cache). Whoever answers, the
        verifier's replay window and rate limiter judge the presentation too."""
        now = self.clock()
        key = credential_key(job.credential)
        late_denials = self.upstream.late_denials
        if job.online is not None:
            self._online_answered(key, job)
            late = None
        else:
            late = late_denials.verdict(key, to_ms(now))
        decision = self.parts.verifier.decide(job.credential, job.scan.reader_id, job.source, now,
                                              verdict=job.online or late, clock_trusted=self.clock_trusted(), doors=doors)
        held = late is not None and not decision.online and decision.upstream_reason == late.upstream_reason
        return decision, "late_deny" if held else decision.decided

    def _online_answered(self, key: str, job: ScanJob) -> None:
        """The one place an online answer is taken in, before the door's own guards judge the
        presentation: the central has spoken again, so an older late denial for this credential
        no longer stands, and the learned cache hears the central's word."""
        assert job.online is not None
        self.upstream.late_denials.forget(key)
        if self.parts.learned is not None and job.upstream is not None:
            self._learn(job.upstream, job.credential, replace(job.online, cache_version=self.parts.cache.meta.version))

    def _learn(self, upstream: str, credential: Credential, decision: AccessDecision) -> None:
        """Never in the way of the online answer: a learned-cache write that fails is logged."""
        learned = self.parts.learned
        assert learned is not None
        try:
            learned.observe(upstream, credential, decision, list(self.parts.reader_door), self.clock())
        except Exception as e:
            log.error("learned_write_failed", upstream=upstream, decision=decision.decision.value,
                      error=f"{type(e).__name__}: {e}"[:200],
                      check="disk space and permissions of learned.db in the state dir; a DENY not written "
                            "means an earlier learned GRANT may still open offline until its max_age")

    def _account(self, d: AccessDecision, latency_ms: float, door: Relay | None, pulsed: bool, how: str) -> None:
        s = self.health.stats
        s.decisions += 1
        s.grants += d.granted
        s.online_decisions += d.online
        s.learned_decisions += d.learned
        r = s.readers.setdefault(d.reader_id, ReaderState())
        r.scans += 1
        r.last_scan_at = self.clock().isoformat(timespec="seconds")
        r.last_decision, r.last_reason = d.decision.value, d.reason.value if d.reason else None
        log.info(
            "decision", reader=d.reader_id, door=door.name if door else "-", source=d.source.value, decision=d.decision.value,
            reason=d.reason.value if d.reason else "-", latency_ms=round(latency_ms, 2),
            cache_version=d.cache_version, decided=how,
            upstream=self.health.upstream.label, replay=d.replay, cred=d.fingerprint, user=d.user_id or "-",
            zone=d.zone_id or d.zone_name or "-",
            relay=("held" if door.held else "pulsed" if pulsed else "idle") if door else "none", door_mode=d.door_mode or "-",
        )
        for listener in self.listeners:
            listener(d, latency_ms)
