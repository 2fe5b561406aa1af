"""Prometheus metrics (prometheus_client): counters fed by the daemon's decision and door-event
listeners, everything else read off the daemon's in-memory state when Prometheus scrapes.

Why two halves: counting on the decision path must cost a dictionary look-up and an add (it runs
on the decision worker after the relay has been pulsed), while gauges such as outbox depth or
door position are only worth computing when someone asks. Nothing here reads SQLite or blocks:
the collector reads the figures the daemon already keeps for `door-bridge status`.

Labels are ids the site chose in its configuration (reader, door, upstream) and enum values
(decision, reason, mode, event type). Never a credential, a fingerprint, a user or a name: a
label is kept by Prometheus for months, and anyone who can scrape can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.config.observe import MetricsSection
from verifier.types import AccessDecision, Decision, Reason

if TYPE_CHECKING:
    from bridge.service.daemon import Daemon
    from bridge.outward.mqtt import MqttPublisher

log = structlog.get_logger()

# Scan-to-relay: the target is a few milliseconds p99 (DESIGN.md); an online-first decision waits
# up to the verify budget (0.4 s by default), so the buckets reach past it.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
ALARMS = ("held_open", "forced_open")
PREFIX = "door_bridge"


class Metrics:
    """One registry per daemon (never the process-global one: tests run several daemons)."""

    def __init__(self, daemon: "Daemon", mqtt: "MqttPublisher | None" = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(f"{PREFIX}_decisions", "Access decisions taken, by decision, reason, reader and how "
                                 "they were decided (mode: online, cache or learned).",
                                 ["decision", "reason", "reader", "mode"], registry=self.registry)
        self.latency = Histogram(f"{PREFIX}_scan_to_relay_seconds", "From the last byte of a scan to after the relay "
                                 "pulse (or to the decision, when nothing pulses).", ["reader"],
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.door_events = Counter(f"{PREFIX}_door_events", "Door events recorded in the audit outbox (DOOR_OPENED, "
                                   "DOOR_CLOSED, REX, DOOR_HELD_OPEN, DOOR_FORCED_OPEN, ...).", ["door", "type"],
                                   registry=self.registry)
        self.registry.register(DaemonCollector(daemon, mqtt))
        # Label children bound once per label set: `.labels()` validates, builds a tuple and takes
        # the metric's lock at every call; a dict hit costs a hash. Keys are the enums and ids;
        # `.labels()` returns the metric's own class, bound to one label set.
        self._decision_children: dict[tuple[Decision, Reason | None, str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def on_decision(self, d: AccessDecision, latency_ms: float) -> None:
        """A decision listener: on the worker thread, after the pulse."""
        key = (d.decision, d.reason, d.reader_id, d.decided)
        counter = self._decision_children.get(key)
        if counter is None:
            counter = self._decision_children[key] = self.decisions.labels(
                d.decision.value, d.reason.value if d.reason else "none", d.reader_id, d.decided)
        counter.inc()
        histogram = self._latency_children.get(d.reader_id)
        if histogram is None:
            histogram = self._latency_children[d.reader_id] = self.latency.labels(d.reader_id)
        histogram.observe(latency_ms / 1000)

    def on_door_event(self, door: str, kind: str) -> None:
        self.door_events.labels(door, kind).inc()


class DaemonCollector(Collector):
    """Gauges computed at scrape time from what the daemon already holds in memory."""

    def __init__(self, daemon: "Daemon", mqtt: "MqttPublisher | None") -> None:
        self.daemon = daemon
        self.mqtt = mqtt

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        parts, health = d.parts, d.health
        now = d.clock()
        yield InfoMetricFamily(f"{PREFIX}_build", "Version of door-bridge and of the Python running it.",
                               value={"version": __version__, "python": platform.python_version()})
        yield _gauge("start_time_seconds", "When this daemon started (Unix time).", health.stats.started_at.timestamp())

        yield _gauge("outbox_depth", "Audit events not yet acknowledged by the central.", parts.outbox.depth())
        oldest = health.storage.oldest_pending_at
        age = _seconds_since(oldest, now) if oldest else 0.0
        yield _gauge("outbox_oldest_pending_age_seconds",
                     "Age of the oldest unacknowledged audit event (0 when none is pending).", age)

        meta = parts.cache.meta
        yield _gauge("cache_version", "Version of the signed grant bundle in use (0: none).", meta.version)
        if meta.version:
            yield _gauge("cache_age_seconds", "Age of the bundle in use (now minus its issued_at).",
                         now.timestamp() - meta.issued_at_ms / 1000)
        yield _gauge("cache_grants", "Grant and card records in the cache.", health.storage.grants)
        yield _gauge("cache_stale", "1 when the bundle is past its not_after (or there is none).",
                     float(meta.version == 0 or now.timestamp() * 1000 >= meta.not_after_ms))

        up = GaugeMetricFamily(f"{PREFIX}_upstream_up", "1 when the last exchange with this upstream succeeded.",
                               labels=["upstream"])
        last = GaugeMetricFamily(f"{PREFIX}_upstream_last_success_timestamp_seconds",
                                 "When this upstream last answered (Unix time).", labels=["upstream"])
        for name, seen in sorted(health.upstream.by_name.items()):
            up.add_metric([name], float(bool(seen.online)))
            if seen.last_success is not None:
                last.add_metric([name], seen.last_success.timestamp())
        if parts.replicator is not None and parts.sync is not None:
            rs, ss = parts.replicator.state, parts.sync.state
            up.add_metric(["central"], float(bool(rs.online)))
            times = [t for t in (rs.last_success_at, ss.last_sync_at) if t is not None]
            if times:
                last.add_metric(["central"], max(times).timestamp())
        yield up
        yield last

        readers = GaugeMetricFamily(f"{PREFIX}_reader_up", "1 while the reader's input runs (and, for a serial "
                                    "scanner, its port is open).", labels=["reader"])
        inputs = {i.reader_id: i for i in parts.inputs}
        for rid, st in sorted(health.stats.readers.items()):
            connected = getattr(inputs.get(rid), "connected", None)
            ok = not st.failed and (not isinstance(connected, threading.Event) or connected.is_set())
            readers.add_metric([rid], float(ok))
        yield readers

        pulses = CounterMetricFamily(f"{PREFIX}_relay_pulses", "Relay pulses (grants, REX).", labels=["door"])
        energised = GaugeMetricFamily(f"{PREFIX}_relay_energised", "1 while the door relay is energised.",
                                      labels=["door"])
        position = GaugeMetricFamily(f"{PREFIX}_door_open", "1 open, 0 closed (only doors with a position "
                                     "switch).", labels=["door"])
        alarm = GaugeMetricFamily(f"{PREFIX}_door_alarm", "1 while the alarm is raised on the door.",
                                  labels=["door", "alarm"])
        for name, door in sorted(d.doors.items()):
            pulses.add_metric([name], door.pulses)
            energised.add_metric([name], float(door.energised))
            monitor = parts.door_monitors.get(name)
            if monitor is None:
                continue
            state, raised = monitor.state(), monitor.alarms()
            if state["position"] != "unknown":
                position.add_metric([name], float(state["position"] == "open"))
            for kind in ALARMS:
                alarm.add_metric([name, kind], float(kind in raised))
        yield from (pulses, energised, position, alarm)

        mqtt = self.mqtt
        if mqtt is not None:
            yield _gauge("mqtt_connected", "1 while connected to the MQTT broker.", float(mqtt.connected))
            yield CounterMetricFamily(f"{PREFIX}_mqtt_published", "MQTT messages handed to the broker connection.",
                                      value=mqtt.published)
            yield CounterMetricFamily(f"{PREFIX}_mqtt_dropped", "MQTT messages dropped because the queue to the "
                                      "broker was full (decisions never wait for MQTT).", value=mqtt.dropped)
            yield CounterMetricFamily(f"{PREFIX}_mqtt_publisher_restarts", "Times the MQTT publisher process "
                                      "died and was started again.", value=mqtt.restarts)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _seconds_since(iso_at: str, now: "object") -> float:
    from datetime import datetime

    assert isinstance(now, datetime)
    return max(0.0, now.timestamp() - datetime.fromisoformat(iso_at.replace("Z", "+00:00")).timestamp())


class MetricsExporter:
    """HTTP exposition and/or node_exporter textfile, as configured."""

    def __init__(self, metrics: Metrics, section: MetricsSection) -> None:
        self.metrics = metrics
        self.section = section
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int | None:
        """The bound port (the configured one, or the kernel's choice for port 0 in tests)."""
        return self.server.server_port if self.server is not None else None

    def start(self) -> None:
        s = self.section
        if s.http:
            try:
                self.server, self.thread = start_http_server(s.port, s.address, registry=self.metrics.registry)
            except OSError as e:
                # The door works without metrics: loud, never fatal.
                log.error("metrics_unavailable", address=s.address, port=s.port, error=str(e)[:160],
                          check="another process on that port (ss -ltnp), or metrics.address not on this host")
            else:
                log.info("metrics_listening", address=s.address, port=self.port)
        if s.textfile is not None:
            self.task = asyncio.create_task(self._write_forever(), name="metrics-textfile")

    async def _write_forever(self) -> None:
        assert self.section.textfile is not None
        path = str(self.section.textfile)
        failing = False
        while True:
            try:
                await asyncio.to_thread(write_to_textfile, path, self.metrics.registry)
            except OSError as e:
                if not failing:
                    log.error("metrics_textfile_failed", path=path, error=str(e)[:160],
                              check="the directory exists and the door-bridge user may write it")
                failing = True
            else:
                if failing:
                    log.info("metrics_textfile_restored", path=path)
                failing = False
            await asyncio.sleep(self.section.textfile_interval_s)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.server is not None:
            await asyncio.to_thread(self._shutdown_http)

    def _shutdown_http(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
