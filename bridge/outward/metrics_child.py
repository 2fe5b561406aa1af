"""Prometheus exposition in a process of its own: `python -m bridge.outward.metrics_child`.

Why a process: building the exposition (prometheus_client's collect and text format, a few
hundred samples) and serving it over HTTP is bytecode under the GIL, 2-4 ms per scrape, and a
scrape thread in the daemon holds the GIL that long while the decision worker waits for it
(bench/observe_ab.py: with a 1 s scrape, p99 at 1,000 scans/s rose from 3.3 ms to 8.3 ms). Here
prometheus_client runs under another interpreter's GIL, niced (bridge/upstream/background.py);
the daemon only counts (dict adds) and, when this process asks, writes one JSON snapshot of its
figures to a pipe.

Protocol: the first stdin line is the settings (JSON: address, port, http, textfile,
textfile_interval_s). For each scrape (and each textfile write) this process writes `snapshot`
on stdout and reads one JSON line back: the families (see `families`). Events go to stdout as
JSON lines (`listening`, `unavailable`, `textfile_failed`, `textfile_restored`); the daemon logs
them, so the journal reads as it did. End of stdin ends the process. It ignores SIGTERM, SIGINT
and SIGHUP, which systemd and a terminal send to every process of the service.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# How long a scrape waits for the daemon's snapshot before it is served the previous one.
SNAPSHOT_WAIT_S = 2.0


def families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    """The daemon's snapshot as prometheus_client metric families.

    Each family: `[kind, name, help, label names, samples]`; a sample is `[label values, value]`,
    for a histogram `[label values, [[le, cumulative count], ...], sum]`."""
    for kind, name, doc, labels, samples in snapshot["families"]:
        if kind == "info":
            yield InfoMetricFamily(name, doc, value=samples)
            continue
        if kind == "histogram":
            h = HistogramMetricFamily(name, doc, labels=labels)
            for values, buckets, total in samples:
                h.add_metric(values, [(str(le), n) for le, n in buckets], total)
            yield h
            continue
        family = CounterMetricFamily(name, doc, labels=labels) if kind == "counter" else \
            GaugeMetricFamily(name, doc, labels=labels)
        for values, value in samples:
            family.add_metric(values, value)
        yield family


class Daemon:
    """The pipe to the daemon: one snapshot request at a time (HTTP threads and the textfile loop
    share it). A daemon that does not answer in time gets the previous snapshot served again,
    with its age, rather than a failed scrape."""

    def __init__(self, stdin: IO[bytes], stdout: IO[str]) -> None:
        self._in, self._out = stdin, stdout
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._answer: dict[str, Any] | None = None
        self._answered = threading.Condition()
        self._last: dict[str, Any] = {"families": []}
        self._last_at = time.monotonic()
        self.closed = threading.Event()

    def say(self, **event: Any) -> None:
        self._send(json.dumps(event))

    def _send(self, line: str) -> None:
        with self._write_lock:
            self._out.write(line + "\n")
            self._out.flush()

    def read_forever(self) -> None:
        for line in self._in:
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            with self._answered:
                self._answer = answer
                self._answered.notify_all()
        self.closed.set()
        with self._answered:
            self._answered.notify_all()

    def snapshot(self) -> tuple[dict[str, Any], float]:
        with self._lock:
            with self._answered:
                self._answer = None
            if not self.closed.is_set():
                self._send("snapshot")
                with self._answered:
                    self._answered.wait_for(lambda: self._answer is not None or self.closed.is_set(),
                                            SNAPSHOT_WAIT_S)
                    if self._answer is not None:
                        self._last, self._last_at = self._answer, time.monotonic()
            return self._last, time.monotonic() - self._last_at


class SnapshotCollector(Collector):
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        snapshot, age = self.daemon.snapshot()
        yield from families(snapshot)
        yield GaugeMetricFamily("door_bridge_metrics_snapshot_age_seconds", "How old the figures served are (0 "
                                "unless the daemon was too busy to answer this scrape in time).", value=age)


def write_textfile_forever(daemon: Daemon, registry: CollectorRegistry, path: str, interval_s: float) -> None:
    failing = False
    while not daemon.closed.is_set():
        try:
            write_to_textfile(path, registry)  # written whole, renamed into place
        except OSError as e:
            if not failing:
                daemon.say(event="textfile_failed", path=path, error=str(e)[:160])
            failing = True
        else:
            if failing:
                daemon.say(event="textfile_restored", path=path)
            failing = False
        daemon.closed.wait(interval_s)


def main() -> int:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    settings = json.loads(stdin.readline())
    daemon = Daemon(stdin, sys.stdout)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(daemon))
    reader = threading.Thread(target=daemon.read_forever, name="metrics-input", daemon=True)
    reader.start()
    if settings["http"]:
        try:
            server, _ = start_http_server(settings["port"], settings["address"], registry=registry)
        except OSError as e:
            daemon.say(event="unavailable", address=settings["address"], port=settings["port"], error=str(e)[:160])
        else:
            daemon.say(event="listening", address=server.server_address[0], port=server.server_port)
    if settings.get("textfile"):
        threading.Thread(target=write_textfile_forever, name="metrics-textfile", daemon=True,
                         args=(daemon, registry, settings["textfile"], settings["textfile_interval_s"])).start()
    daemon.closed.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
