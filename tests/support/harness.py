"""Real parts for daemon-level tests: a signed site, a config, a running daemon on MockFactory pins."""

from __future__ import annotations

import asyncio
import io
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory

from bridge.config import Config, from_dict
from bridge.service.daemon import Daemon
from verifier.bundle import apply_bundle, bundle_bytes, public_key_text
from verifier.cache import GrantCache

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class SetClock:
    """The time a test sets (`clock.t = …`); T0 until it does."""

    def __init__(self, t: datetime = T0) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


class SetMonotonic:
    """A monotonic clock in seconds (breakers, frame gaps, retry timers) that a test moves by hand:
    `clock.now += 5`."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RunningClock:
    """`start` plus real elapsed time (replay windows and sync intervals behave as on a door), plus
    whatever a test `advance`s (to pass an exp or an end_at)."""

    def __init__(self, start: datetime = T0) -> None:
        self._start = start
        self._t0 = time.monotonic()
        self.offset = timedelta()

    def advance(self, **kw: float) -> None:
        self.offset += timedelta(**kw)

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._t0) + self.offset


class SteppingClock:
    """Moves 5 s per reading: every scan is past the replay window of the one before."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=5)
        return self.now


@dataclass
class Site:
    """A central (or standalone site) with its signing key and the bundles it has issued."""

    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    version: int = 0

    @property
    def public_key(self) -> str:
        return public_key_text(self.key.public_key())

    def bundle(self, records: list[dict[str, Any]], *, now: datetime = T0, days: int = 7, **kw: Any) -> bytes:
        self.version += 1
        return bundle_bytes(records, self.key, version=self.version, issued_at=now,
                            not_after=now + timedelta(days=days), **kw)

    def install(self, state_dir: Path, records: list[dict[str, Any]], **kw: Any) -> None:
        cache = GrantCache(state_dir / "grants.db")
        try:
            apply_bundle(cache.conn, io.BytesIO(self.bundle(records, **kw)), self.key.public_key())
        finally:
            cache.close()


def door_records(reader: str, now: datetime = T0) -> list[dict[str, Any]]:
    """A valid card, a revoked grant, a card outside its window: the serial acceptance set."""
    day = timedelta(days=1)
    return [
        {"type": "zone", "id": "zone_a", "name": "Stockroom", "readers": [reader]},
        {"type": "user", "id": "user_ok", "name": "Layla Hassan"},
        {"type": "user", "id": "user_rev", "name": "Omar Said"},
        {"type": "grant", "id": "g1", "userId": "user_ok", "zoneId": "zone_a",
         "startsAt": iso(now - 30 * day), "endsAt": iso(now + 30 * day)},
        {"type": "grant", "id": "g2", "userId": "user_rev", "zoneId": "zone_a", "revoked": True},
        {"type": "card", "number": "6B06C2A25E99C68EDCBE", "userId": "user_ok"},
        {"type": "card", "number": "04A22C1A7B3F80", "userId": "user_rev"},
        {"type": "card", "number": "0A1B2C3D4E5F", "devices": [reader],
         "start_at": iso(now - 9 * day), "end_at": iso(now - 2 * day)},
    ]


def make_config(state_dir: Path, site: Site, readers: list[dict[str, Any]], **sections: Any) -> Config:
    data: dict[str, Any] = {
        "bridge": {"id": "BRIDGE-T", "state_dir": str(state_dir)},
        "cache": {"public_key": site.public_key},
        "gpio": {"pin_factory": "mock"},
        "doors": {"main": {"relay_pin": 17, "pulse_s": 0.3}},
        "readers": readers,
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return from_dict(data, source="<test>")


@asynccontextmanager
async def running(config: Config, *, clock=None, inputs=None) -> AsyncIterator[tuple[Daemon, MockFactory]]:
    factory = MockFactory()
    kwargs: dict[str, Any] = {"pin_factory": factory, "inputs": inputs}
    if clock is not None:
        kwargs["clock"] = clock
    daemon = Daemon(config, **kwargs)
    await daemon.start()
    try:
        yield daemon, factory
    finally:
        await daemon.stop()
        factory.reset()


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def relay_pulses(pin) -> list[float]:
    """Durations (s) the relay line spent at `active` level, from MockPin's state history."""
    out = []
    states = pin.states
    for i, st in enumerate(states):
        if st.state and i + 1 < len(states) and not states[i + 1].state:
            out.append(states[i + 1].timestamp)
    return out


def ever_high(pin) -> bool:
    return any(s.state for s in pin.states)
