"""Prometheus metrics: counted in the daemon, exposed by a process of its own.

Why two processes: counting on the decision path must cost a dictionary add (it runs on the
decision worker after the relay has pulsed), and building and serving the exposition — a few ms
of bytecode per scrape — must not hold the deciding process's GIL (bridge/outward/metrics_child.py
says what it cost). So the daemon keeps plain counts and, when the exposition process asks (a
scrape, a textfile write), answers with one JSON snapshot: its counts, and gauges such as outbox
depth or door position, read off the figures the daemon already keeps for `door-bridge status`.
Nothing here reads SQLite or blocks the worker. prometheus_client does the rest in the child:
metric families, the text format, HTTP, the textfile.

Labels are ids the site chose in its configuration (reader, door, upstream) and enum values
(decision, reason, mode, event type). Never a credential, a fingerprint, a user or a name: a
label is kept by Prometheus for months, and anyone who can scrape can read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import random
import subprocess
import threading
from bisect import bisect_left
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

import structlog

from bridge import __version__
from bridge.config.observe import MetricsSection
from bridge.upstream.background import start_piped_child
from verifier.types import AccessDecision, Decision, Reason

if TYPE_CHECKING:
    from bridge.outward.mqtt import MqttPublisher
    from bridge.service.daemon import Daemon

log = structlog.get_logger()

# Scan-to-relay: the target is a few milliseconds p99 (DESIGN.md); an online-first decision waits
# up to the verify budget (0.4 s by default), so the buckets reach past it.
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)
ALARMS = ("held_open", "forced_open")
PREFIX = "door_bridge"
# A family as the exposition process reads it (metrics_child.families): kind, name, help, label
# names, samples.
Family = list[Any]
# An exposition process that exits is started again after a jittered wait of up to this.
RESTART_MAX_S = 30.0


class Metrics:
    """One set of counts per daemon (tests run several daemons in one process)."""

    def __init__(self, daemon: Daemon, mqtt: MqttPublisher | None = None) -> None:
        self.daemon = daemon
        self.mqtt = mqtt
        # Plain dicts, written only by the worker; read by the exporter thread as one C-level copy.
        self.decisions: dict[tuple[Decision, Reason | None, str, str], int] = {}
        # Per reader: a count per bucket of LATENCY_BUCKETS_S, one for +Inf, then the sum (s).
        self.latency: dict[str, list[float]] = {}
        self.door_events: dict[tuple[str, str], int] = {}

    def on_decision(self, d: AccessDecision, latency_ms: float) -> None:
        """A decision listener: on the worker thread, after the pulse."""
        key = (d.decision, d.reason, d.reader_id, d.decided)
        self.decisions[key] = self.decisions.get(key, 0) + 1
        h = self.latency.get(d.reader_id)
        if h is None:
            h = self.latency[d.reader_id] = [0] * (len(LATENCY_BUCKETS_S) + 1) + [0.0]
        seconds = latency_ms / 1000
        h[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1  # le: the first bound >= the value
        h[-1] += seconds

    def on_door_event(self, door: str, kind: str) -> None:
        key = (door, kind)
        self.door_events[key] = self.door_events.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Every family, as the exposition process turns it into prometheus_client's."""
        decisions = [[[d.value, r.value if r else "none", reader, mode], n]
                     for (d, r, reader, mode), n in dict(self.decisions).items()]
        latency = []
        for reader, h in dict(self.latency).items():
            counts, running = list(h), 0
            buckets = []
            for le, n in zip((*LATENCY_BUCKETS_S, "+Inf"), counts[:-1], strict=True):
                running += int(n)
                buckets.append([le, running])
            latency.append([[reader], buckets, counts[-1]])
        events = [[[door, kind], n] for (door, kind), n in dict(self.door_events).items()]
        out: list[Family] = [
            ["counter", f"{PREFIX}_decisions", "Access decisions taken, by decision, reason, reader and how they "
             "were decided (mode: online, cache or learned).", ["decision", "reason", "reader", "mode"], decisions],
            ["histogram", f"{PREFIX}_scan_to_relay_seconds", "From the last byte of a scan to after the relay pulse "
             "(or to the decision, when nothing pulses).", ["reader"], latency],
            ["counter", f"{PREFIX}_door_events", "Door events recorded in the audit outbox (DOOR_OPENED, "
             "DOOR_CLOSED, REX, DOOR_HELD_OPEN, DOOR_FORCED_OPEN, ...).", ["door", "type"], events],
        ]
        out.extend(daemon_families(self.daemon, self.mqtt))
        return {"families": out}


