"""Audit replication throughput: drain an offline backlog from a real outbox to a loopback central.

A day offline at a busy door is a few thousand events; 100,000 is a month of a busy site. The
outbox is the real one (audit.db, WAL, acks fsync'd); the central is the test fake, run in its own
process so its JSON parsing does not share this process's GIL. Prints figures, then one JSON
object as the last line. Not a test: nothing here asserts.

    python bench/replicate.py                  # 100,000 events, batches of 500
    python bench/replicate.py --events 10000 --batch-size 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.state.outbox import Outbox  # noqa: E402
from bridge.central.replicator import Replicator  # noqa: E402
from bridge.upstream.central import build_central  # noqa: E402
from bridge.config.upstream import CentralSection, HttpSettings  # noqa: E402
from tests.support.fakes.central import PREFIX, serve_in_process, write_api_key  # noqa: E402

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)


def fill(outbox: Outbox, n: int) -> float:
    """The backlog, through the real `append`. fsync is switched off for the fill only: 100,000
    fsyncs would time the SD card, not replication. Returns seconds taken."""
    started = time.perf_counter()
    outbox.conn.execute("PRAGMA synchronous=OFF")
    for i in range(n):
        outbox.append("VERIFY", {
            "decision": "GRANT" if i % 4 else "DENY", "reason": None if i % 4 else "NO_GRANT",
            "userId": f"user_{i % 5000}", "userName": f"Holder {i % 5000}", "zoneId": "zone_stock",
            "zoneName": "Back of House — Stockroom", "readerId": f"BRIDGE-R{i % 4}", "source": "CARD",
            "replay": False, "cacheVersion": 42, "online": False, "credentialKind": "card",
            "fingerprint": f"card:{i:08x}", "bridgeId": "BRIDGE-1", "door": "main",
        }, at=T0 + timedelta(seconds=i * 0.5))
    outbox.conn.execute("PRAGMA synchronous=FULL")
    return time.perf_counter() - started


async def drain(outbox: Outbox, url: str, key_file: Path, batch_size: int) -> tuple[int, float, Replicator]:
    section = CentralSection(base_url=url, api_key_file=key_file, batch_size=batch_size)
    settings = HttpSettings()
    client = build_central(section, settings, bridge_id="BRIDGE-1")
    replicator = Replicator(client, outbox, section, settings, clock=lambda: datetime.now(timezone.utc))
    try:
        started = time.perf_counter()
        acked = await replicator.drain()
        return acked, time.perf_counter() - started, replicator
    finally:
        await client.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_in_process, args=(child,), daemon=True)
    server.start()
    port = parent.recv()
    with tempfile.TemporaryDirectory(prefix="door-bridge-bench-") as tmp:
        key_file = write_api_key(Path(tmp) / "central.key")
        outbox = Outbox(Path(tmp) / "audit.db", max_events=max(args.events * 2, 100))
        fill_s = fill(outbox, args.events)
        print(f"backlog of {args.events} events written in {fill_s:.1f} s", file=sys.stderr)
        acked, drain_s, replicator = asyncio.run(
            drain(outbox, f"http://127.0.0.1:{port}{PREFIX}", key_file, args.batch_size))
        depth = outbox.depth()
        outbox.close()
    parent.send("stop")
    stats = parent.recv()
    server.join(timeout=10)
    batches = -(-args.events // args.batch_size)
    print(f"drained {acked} events in {drain_s:.2f} s ({acked / drain_s:,.0f} events/s, {batches} batches "
          f"of {args.batch_size}); central stored {stats['stored']}, duplicates {stats['duplicates']}, "
          f"left pending {depth}", file=sys.stderr)
    print(json.dumps({"events": acked, "drain_s": round(drain_s, 2), "events_per_s": round(acked / drain_s),
                      "batch_size": args.batch_size, "central_stored": stats["stored"], "pending_after": depth,
                      "duplicates": replicator.state.duplicates}))


if __name__ == "__main__":
    main()
