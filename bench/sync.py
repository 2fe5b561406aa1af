"""Decision latency while a big full bundle is synced and applied.

The cache starts at version 1 (a small site). The loopback central (its own process) then serves
a version-2 full bundle of N grants (bench/decide.py's record mix, built with BundleWriter); the
real `BundleSync.sync_once` downloads it to the state dir and applies it (`--apply-in process`,
the default, or `thread`), while a thread makes decisions continuously with `Verifier` on its
own `GrantCache`, exactly like the daemon's decision worker. Prints figures, then one JSON object
as the last line. Not a test: nothing here asserts.

    python bench/sync.py                          # 1,000,000 grants, apply in a child process
    python bench/sync.py --grants 100000 --apply-in thread

`peak_rss_mb` is ru_maxrss of the process that applied: the child in process mode, this whole
process (decision thread included) in thread mode.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Literal

import psutil  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.decide import NOW, ZONES, card_number, pct  # noqa: E402
from bridge.central.sync import BundleSync, SyncState  # noqa: E402
from bridge.upstream.central import build_central  # noqa: E402
from bridge.config.upstream import CentralSection, HttpSettings  # noqa: E402
from tests.support.fakes.central import PREFIX, serve_in_process, write_api_key  # noqa: E402
from verifier.bundle import BundleWriter, apply_file  # noqa: E402
from verifier.cache import GrantCache  # noqa: E402
from verifier.credentials import parse  # noqa: E402
from verifier.decide import Policy, Verifier  # noqa: E402
from verifier.types import Source  # noqa: E402

FAR = "2036-01-01T00:00:00Z"
SMALL_SITE = 1000  # grants in version 1; the decision thread's cards are all among them


def write_bundle(path: Path, key: Ed25519PrivateKey, n: int, version: int) -> int:
    """bench/decide.py's mix: per 5 holders, 2 with a card, 2 without, 1 visitor."""
    w = BundleWriter(version=version, issued_at=NOW, not_after=NOW + timedelta(days=3650))
    for z in range(ZONES):
        w.add({"type": "zone", "id": f"zone_{z}", "name": f"Zone {z}", "readers": [f"R{z}"]})
    for i in range(n):
        zone = f"zone_{i % ZONES}"
        if i % 5 == 4:
            w.add({"type": "visitor", "inviteCode": f"vis_bench{i:024d}", "zoneIds": [zone],
                   "validFrom": "2026-01-01T00:00:00Z", "validUntil": FAR})
            continue
        w.add({"type": "user", "id": f"user_{i}", "name": f"Holder {i}"})
        w.add({"type": "grant", "id": f"g{i}", "userId": f"user_{i}", "zoneId": zone, "endsAt": FAR})
        if i % 5 in (0, 1):
            w.add({"type": "card", "number": card_number(i), "userId": f"user_{i}"})
    return w.write_file(key, path).records


class GcPauses:
    """Every collection of the bench process's garbage collector: (start, seconds, generation).
    A full collection walks every tracked object of the process, the decision thread's included:
    a pause there is a stall of the decisions it overlaps."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((self._started, time.perf_counter() - self._started, info["generation"]))


class Decider(threading.Thread):
    """Decides present cards back to back; records (start, latency µs) of each decision."""

    def __init__(self, cache_path: Path) -> None:
        super().__init__(daemon=True)
        self.cache_path = cache_path
        self.stop = threading.Event()
        # Two flat arrays, not a list of tuples: half a million tuples made the process's full
        # garbage collections walk them, 36-48 ms each, and those were the worst "decisions
        # during the sync" (GcPauses showed the same start and length).
        self.started = array.array("d")
        self.latencies = array.array("d")
        self.granted = 0

    def run(self) -> None:
        cache = GrantCache(self.cache_path)
        verifier = Verifier(cache, Policy(rate_limit_denies=10**9))
        cards = [(parse(card_number(i).encode(), "card"), f"R{i % ZONES}") for i in range(0, SMALL_SITE, 5)]
        now, step, k = NOW, timedelta(seconds=2.5), 0
        while not self.stop.is_set():
            credential, reader = cards[k % len(cards)]
            k += 1
            now += step  # past the replay window: every decision is a real one
            t = time.perf_counter()
            d = verifier.decide(credential, reader, Source.CARD, now)
            self.latencies.append((time.perf_counter() - t) * 1e6)
            self.started.append(t)
            self.granted += d.granted
        cache.close()

    @property
    def samples(self) -> Iterator[tuple[float, float]]:
        """(start, latency µs) of each decision, in order."""
        return zip(self.started, self.latencies)


class TimedSync(BundleSync):
    """The real BundleSync, with the start and end of each download and of the apply noted, so
    the decisions can be split by what ran beside them (the apply's window includes the child's
    start-up and the fork, which its own apply_s does not)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.downloads: list[tuple[float, float]] = []
        self.applies: list[tuple[float, float]] = []

    async def _fetch(self, since, etag, sleep):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return await super()._fetch(since, etag, sleep)
        finally:
            self.downloads.append((t, time.perf_counter()))

    async def _apply(self, fetch, manifest):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return await super()._apply(fetch, manifest)
        finally:
            self.applies.append((t, time.perf_counter()))


def _within(samples: Iterable[tuple[float, float]], spans: list[tuple[float, float]]) -> list[float]:
    return [lat for t0, lat in samples if any(a <= t0 < b for a, b in spans)]


