"""A fleet of bridges reconnecting after a shared outage: how hard does it hit the upstream?

N simulated bridges run in ONE process as asyncio tasks. Each is the real client code: its own
`FrontelioAdapter` (own httpx client, own circuit breaker, built by `build_adapters`) sending
`/access/reader-heartbeat` through `bridge.central.heartbeat.beat_once`, i.e. through the
project's tenacity policy (`background_retrying`: `wait_random_exponential(multiplier=0.5,
max=retry_max_wait_s)`, `stop_after_delay(retry_deadline_s)`). ONE loopback Frontelio fake
(tests/support/fakes/frontelio.py) serves them all and records the arrival time of every request.

The outage: the fake is down when every bridge's heartbeat starts (the model is an outage that
hits the whole fleet at the same moment, e.g. the central restarting under every bridge's in-flight
request; `--start-spread-s` spreads the first attempts instead). Every bridge fails, backs off and
retries; after `--outage-s` the fake listens again on the same port; each bridge stops after its
first successful heartbeat, so loopback traffic is one request per bridge after recovery.

Run twice: WITH the project's jitter, and WITHOUT it — the very same `AsyncRetrying` object with
its `wait_random_exponential` replaced by the `wait_exponential` it derives from (same multiplier,
cap, base), so only the randomness differs. Peak = most requests that arrived at the fake within
any `--bucket-s` window (100 ms) after it came back; the ratio says what jitter buys the central.

Prints figures on stderr, then one JSON object as the last line. Not a test: nothing here asserts
(tests/integration/test_fleet.py runs the same harness at CI size and asserts the mechanism only).

    python bench/fleet.py                                  # 500 bridges, 60 s outage, production back-off
    python bench/fleet.py --bridges 200 --outage-s 5 --retry-max-wait-s 2
    python bench/fleet.py --quick                          # the line above, plus breaker cool-down 1 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest.mock import patch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from structlog.testing import capture_logs
from tenacity import AsyncRetrying, wait_exponential, wait_random_exponential

from bridge.upstream import retry
from bridge.config.upstream import FrontelioSection, HttpSettings, UpstreamSection
from bridge.upstream.errors import UpstreamError
from bridge.upstream.factory import build_adapters
from bridge.central.heartbeat import beat_once
from tests.support.fakes.frontelio import API_KEY, FakeFrontelio


@dataclass(frozen=True)
class FleetSettings:
    bridges: int = 500
    outage_s: float = 60.0
    jitter: bool = True
    # The production defaults of upstream.http (bridge/config/upstream.py); the CI test shortens them.
    retry_max_wait_s: float = 60.0
    retry_deadline_s: float = 240.0
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    start_spread_s: float = 0.0
    bucket_s: float = 0.1
    # Bound on the whole run after the fake comes back: a bridge not back by then counts as lost.
    recover_within_s: float = 300.0
    seed: int | None = None


@dataclass
class FleetRun:
    settings: FleetSettings
    reconnected: int = 0
    # Per bridge: heartbeat attempts that failed (network refused or circuit open) before success.
    failures: list[int] = field(default_factory=list)
    # Per bridge: seconds after the fake came back until its heartbeat succeeded (None: never).
    reconnect_s: list[float | None] = field(default_factory=list)
    # Arrival of every request the fake recorded, in seconds after it came back (sorted).
    arrivals: list[float] = field(default_factory=list)
    # The waits tenacity chose, by attempt number (from the policy's own `upstream_retry` log line).
    waits_by_attempt: dict[int, list[float]] = field(default_factory=dict)
    reader_ids_seen: set[str] = field(default_factory=set)

    @property
    def peak(self) -> int:
        return peak_in_window(self.arrivals, self.settings.bucket_s)

    @property
    def peak_rps(self) -> float:
        return self.peak / self.settings.bucket_s

    def figures(self) -> dict[str, Any]:
        back = sorted(t for t in self.reconnect_s if t is not None)
        return {
            "jitter": self.settings.jitter, "bridges": self.settings.bridges, "reconnected": self.reconnected,
            "requests": len(self.arrivals), f"peak_per_{int(self.settings.bucket_s * 1000)}ms": self.peak,
            "peak_rps": round(self.peak_rps), "mean_rps": round(len(self.arrivals) / max(spread(self.arrivals), self.settings.bucket_s)),
            "spread_s": round(spread(self.arrivals), 3),
            "reconnect_p50_s": round(statistics.median(back), 2) if back else None,
            "reconnect_max_s": round(back[-1], 2) if back else None,
            "failures_per_bridge": round(statistics.mean(self.failures), 1) if self.failures else 0,
        }


def spread(arrivals: list[float]) -> float:
    return arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0


def peak_in_window(arrivals: list[float], window_s: float) -> int:
    """Most arrivals inside any half-open window [t, t + window_s) (a sliding window, so the answer
    does not depend on where bucket edges happen to fall)."""
    times = sorted(arrivals)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


# --- the retry policy with and without jitter ----------------------------------------------------

def dejittered(policy: AsyncRetrying) -> AsyncRetrying:
    """The same policy object with jitter removed: `wait_random_exponential` draws uniformly from
    [0, the `wait_exponential` it subclasses], so that parent, with the same parameters, is the
    lock-step schedule the project would have without jitter."""
    wait = policy.wait
    if not isinstance(wait, wait_random_exponential):
        raise TypeError(f"the project's retry wait is {type(wait).__name__}, not wait_random_exponential: update bench/fleet.py")
    return policy.copy(wait=wait_exponential(multiplier=wait.multiplier, max=wait.max, exp_base=wait.exp_base, min=wait.min))


@contextmanager
def retry_policy(jitter: bool) -> Iterator[None]:
    """With jitter: the project's code untouched. Without: `bridge.upstream.retry.background_retrying`
    (which `call_with_retry`, and so `beat_once`, looks up at each call) returns the dejittered copy."""
    if jitter:
        yield
        return
    original = retry.background_retrying

    def without_jitter(settings: HttpSettings, *, sleep: Any = None) -> AsyncRetrying:
        return dejittered(original(settings, sleep=sleep))

    with patch.object(retry, "background_retrying", without_jitter):
        yield


# --- the fake, in its own process ---------------------------------------------------------------

def serve_fake(pipe: Any) -> None:
    """`multiprocessing` target: the stock Frontelio fake in a process of its own, so serving the
    burst does not share the fleet's GIL (arrival times are then the fleet's, not the server's).
    It listens with a backlog the size of a fleet: socketserver's default `listen(5)` would make
    the kernel drop most SYNs of a synchronised burst and re-send them a second later, spreading
    the burst for reasons that have nothing to do with the bridges. Commands: `down`, `up`
    (answers the time.time() it listened again), `arrivals` (answers [(at, readerId)] of every
    heartbeat since the last `up`), `stop`."""
    fake = FakeFrontelio()
    with patch.object(ThreadingHTTPServer, "request_queue_size", 4096):
        fake.server.start()
        pipe.send(fake.server.url)
        up_at = time.time()
        while True:
            command = pipe.recv()
            if command == "down":
                fake.server.go_down()
                pipe.send(len(fake.server.requests))
            elif command == "up":
                up_at = time.time()
                fake.server.come_up()
                pipe.send(up_at)
            elif command == "arrivals":
                pipe.send([(r.at, r.json.get("readerId") if isinstance(r.json, dict) else None)
                           for r in fake.server.requests_to("/access/reader-heartbeat") if r.at >= up_at])
            else:
                fake.server.stop()
                pipe.send(True)
                return


class FakeProcess:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._process = ctx.Process(target=serve_fake, args=(child,), daemon=True)
        self._process.start()
        self.url: str = self._pipe.recv()

    def ask(self, command: str) -> Any:
        self._pipe.send(command)
        return self._pipe.recv()

    def close(self) -> None:
        if self._process.is_alive():
            self.ask("stop")
        self._process.join(timeout=10)


class CountingAdapter:
    """Delegates to the real adapter; counts the attempts that failed (refused, or circuit open)."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.failures = 0

    async def heartbeat(self, reader_id: str) -> None:
        try:
            await self.adapter.heartbeat(reader_id)
        except UpstreamError:
            self.failures += 1
            raise


