"""What an idle bridge pays for its bundle polls: CPU and processes per poll, with the default
`apply_in = "process"` (the download in a child).

A real daemon process against the loopback central of the tests (tests/support/fakes), polling
every `--interval` seconds (1 s is the least the configuration allows; the default is 60 s). After
the first bundle is applied, nothing new is published: every later poll is answered 304, as nearly
all polls of a site are. Over `--seconds` it samples the daemon's CPU, counting its children
(the download processes it waited for), and counts the download processes started and the
largest resident size seen of one (psutil, every 50 ms). The CPU a poll includes the idle
daemon's own (watchdog pings, the 2 s status refresh).

    python bench/poll.py                     # 30 s at one poll a second
    python bench/poll.py --seconds 60

The last line is JSON: polls (the central's count of bundle requests), cpu_s (daemon + waited-for
children), cpu_ms_per_poll, cpu_percent, download_children (seen), download_child_rss_mb_max.
Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fakes.central import FakeCentral, write_api_key  # noqa: E402
from tests.support.harness import Site, door_records  # noqa: E402
from tests.support.service import READER, Service, central_section, write_config  # noqa: E402


def bundle_requests(central: FakeCentral) -> int:
    return sum(1 for r in central.server.requests if r.path.endswith("/bundle"))


def cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=1.0, help="upstream.central.poll_interval_s (>= 1)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="door-bridge-poll-") as tmp_name:
        tmp = Path(tmp_name)
        now = datetime.now(UTC)
        site = Site()
        central = FakeCentral(bridge_id="BRIDGE-SVC", signing_key=site.key, issued_at=now,
                              not_after=now + timedelta(days=7))
        central.server.start()
        svc = Service(tmp, site=site)
        try:
            while central.publish_full(door_records(READER, now)) <= site.version:
                pass
            key_file = write_api_key(tmp / "central.key")
            tail = central_section(central.url, key_file, apply_in="process", poll_interval_s=args.interval)
            write_config(svc.config, svc.state, site, svc.pty.path, tail=tail)
            svc.start()
            svc.wait_log(f"bundle_applied version={central.version} ", timeout=120)
            time.sleep(2.0)  # the apply child is reaped; the next polls are 304s
            assert svc.proc is not None
            daemon = psutil.Process(svc.proc.pid)
            requests_before = bundle_requests(central)
            cpu_before = cpu_s(daemon)
            started, seen, child_rss = time.monotonic(), set(), 0
            while time.monotonic() - started < args.seconds:
                for child in daemon.children(recursive=True):
                    try:
                        if "bridge.upstream.download_child" in " ".join(child.cmdline()):
                            seen.add(child.pid)
                            child_rss = max(child_rss, child.memory_info().rss)
                    except psutil.NoSuchProcess:
                        pass
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            used = cpu_s(daemon) - cpu_before
            polls = bundle_requests(central) - requests_before
        finally:
            svc.close()
            central.server.stop()
    figures = {"bench": "poll", "seconds": round(elapsed, 1), "interval_s": args.interval, "polls": polls,
               "cpu_s": round(used, 3), "cpu_ms_per_poll": round(1000 * used / polls, 1) if polls else None,
               "cpu_percent": round(100 * used / elapsed, 2), "download_children": len(seen),
               "download_child_rss_mb_max": round(child_rss / 2**20, 1)}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
