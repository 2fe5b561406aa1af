"""The daemon: wires inputs → verifier → audit outbox → door, and keeps them apart.

Threads and loops:
- the asyncio loop owns inputs, timers and (later) the network;
- one decision worker thread owns the verifier and the SQLite connections, so decisions are
  serialised (replay memory and rate limits stay coherent) and the loop never blocks on a
  scrypt hash or an fsync;
- gpiozero's own thread times each relay pulse.

Per scan: parse → decide → commit the audit row (fsync) → pulse → log one line. The relay moves
only after the row that explains it is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import structlog

from bridge import __version__
from bridge.config import Config
from bridge.door import Door
from bridge.gpio import make_pin_factory
from bridge.inputs.base import Input, Scan
from bridge.inputs.registry import create_input
from bridge.outbox import Outbox
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Policy, Verifier
from verifier.types import AccessDecision

log = structlog.get_logger()

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def policy_from(config: Config) -> Policy:
    return Policy(
        staleness=config.cache.staleness,
        jwt_algorithms=frozenset(config.cache.jwt_algorithms),
        jwt_leeway_s=config.cache.jwt_leeway_s,
        replay_window_s=config.policy.replay_window_s,
        rate_limit_denies=config.policy.rate_limit_denies,
        rate_limit_window_s=config.policy.rate_limit_window_s,
        rate_limit_cooldown_s=config.policy.rate_limit_cooldown_s,
    )


@dataclass
class ReaderState:
    last_scan_at: str | None = None
    last_decision: str | None = None
    last_reason: str | None = None
    scans: int = 0


@dataclass
class Stats:
    started_at: datetime = field(default_factory=utc_now)
    decisions: int = 0
    grants: int = 0
    readers: dict[str, ReaderState] = field(default_factory=dict)


class Daemon:
    def __init__(self, config: Config, *, pin_factory: Any = None, clock: Clock = utc_now,
                 inputs: list[Input] | None = None) -> None:
        self.config = config
        self.clock = clock
        self._pin_factory = pin_factory
        self._extra_inputs = inputs or []
        self.stats = Stats()
        self.decision_listeners: list[Callable[[AccessDecision, float], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decide")
        self.doors: dict[str, Door] = {}
        self.reader_door: dict[str, str] = {}
        self.inputs: list[Input] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        cfg = self.config
        state = Path(cfg.bridge.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        # Doors first: the relay line is driven inactive before anything else can fail.
        if self._pin_factory is None and cfg.doors:
            self._pin_factory = make_pin_factory(cfg.gpio.pin_factory)
        for name, door_cfg in cfg.doors.items():
            self.doors[name] = Door(name, door_cfg, self._pin_factory)
        self.cache = GrantCache(state / "grants.db")
        self.outbox = Outbox(state / "audit.db", cfg.audit.max_events, clock=self.clock)
        self.verifier = Verifier(self.cache, policy_from(cfg))
        for reader in cfg.readers:
            self.reader_door[reader.id] = reader.door
            self.stats.readers[reader.id] = ReaderState()
            self.inputs.append(create_input(reader, pin_factory=self._pin_factory))
        for extra in self._extra_inputs:
            self.inputs.append(extra)
            self.stats.readers.setdefault(extra.reader_id, ReaderState())
        self.outbox.append("BOOT", {"bridgeId": cfg.bridge.id, "firmwareVersion": __version__,
                                    "cacheVersion": self.cache.meta.version})
        for inp in self.inputs:
            self._tasks.append(asyncio.create_task(self._run_input(inp), name=f"input-{inp.reader_id}"))
        meta = self.cache.meta
        log.info("started", bridge=cfg.bridge.id, version=__version__, mode=cfg.bridge.mode,
                 readers=",".join(i.reader_id for i in self.inputs) or "-", doors=",".join(self.doors) or "-",
                 cache_version=meta.version, stale=self.verifier.is_stale(self.clock()))
        if meta.version == 0:
            log.warning("cache_empty", check="import a bundle: door-bridge grants import FILE, or configure sync")

    async def stop(self) -> None:
        for door in self.doors.values():
            door.release()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await asyncio.get_running_loop().run_in_executor(self._worker, self._close_storage)
        self._worker.shutdown(wait=True)
        for door in self.doors.values():
            door.close()
        self._stopped.set()
        log.info("stopped", bridge=self.config.bridge.id)

    def _close_storage(self) -> None:
        self.outbox.close()
        self.cache.close()

    async def quiesce(self) -> None:
        """Wait until every scan handed to the worker so far has been decided and recorded."""
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(self._worker, lambda: None)
        while any(not t.done() for t in self._tasks if t.get_name().startswith("scan")):
            await asyncio.sleep(0.01)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def _run_input(self, inp: Input) -> None:
        try:
            await inp.run(self.emit)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("reader_failed", reader=inp.reader_id, error=f"{type(e).__name__}: {e}"[:200],
                      check="reader configuration and device; door-bridge doctor")

    # --- the scan path --------------------------------------------------------------------------

    def emit(self, scan: Scan) -> None:
        """Thread-safe: inputs call this from their own threads."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._spawn, scan)

    def _spawn(self, scan: Scan) -> None:
        task = asyncio.create_task(self.handle(scan), name=f"scan-{scan.reader_id}")
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def handle(self, scan: Scan) -> AccessDecision:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, self._decide_and_act, scan)

    def _decide_and_act(self, scan: Scan) -> AccessDecision:
        started = scan.at_monotonic or time.monotonic()
        credential = parse(scan.raw, scan.hint)
        decision = self.verifier.decide(credential, scan.reader_id, scan.source, self.clock())
        door = self.doors.get(self.reader_door.get(scan.reader_id, ""))
        self.outbox.append("VERIFY", {**decision.as_wire(), "bridgeId": self.config.bridge.id,
                                      "door": door.name if door else None})
        if decision.granted and not decision.replay and door is not None:
            door.pulse()
        latency_ms = (time.monotonic() - started) * 1000
        self._account(decision, latency_ms, door)
        return decision

    def _account(self, d: AccessDecision, latency_ms: float, door: Door | None) -> None:
        s = self.stats
        s.decisions += 1
        s.grants += d.granted
        r = s.readers.setdefault(d.reader_id, ReaderState())
        r.scans += 1
        r.last_scan_at = self.clock().isoformat(timespec="seconds")
        r.last_decision, r.last_reason = d.decision.value, d.reason.value if d.reason else None
        log.info(
            "decision", reader=d.reader_id, source=d.source.value, decision=d.decision.value,
            reason=d.reason.value if d.reason else "-", latency_ms=round(latency_ms, 2),
            cache_version=d.cache_version, upstream="online" if d.online else self.upstream_state(),
            replay=d.replay, cred=d.fingerprint, user=d.user_id or "-", zone=d.zone_id or "-",
            relay=("pulsed" if d.granted and not d.replay else "idle") if door else "none",
        )
        for listener in self.decision_listeners:
            listener(d, latency_ms)

    def upstream_state(self) -> str:
        return "none"