def daemon_families(d: Daemon, mqtt: MqttPublisher | None) -> list[Family]:
    """Gauges computed at scrape time from what the daemon already holds in memory."""
    parts, health = d.parts, d.health
    now = d.clock()
    out: list[Family] = [
        ["info", f"{PREFIX}_build", "Version of door-bridge and of the Python running it.", [],
         {"version": __version__, "python": platform.python_version()}],
        _gauge("start_time_seconds", "When this daemon started (Unix time).", health.stats.started_at.timestamp()),
        _gauge("outbox_depth", "Audit events not yet acknowledged by the central.", parts.outbox.depth()),
    ]
    oldest = health.storage.oldest_pending_at
    out.append(_gauge("outbox_oldest_pending_age_seconds",
                      "Age of the oldest unacknowledged audit event (0 when none is pending).",
                      _seconds_since(oldest, now) if oldest else 0.0))

    meta = parts.cache.meta
    out.append(_gauge("cache_version", "Version of the signed grant bundle in use (0: none).", meta.version))
    if meta.version:
        out.append(_gauge("cache_age_seconds", "Age of the bundle in use (now minus its issued_at).",
                          now.timestamp() - meta.issued_at_ms / 1000))
    out.append(_gauge("cache_grants", "Grant and card records in the cache.", health.storage.grants))
    out.append(_gauge("cache_stale", "1 when the bundle is past its not_after (or there is none).",
                      float(meta.version == 0 or now.timestamp() * 1000 >= meta.not_after_ms)))

    up: list[Any] = []
    last: list[Any] = []
    for name, seen in sorted(health.upstream.by_name.items()):
        up.append([[name], float(bool(seen.online))])
        if seen.last_success is not None:
            last.append([[name], seen.last_success.timestamp()])
    if parts.replicator is not None and parts.sync is not None:
        rs, ss = parts.replicator.state, parts.sync.state
        up.append([["central"], float(bool(rs.online))])
        times = [t for t in (rs.last_success_at, ss.last_sync_at) if t is not None]
        if times:
            last.append([["central"], max(times).timestamp()])
    out.append(["gauge", f"{PREFIX}_upstream_up", "1 when the last exchange with this upstream succeeded.",
                ["upstream"], up])
    out.append(["gauge", f"{PREFIX}_upstream_last_success_timestamp_seconds",
                "When this upstream last answered (Unix time).", ["upstream"], last])

    readers = []
    inputs = {i.reader_id: i for i in parts.inputs}
    for rid, st in sorted(health.stats.readers.items()):
        connected = getattr(inputs.get(rid), "connected", None)
        ok = not st.failed and (not isinstance(connected, threading.Event) or connected.is_set())
        readers.append([[rid], float(ok)])
    out.append(["gauge", f"{PREFIX}_reader_up", "1 while the reader's input runs (and, for a serial scanner, its "
                "port is open).", ["reader"], readers])

    pulses, energised, position, alarm = [], [], [], []
    for name, door in sorted(d.doors.items()):
        pulses.append([[name], door.pulses])
        energised.append([[name], float(door.energised)])
        monitor = parts.door_monitors.get(name)
        if monitor is None:
            continue
        state, raised = monitor.state(), monitor.alarms()
        if state["position"] != "unknown":
            position.append([[name], float(state["position"] == "open")])
        for kind in ALARMS:
            alarm.append([[name, kind], float(kind in raised)])
    out += [["counter", f"{PREFIX}_relay_pulses", "Relay pulses (grants, REX).", ["door"], pulses],
            ["gauge", f"{PREFIX}_relay_energised", "1 while the door relay is energised.", ["door"], energised],
            ["gauge", f"{PREFIX}_door_open", "1 open, 0 closed (only doors with a position switch).", ["door"],
             position],
            ["gauge", f"{PREFIX}_door_alarm", "1 while the alarm is raised on the door.", ["door", "alarm"], alarm]]

    if mqtt is not None:
        out += [_gauge("mqtt_connected", "1 while connected to the MQTT broker.", float(mqtt.connected)),
                _counter("mqtt_published", "MQTT messages handed to the broker connection.", mqtt.published),
                _counter("mqtt_dropped", "MQTT messages dropped because the queue to the broker was full "
                         "(decisions never wait for MQTT).", mqtt.dropped),
                _counter("mqtt_publisher_restarts", "Times the MQTT publisher process died and was started again.",
                         mqtt.restarts)]
    return out


def _gauge(name: str, documentation: str, value: float) -> Family:
    return ["gauge", f"{PREFIX}_{name}", documentation, [], [[[], value]]]


