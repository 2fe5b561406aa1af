"""Offline-passcode guessing through the real daemon decision path: guesses per hour, time to a hit.

A real `Daemon` (MockFactory pins, real SQLite files, the real parse → worker → verifier → audit
outbox → door path via `daemon.pipeline.handle`) with an offline-passcode door, the cache fresh, stale
(past not_after) and empty (never synced). An attacker types wrong 12-digit codes as fast as the
reader allows: at a keypad one code per `--keypad-s` seconds (default 3 s: 12 digits and #),
through a QR/serial scanner one line per `--qr-s` seconds (default 0.2 s). Simulated time (the
daemon's injected clock) advances by that interval per attempt, so an hour of attack takes
seconds; the figures are what the rate-limit policy lets through, not how fast this machine is.

A guess "went through" when its code was really checked (any reason but RATE_LIMITED and, for a
scanner without `accept_pins`, MALFORMED_CREDENTIAL: refused before any check). Each code is
right with probability 10^-7 (docs/offline-passcodes.md), so the expected time to a hit is
10^7 / (checked guesses per hour) hours.

    .venv/bin/python -m bench.guess            # one simulated hour per case
    .venv/bin/python -m bench.guess --hours 0.25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bridge.inputs.base import Scan
from tests.support.harness import T0, Site, door_records, make_config, running
from verifier.passcode import PASSCODE_LENGTH, mint
from verifier.types import Reason, Source

READER = "GUESS-1"
SECRET = b"bench-offline-passcode-secret-0123"
CODE_SPACE = 10**7  # one right MAC among 10^7 per code


@dataclass
class Figures:
    reader: str
    cache: str
    attempts: int
    checked: int
    rate_limited: int
    refused: int
    lockouts: int
    wall_s: float
    hours: float

    @property
    def per_hour(self) -> float:
        return self.checked / self.hours

    def line(self) -> str:
        hit = f"{CODE_SPACE / self.per_hour / 24 / 365:,.1f} years" if self.per_hour else "never (all refused)"
        return (f"{self.reader:<22} cache {self.cache:<5}: {self.attempts:>6} attempts, {self.checked:>5} checked "
                f"({self.per_hour:>7,.0f}/h), {self.rate_limited:>6} RATE_LIMITED, {self.refused:>6} refused, "
                f"{self.lockouts:>4} READER_RATE_LIMITED; expected time to a hit {hit}  [{self.wall_s:.1f} s wall]")


async def attack(work: Path, cache: str, reader: str, interval_s: float, hours: float) -> Figures:
    state = work / f"{cache}-{reader.replace(' ', '_')}"
    state.mkdir()
    site = Site()
    if cache == "fresh":
        site.install(state, door_records(READER), now=T0, days=30)
    elif cache == "stale":
        site.install(state, door_records(READER), now=T0 - timedelta(days=30), days=7)
    secret_file = work / f"{state.name}.secret"
    secret_file.write_bytes(SECRET + b"\n")
    secret_file.chmod(0o600)
    master, slave = os.openpty()
    scanner = reader.startswith("QR")
    readers = [{"type": "serial", "id": READER, "door": "main", "port": os.ttyname(slave),
                "accept_pins": reader == "QR with accept_pins"}]
    config = make_config(state, site, readers,
                         doors={"main": {"relay_pin": 17, "pulse_s": 0.3, "passcode_secret_file": str(secret_file)}})
    now = [T0]
    good = mint(SECRET, "main", T0 - timedelta(hours=1), T0 + timedelta(hours=int(hours) + 3))
    attempts = checked = limited = refused = 0
    start = time.monotonic()
    try:
        async with running(config, clock=lambda: now[0]) as (daemon, _pins):
            end = T0 + timedelta(hours=hours)
            n = 0
            while now[0] < end:
                n += 1
                code = f"{(int(good) + n) % 10**PASSCODE_LENGTH:0{PASSCODE_LENGTH}d}"
                scan = (Scan(READER, Source.PHONE_QR, (code + "#").encode(), None) if scanner
                        else Scan(READER, Source.KEYPAD, code.encode(), "pin"))
                d = await daemon.pipeline.handle(scan)
                attempts += 1
                if d.reason is Reason.RATE_LIMITED:
                    limited += 1
                elif d.reason is Reason.MALFORMED_CREDENTIAL:
                    refused += 1
                else:
                    checked += 1
                now[0] += timedelta(seconds=interval_s)
            await daemon.quiesce()
            lockouts = sum(1 for e in daemon.parts.outbox.recent(10**6) if e.type == "READER_RATE_LIMITED")
    finally:
        os.close(master)
        os.close(slave)
    return Figures(reader, cache, attempts, checked, limited, refused, lockouts, time.monotonic() - start, hours)


async def main_async(args: argparse.Namespace) -> list[Figures]:
    out = []
    with tempfile.TemporaryDirectory(prefix="guess-") as tmp:
        for reader, interval in (("keypad", args.keypad_s), ("QR scanner", args.qr_s), ("QR with accept_pins", args.qr_s)):
            for cache in ("fresh", "stale", "empty"):
                fig = await attack(Path(tmp), cache, reader, interval, args.hours)
                print(fig.line(), flush=True)
                out.append(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=1.0, help="simulated attack time per case")
    ap.add_argument("--keypad-s", type=float, default=3.0, help="seconds to type one 12-digit code and #")
    ap.add_argument("--qr-s", type=float, default=0.2, help="seconds between lines from a QR scanner")
    args = ap.parse_args()
    print(f"policy: 5 guesses per 60 s window, then 30 s RATE_LIMITED (defaults); {args.hours} h simulated per case")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