def fleet_http(s: FleetSettings) -> HttpSettings:
    return HttpSettings(retry_max_wait_s=s.retry_max_wait_s, retry_deadline_s=s.retry_deadline_s,
                        breaker_failures=s.breaker_failures, breaker_cooldown_s=s.breaker_cooldown_s)


def key_file_in(work_dir: Path) -> Path:
    path = work_dir / "frontelio.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(API_KEY + "\n")
    return path


def build_fleet(s: FleetSettings, url: str, work_dir: Path) -> list[CountingAdapter]:
    """One real adapter per bridge: its own httpx client and its own circuit breaker."""
    section = UpstreamSection(http=fleet_http(s), frontelio=FrontelioSection(base_url=url, api_key_file=key_file_in(work_dir)))
    return [CountingAdapter(build_adapters(section)[0]) for _ in range(s.bridges)]


async def run_fleet(s: FleetSettings, fake: FakeProcess, fleet: list[CountingAdapter]) -> FleetRun:
    """One outage: the fake goes down, every bridge starts its heartbeat, the fake comes back."""
    rng = random.Random(s.seed)
    if s.seed is not None:
        random.seed(s.seed)  # tenacity's jitter draws from the module's generator
    http = fleet_http(s)
    for bridge in fleet:
        bridge.failures = 0
    fake.ask("down")
    run = FleetRun(s)

    async def one_bridge(index: int, adapter: CountingAdapter) -> float | None:
        if s.start_spread_s:
            await asyncio.sleep(rng.uniform(0, s.start_spread_s))
        error = await beat_once(adapter, f"FLEET-{index:04d}", http)  # type: ignore[arg-type]
        return None if error is not None else time.time()

    with capture_logs() as logs, retry_policy(s.jitter):
        tasks = [asyncio.create_task(one_bridge(i, b)) for i, b in enumerate(fleet)]
        await asyncio.sleep(s.outage_s)
        came_back = await asyncio.to_thread(fake.ask, "up")
        done, pending = await asyncio.wait(tasks, timeout=s.recover_within_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    back_at = [t.result() if t in done else None for t in tasks]
    run.reconnect_s = [None if at is None else at - came_back for at in back_at]
    run.reconnected = sum(t is not None for t in run.reconnect_s)
    run.failures = [b.failures for b in fleet]
    arrivals = fake.ask("arrivals")
    run.arrivals = sorted(at - came_back for at, _ in arrivals)
    run.reader_ids_seen = {reader for _, reader in arrivals}
    waits: dict[int, list[float]] = defaultdict(list)
    for entry in logs:
        if entry["event"] == "upstream_retry" and entry.get("wait_s") is not None:
            waits[entry["attempt"]].append(entry["wait_s"])
    run.waits_by_attempt = dict(waits)
    return run


def run_both(s: FleetSettings, work_dir: Path) -> tuple[FleetRun, FleetRun]:
    """(with jitter, without jitter): the same fleet of clients, one outage after the other."""
    async def both() -> tuple[FleetRun, FleetRun]:
        fake = FakeProcess()
        fleet = build_fleet(s, fake.url, work_dir)
        try:
            jittered = await run_fleet(replace(s, jitter=True), fake, fleet)
            lockstep = await run_fleet(replace(s, jitter=False), fake, fleet)
        finally:
            await asyncio.gather(*(b.adapter.aclose() for b in fleet), return_exceptions=True)
            fake.close()
        return jittered, lockstep

    return asyncio.run(both())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FleetSettings()
    ap.add_argument("--bridges", type=int, default=d.bridges)
    ap.add_argument("--outage-s", type=float, default=d.outage_s)
    ap.add_argument("--retry-max-wait-s", type=float, default=d.retry_max_wait_s)
    ap.add_argument("--retry-deadline-s", type=float, default=d.retry_deadline_s)
    ap.add_argument("--breaker-failures", type=int, default=d.breaker_failures)
    ap.add_argument("--breaker-cooldown-s", type=float, default=d.breaker_cooldown_s)
    ap.add_argument("--start-spread-s", type=float, default=d.start_spread_s)
    ap.add_argument("--bucket-s", type=float, default=d.bucket_s)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quick", action="store_true",
                    help="200 bridges, 5 s outage, back-off capped at 2 s, breaker cool-down 1 s (bench/report.py --quick)")
    args = ap.parse_args()
    if args.quick:
        args.bridges, args.outage_s, args.retry_max_wait_s, args.breaker_cooldown_s = 200, 5.0, 2.0, 1.0
    s = FleetSettings(bridges=args.bridges, outage_s=args.outage_s, retry_max_wait_s=args.retry_max_wait_s,
                      retry_deadline_s=args.retry_deadline_s, breaker_failures=args.breaker_failures,
                      breaker_cooldown_s=args.breaker_cooldown_s, start_spread_s=args.start_spread_s,
                      bucket_s=args.bucket_s, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="door-bridge-fleet-") as tmp:
        jittered, lockstep = run_both(s, Path(tmp))
    for run in (jittered, lockstep):
        f = run.figures()
        print(f"{'with' if run.settings.jitter else 'without'} jitter: {f['reconnected']}/{f['bridges']} reconnected, "
              f"{f['requests']} requests after recovery over {f['spread_s']} s, peak {run.peak} in "
              f"{int(s.bucket_s * 1000)} ms ({f['peak_rps']} req/s), reconnect p50 {f['reconnect_p50_s']} s "
              f"max {f['reconnect_max_s']} s, {f['failures_per_bridge']} failed attempts per bridge", file=sys.stderr)
    ratio = lockstep.peak / max(1, jittered.peak)
    print(f"peak without jitter / with jitter: {ratio:.1f}x", file=sys.stderr)
    print(json.dumps({"bridges": s.bridges, "outage_s": s.outage_s, "bucket_ms": int(s.bucket_s * 1000),
                      "retry_max_wait_s": s.retry_max_wait_s, "breaker_cooldown_s": s.breaker_cooldown_s,
                      "peak_rps_jitter": round(jittered.peak_rps), "peak_rps_no_jitter": round(lockstep.peak_rps),
                      "ratio": round(ratio, 1),
                      "reconnected_jitter": jittered.reconnected, "reconnected_no_jitter": lockstep.reconnected,
                      "reconnect_max_s_jitter": jittered.figures()["reconnect_max_s"],
                      "reconnect_max_s_no_jitter": lockstep.figures()["reconnect_max_s"],
                      "spread_s_jitter": jittered.figures()["spread_s"], "spread_s_no_jitter": lockstep.figures()["spread_s"]}))


if __name__ == "__main__":
    main()