def _counter(name: str, documentation: str, value: float) -> Family:
    return ["counter", f"{PREFIX}_{name}", documentation, [], [[[], value]]]


def _seconds_since(iso_at: str, now: datetime) -> float:
    return max(0.0, now.timestamp() - datetime.fromisoformat(iso_at.replace("Z", "+00:00")).timestamp())


class MetricsExporter:
    """The exposition process (HTTP and/or node_exporter textfile, as configured) and the thread
    that answers its snapshot requests. That thread sleeps in a pipe read between scrapes."""

    def __init__(self, metrics: Metrics, section: MetricsSection) -> None:
        self.metrics = metrics
        self.section = section
        self.listening = threading.Event()
        self.address: str | None = None
        self.port: int | None = None  # the bound port (the kernel's choice for port 0 in tests)
        self.child_pid: int | None = None
        self.restarts = 0
        self.last_error: str | None = None  # for `door-bridge status`
        self._child: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_forever, name="metrics-exporter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve_forever(self) -> None:
        while not self._stop.is_set():
            child = self._spawn()
            if child is None:
                return
            assert child.stdout is not None and child.stdin is not None
            for line in child.stdout:
                self._answer(line, child.stdin)
            code = child.wait()
            self._child, self.child_pid = None, None
            self.listening.clear()
            if self._stop.is_set():
                return
            self.restarts += 1
            self.last_error = f"metrics process exited {code}"
            log.error("metrics_exporter_exited", exit_code=code, restarts=self.restarts,
                      effect="decisions unaffected; no metrics until it is started again",
                      check="the journal lines just before (a Python traceback?); memory (dmesg: oom-kill)")
            self._stop.wait(random.uniform(1.0, min(RESTART_MAX_S, 2.0 ** min(self.restarts, 5))))

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        s = self.section
        settings = {"http": s.http, "address": s.address, "port": s.port,
                    "textfile": str(s.textfile) if s.textfile is not None else None,
                    "textfile_interval_s": s.textfile_interval_s}
        try:
            # Niced from its first instruction: a scrape yields the CPU to decisions.
            child = start_piped_child("bridge.outward.metrics_child", json.dumps(settings).encode() + b"\n")
        except OSError as e:
            self.last_error = f"cannot start the metrics process: {e}"[:200]
            log.error("metrics_unavailable", error=self.last_error,
                      check="the service's memory and process limits (systemctl status door-bridge)")
            return None
        self._child, self.child_pid = child, child.pid
        if self._stop.is_set():  # stopped while it was being started
            self._close(child)
        return child

    def _answer(self, line: bytes, to_child: IO[bytes]) -> None:
        if line == b"snapshot\n":
            try:
                body = json.dumps(self.metrics.snapshot(), separators=(",", ":")).encode() + b"\n"
            except Exception as e:  # noqa: BLE001 - a monitoring tool must never fail a door
                log.error("metrics_snapshot_failed", error=f"{type(e).__name__}: {e}"[:200], check="report this as a bug")
                body = b'{"families":[]}\n'
            with contextlib.suppress(OSError):
                to_child.write(body)
                to_child.flush()
            return
        try:
            event = json.loads(line)
        except ValueError:
            return
        s = self.section
        kind = event.get("event")
        if kind == "listening":
            self.address, self.port = str(event["address"]), int(event["port"])
            self.listening.set()
            self.last_error = None
            log.info("metrics_listening", address=self.address, port=self.port)
        elif kind == "unavailable":
            self.last_error = str(event.get("error"))[:160]
            # The door works without metrics: loud, never fatal.
            log.error("metrics_unavailable", address=s.address, port=s.port, error=str(event.get("error"))[:160],
                      check="another process on that port (ss -ltnp), or metrics.address not on this host")
        elif kind == "textfile_failed":
            self.last_error = f"textfile: {event.get('error')}"[:200]
            log.error("metrics_textfile_failed", path=str(event.get("path")), error=str(event.get("error"))[:160],
                      check="the directory exists and the door-bridge user may write it")
        elif kind == "textfile_restored":
            self.last_error = None
            log.info("metrics_textfile_restored", path=str(event.get("path")))

    @staticmethod
    def _close(child: subprocess.Popen[bytes]) -> None:
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.to_thread(self._end_child)

    def _end_child(self) -> None:
        child = self._child
        if child is not None:
            self._close(child)  # end of input: the process ends
            try:
                child.wait(2.5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        if self._thread.is_alive():
            self._thread.join(5)
