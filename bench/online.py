"""The "cached vs online" floor: one online verify round trip to a loopback central.

The central is tests/support/fakes/frontelio.py (Frontelio's `/access` wire format) in a process
of its own, so serving does not share the measuring process's interpreter; the request goes
through the daemon's own FrontelioAdapter (httpx, the project's HTTP settings, keep-alive), as
an `online-first` scan would. A loopback round trip is the best an online answer can ever do: a
real central adds the network and its own work. bench/decide.py reports it next to the cached
decisions; bench/report.py shows a cached decision as a fraction of it.

    python bench/online.py                # 2,000 round trips; prints figures, then one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.upstream import UpstreamSection, build_adapters  # noqa: E402
from verifier.types import CardNumber, Source  # noqa: E402

CARD = "6B06C2A25E99C68E"
READER = "BENCH-R0"


def _serve(pipe: Any) -> None:
    """`multiprocessing` target: a FakeFrontelio that knows CARD; sends its URL, stops on any message."""
    from tests.support.fakes.frontelio import FakeFrontelio, Holder

    fake = FakeFrontelio(replay_rule=False)
    fake.credentials[CARD] = Holder("user_bench", "Bench Holder", "Zone 0")
    fake.server.start()
    pipe.send(fake.server.url)
    pipe.recv()
    fake.server.stop()


async def _round_trips(url: str, key_file: Path, n: int, warm_up: int) -> list[float]:
    section = UpstreamSection.model_validate({"frontelio": {"base_url": url, "api_key_file": str(key_file)}})
    (adapter,) = build_adapters(section)
    card = CardNumber(CARD)
    latencies: list[float] = []
    try:
        for i in range(warm_up + n):
            t = time.perf_counter_ns()
            decision = await adapter.verify(card, READER, Source.CARD)
            if i >= warm_up:
                latencies.append((time.perf_counter_ns() - t) / 1000)
            if not decision.granted:
                raise RuntimeError(f"the loopback central denied the bench card: {decision.reason}")
    finally:
        await adapter.aclose()
    return latencies


def online_round_trips(n: int = 2000, warm_up: int = 50) -> list[float]:
    """Microseconds per `FrontelioAdapter.verify` against the loopback central, one at a time."""
    from tests.support.fakes.frontelio import API_KEY

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory(prefix="door-bridge-online-") as tmp:
            key_file = Path(tmp) / "frontelio.key"
            key_file.write_text(API_KEY + "\n")
            os.chmod(key_file, 0o600)
            return asyncio.run(_round_trips(url, key_file, n, warm_up))
    finally:
        parent.send("stop")
        server.join(timeout=10)
        if server.is_alive():
            server.kill()


def figures(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"online_p50_us": round(statistics.median(ordered), 1), "online_p99_us": round(p99, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--round-trips", type=int, default=2000)
    args = ap.parse_args()
    result: dict[str, Any] = {"round_trips": args.round_trips, **figures(online_round_trips(args.round_trips)),
                              "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(f"online verify round trip (loopback Frontelio): p50 {result['online_p50_us']} µs, "
          f"p99 {result['online_p99_us']} µs", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