async def sync_once(state_dir: Path, url: str, key_file: Path, public_key: Ed25519PublicKey,
                    apply_in: Literal["process", "thread"]) -> tuple[str, SyncState, TimedSync]:
    section = CentralSection(base_url=url, api_key_file=key_file, apply_in=apply_in)
    settings = HttpSettings(read_timeout_s=120.0)
    client = build_central(section, settings, bridge_id="BRIDGE-1")
    sync = TimedSync(client, section, settings, state_dir=state_dir, public_key=public_key, clock=lambda: NOW)
    try:
        outcome = await sync.sync_once()
        return outcome, sync.state, sync
    finally:
        sync.close()
        await client.aclose()


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    return (f"n={len(latencies)} p50={statistics.median(latencies):.0f} µs p99={pct(latencies, 99):.0f} µs "
            f"max={max(latencies):.0f} µs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grants", type=int, default=1_000_000)
    ap.add_argument("--apply-in", choices=["process", "thread"], default="process")
    ap.add_argument("--baseline-s", type=float, default=2.0, help="decisions measured before the sync starts")
    ap.add_argument("--switch-interval-ms", type=float, default=None,
                    help="sys.setswitchinterval for this process (CPython's default is 5 ms): how long the "
                         "decision thread can wait for the GIL while the event loop streams the download")
    args = ap.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="door-bridge-bench-") as tmp:
        state = Path(tmp)
        small, big = state / "v1.bundle", state / "v2.bundle"
        write_bundle(small, key, SMALL_SITE, version=1)
        t = time.perf_counter()
        records = write_bundle(big, key, args.grants, version=2)
        print(f"v2 bundle: {records} records, {big.stat().st_size / 2**20:.0f} MiB, written in "
              f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
        setup = GrantCache(state / "grants.db")
        apply_file(setup.conn, small, key.public_key())
        setup.close()
        small.unlink()

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        server = ctx.Process(target=serve_in_process, args=(child, str(big), 2), daemon=True)
        server.start()
        port = parent.recv()
        big.unlink()  # the central holds it now; the bridge's copy is its own download
        key_file = write_api_key(state / "central.key")

        pauses = GcPauses()
        gc.callbacks.append(pauses)
        decider = Decider(state / "grants.db")
        decider.start()
        time.sleep(args.baseline_s)
        started = time.perf_counter()
        outcome, sync_state, timed = asyncio.run(sync_once(state, f"http://127.0.0.1:{port}{PREFIX}", key_file,
                                                    key.public_key(), args.apply_in))
        ended = time.perf_counter()
        time.sleep(0.5)
        decider.stop.set()
        decider.join()
        gc.callbacks.remove(pauses)
        bench_rss_mb = psutil.Process().memory_info().rss / 2**20
        db_mb = (state / "grants.db").stat().st_size / 2**20
        parent.send("stop")
        parent.recv()
        server.join(timeout=10)

    before = [lat for t0, lat in decider.samples if t0 < started]
    during = [lat for t0, lat in decider.samples if started <= t0 < ended]
    applied_in_s = sync_state.last_apply_s
    fetching = _within(decider.samples, timed.downloads)  # the HTTP download: stream, sha256, file writes
    applying = _within(decider.samples, timed.applies)  # spawn (or thread) + the applier's work
    fetch_s = sum(b - a for a, b in timed.downloads)
    worst = sorted(((lat, t0) for t0, lat in decider.samples if started <= t0 < ended), reverse=True)[:5]
    print("slowest during: " + ", ".join(f"{lat / 1000:.1f} ms at +{t0 - started:.2f} s" for lat, t0 in worst),
          file=sys.stderr)
    slow_gc = sorted(((d, t0, gen) for t0, d, gen in pauses.pauses if started <= t0 < ended), reverse=True)[:3]
    print("longest collections during: " + (", ".join(f"{d * 1000:.1f} ms (generation {gen}) at +{t0 - started:.2f} s"
                                                     for d, t0, gen in slow_gc) or "none"), file=sys.stderr)
    print(f"sync outcome {outcome}: fetch + apply {ended - started:.1f} s, apply {applied_in_s:.1f} s "
          f"({args.apply_in}); grants.db {db_mb:.0f} MiB", file=sys.stderr)
    print(f"decisions before: {summary(before)}", file=sys.stderr)
    print(f"decisions during: {summary(during)}", file=sys.stderr)
    print(f"  while fetching: {summary(fetching)} ({fetch_s:.2f} s)", file=sys.stderr)
    print(f"  while applying: {summary(applying)}", file=sys.stderr)
    result = {
        "grants": args.grants, "records": records, "apply_in": args.apply_in, "outcome": outcome,
        "apply_s": round(applied_in_s or 0.0, 1), "sync_s": round(ended - started, 1),
        "peak_rss_mb": sync_state.last_apply_peak_rss_mb, "bench_rss_mb": round(bench_rss_mb, 1),
        "p99_us_before": round(pct(before, 99), 1), "p99_us_during": round(pct(during, 99), 1),
        "max_us_during": round(max(during), 1) if during else None,
        "p99_us_fetching": round(pct(fetching, 99), 1), "p99_us_applying": round(pct(applying, 99), 1),
        "max_us_fetching": round(max(fetching), 1) if fetching else None,
        "max_us_applying": round(max(applying), 1) if applying else None,
        "gc_max_ms_during": round(max((d for t0, d, _ in pauses.pauses if started <= t0 < ended), default=0.0) * 1000, 2),
        "fetch_s": round(fetch_s, 2), "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3), "load_avg_1m": round(os.getloadavg()[0], 2),
        "decisions_during": len(during),
        "decisions_per_s_during": round(len(during) / (ended - started)), "granted": decider.granted,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
