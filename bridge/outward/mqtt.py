"""MQTT publishing (paho-mqtt 2): door state, alarms and decision summaries for building systems
and Home Assistant. Publish only; off unless `[mqtt] enabled = true`.

Read-only by construction: the client never subscribes, so the broker has nothing to deliver to
it, and a message that arrives anyway is counted, logged and dropped. A retained "open" on some
topic at boot — esp-rfid's best-known failure — therefore cannot reach a relay. (The bridge
protocol's signed remote commands do not exist yet; when they do, they will arrive from the
central, not from a broker.)

Never on the decision path, and off the deciding process's GIL: the daemon's listeners append a
note (the decision itself, immutable) to a bounded deque after the relay has pulsed — no lock,
no JSON, no wake-up; full → dropped and counted. A feeder thread wakes every `FEED_INTERVAL_S`,
turns what accumulated into lines and writes them, in order, in one pipe write to the
publisher process (bridge/outward/mqtt_child.py), which owns the paho client. Decisions go as
rows of their fields, one line a run (summary_rows: the publisher builds the JSON payloads, so
the feeder holds this process's GIL ~0.1 ms a feed at 1,000/s, not ~0.6 ms). So the daemon
pays a deque append per decision and at most 1 / FEED_INTERVAL_S short wakes a second, whatever
the decision rate; paho's bytecode runs under another interpreter's GIL. A publisher process
that dies is logged, its unconfirmed messages are counted as dropped, and another is started
after a jittered back-off.

Retained: only the bridge's availability (`online`, and the broker's last-will `offline`) and the
Home Assistant discovery documents — descriptions, not states, nothing anyone should act on. Door
position and alarm are not retained: they are sent at every (re)connection and every
`state_interval_s`, so a door is never shown open from a message older than the broker's uptime.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from bridge import __version__
from bridge.config.observe import MqttSection
from bridge.outward.mqtt_child import OFFLINE, ONLINE, SessionSettings, TlsFiles, tls_context
from bridge.outward.summary_rows import batch_line
from bridge.upstream.background import start_piped_child
from verifier.types import AccessDecision

log = structlog.get_logger()

# The feeder's period: the longest a summary waits in the daemon before the publisher process
# has it, and the bound on how often publishing wakes the daemon (20 a second, at any rate).
FEED_INTERVAL_S = 0.05
# A publisher process that does not end within this after its input closed is killed.
CHILD_STOP_S = 2.5
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def topic_part(name: str) -> str:
    """A config name as one topic level: no `/`, `+`, `#` or spaces (door "Back office" → Back_office)."""
    return _TOPIC_UNSAFE.sub("_", name) or "_"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str
    retain: bool = False
    qos: int = 1  # states, alarms, events, availability: at least once


@dataclass(frozen=True, slots=True)
class DoorView:
    """What MQTT may say about a door: position ("open", "closed", "unknown") and alarm ("none", …)."""

    position: str
    alarm: str
    has_switch: bool


@dataclass(frozen=True, slots=True)
class DecisionNote:
    """What the worker hands over: the decision as it is (immutable), encoded later by the feeder."""

    decision: AccessDecision
    latency_ms: float
    at: datetime


@dataclass(frozen=True, slots=True)
class DoorEventNote:
    door: str
    kind: str
    at: datetime
    view: DoorView | None  # the door's state right after the event, read on the worker


DoorStates = Callable[[], dict[str, DoorView]]


class Topics:
    """Every topic in one place (docs/operations.md lists them)."""

    def __init__(self, section: MqttSection, bridge_id: str) -> None:
        self.bridge = topic_part(bridge_id)
        self.base = f"{section.topic_prefix.rstrip('/')}/{self.bridge}"
        self.status = f"{self.base}/status"
        self.decision = f"{self.base}/decision"
        self.event = f"{self.base}/event"
        self.discovery_prefix = section.discovery_prefix.rstrip("/")
        self.node = f"door_bridge_{self.bridge}"

    def position(self, door: str) -> str:
        return f"{self.base}/door/{topic_part(door)}/position"

    def alarm(self, door: str) -> str:
        return f"{self.base}/door/{topic_part(door)}/alarm"

    def discovery(self, door: str, what: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.node}/{topic_part(door)}_{what}/config"


def tls_files(section: MqttSection) -> TlsFiles | None:
    if not section.tls:
        return None
    return TlsFiles(*(str(p) if p is not None else None for p in (section.ca_file, section.cert_file, section.key_file)))


class MqttPublisher:
    def __init__(self, section: MqttSection, bridge_id: str, door_states: DoorStates, *,
                 password: str | None = None, reader_door: dict[str, str] | None = None,
                 clock: Callable[[], datetime]) -> None:
        self.section = section
        self.bridge_id = bridge_id
        self.topics = Topics(section, bridge_id)
        self._door_states = door_states
        self._reader_door = reader_door or {}
        self._clock = clock
        self._password = password
        self._tls = tls_files(section)
        if self._tls is not None:
            tls_context(self._tls)  # a CA or key that is not PEM: ssl.SSLError (an OSError) now, not later
        self._notes: collections.deque[DecisionNote | DoorEventNote] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed_forever, name="mqtt-feed", daemon=True)
        self._child: subprocess.Popen[bytes] | None = None
        self._unsent = b""  # bytes of lines the pipe did not take yet (a busy publisher process)
        self._replies = b""
        self._handed = 0  # messages written to the current publisher process
        self._child_published = self._child_dropped = 0
        self._attempt = 0
        self._next_states = 0.0
        self._last_states: dict[str, DoorView] = {}
        # Read by metrics and status from other threads: plain ints and a bool (GIL-atomic).
        self.connected = False
        self.published = 0
        self.dropped = 0
        self.ignored = 0
        self.restarts = 0
        self.last_error: str | None = None
        self.child_pid: int | None = None

    # --- what the daemon calls (the worker thread; never blocks) ----------------------------------

    def start(self) -> None:
        self._thread.start()

    def _note(self, note: DecisionNote | DoorEventNote) -> None:
        # len() and append() are each atomic; producers are the worker (and rarely the feeder),
        # so the bound holds to within a note or two.
        if len(self._notes) >= self.section.queue_size:
            self.dropped += 1
        else:
            self._notes.append(note)

    def on_decision(self, d: AccessDecision, latency_ms: float) -> None:
        self._note(DecisionNote(d, latency_ms, self._clock()))

    def on_door_event(self, door: str, kind: str) -> None:
        self._note(DoorEventNote(door, kind, self._clock(), self._door_states().get(door)))

    def stop(self, timeout_s: float = CHILD_STOP_S + 1.0) -> None:
        """Hand over what is queued, let the publisher say `offline` (retained) and close; bounded."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # --- the feeder thread ------------------------------------------------------------------------

    def _feed_forever(self) -> None:
        while not self._stop.is_set():
            if self._child is None and not self._spawn():
                continue
            self._stop.wait(FEED_INTERVAL_S)
            self._read_replies()
            if self._child is not None and self._child.poll() is not None:
                self._child_ended()
                continue
            self._feed()
        self._finish()

    def _spawn(self) -> bool:
        try:
            # Niced from its first instruction (imports included): its start and paho's work
            # yield the CPU to decisions; the bounded queue, not the door, absorbs any lag.
            child = start_piped_child("bridge.outward.mqtt_child", self._settings().to_json().encode() + b"\n")
        except OSError as e:
            self._back_off(f"cannot start the MQTT publisher process: {e}"[:200])
            return False
        os.set_blocking(child.stdin.fileno(), False)
        os.set_blocking(child.stdout.fileno(), False)
        self._child, self.child_pid = child, child.pid
        self._unsent, self._replies = b"", b""
        self._handed = self._child_published = self._child_dropped = 0
        return True

    def _settings(self) -> SessionSettings:
        s = self.section
        return SessionSettings(
            host=s.host, port=s.broker_port, client_id=s.client_id or f"door-bridge-{self.bridge_id}",
            keepalive_s=s.keepalive_s, status_topic=self.topics.status, queue_size=s.queue_size,
            reconnect_min_s=s.reconnect_min_s, reconnect_max_s=s.reconnect_max_s, username=s.username,
            password=self._password, tls=self._tls,
            on_connect=[(m.topic, m.payload) for m in self._discovery()] if s.homeassistant else [])

    def _feed(self) -> None:
        """Everything noted since the last wake, as JSON lines, in one write."""
        if self.connected and time.monotonic() >= self._next_states:
            self._next_states = time.monotonic() + self.section.state_interval_s
            for door, view in self._door_states().items():
                self._offer_door(door, view, force=True)
        if not self._unsent:
            self._unsent = self._take_notes().encode()
        self._write()

    def _write(self) -> None:
        assert self._child is not None and self._child.stdin is not None
        if not self._unsent:
            return
        try:
            written = os.write(self._child.stdin.fileno(), self._unsent)
        except BlockingIOError:
            return  # the pipe is full: the process is busy; notes wait (bounded) in the deque
        except OSError:
            return  # the process is gone: _child_ended() counts what it did not confirm
        self._unsent = self._unsent[written:]

    def _take_notes(self) -> str:
        """The notes, in order, as pipe lines: each run of decisions as one batch of rows
        (summary_rows: built in the publisher process), each door event as its messages."""
        parts: list[str] = []
        rows: list[list[Any]] = []
        taken = 0
        while self._notes and taken < self.section.queue_size:
            note = self._notes.popleft()
            if isinstance(note, DecisionNote):
                rows.append(decision_row(note, self._reader_door, self.section.publish_identities))
                taken += 1
                continue
            if rows:
                parts.append(batch_line(self.topics.decision, self.section.decision_qos, rows))
                rows = []
            lines = self._event_lines(note)
            parts.extend(lines)
            taken += len(lines)
        if rows:
            parts.append(batch_line(self.topics.decision, self.section.decision_qos, rows))
        self._handed += taken
        return "".join(parts)

    def _event_lines(self, note: DoorEventNote) -> list[str]:
        out = [_line(Message(self.topics.event, _json({"at": note.at.isoformat(timespec="milliseconds"),
                                                         "door": note.door, "type": note.kind})))]
        if note.view is not None:
            out.extend(_line(m) for m in self._door_messages(note.door, note.view))
        return out

    def _offer_door(self, door: str, view: DoorView, force: bool = False) -> None:
        lines = [_line(m) for m in self._door_messages(door, view, force)]
        self._handed += len(lines)
        self._unsent += "".join(lines).encode()

    def _door_messages(self, door: str, view: DoorView, force: bool = False) -> list[Message]:
        last = self._last_states.get(door)
        out = []
        if view.has_switch and (force or last is None or last.position != view.position):
            out.append(Message(self.topics.position(door), view.position))
        if force or last is None or last.alarm != view.alarm:
            out.append(Message(self.topics.alarm(door), view.alarm))
        self._last_states[door] = view
        return out

    def _read_replies(self) -> None:
        if self._child is None or self._child.stdout is None:
            return
        fd = self._child.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self._replies += chunk
        *lines, self._replies = self._replies.split(b"\n")
        for line in lines:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            self._take(reply)

    def _take(self, reply: dict[str, Any]) -> None:
        """The publisher process's word, logged here so the journal reads as it always did."""
        s = self.section
        broker = f"{s.host}:{s.broker_port}"
        if "counts" in reply:
            published, dropped = int(reply["counts"]["published"]), int(reply["counts"]["dropped"])
            self.published += published - self._child_published
            self.dropped += dropped - self._child_dropped
            self._child_published, self._child_dropped = published, dropped
            return
        event = reply.get("event")
        if event == "connected":
            self.connected, self.last_error = True, None
            self._attempt = 0
            log.info("mqtt_connected", broker=broker, attempts=reply.get("attempts", 0), tls=s.tls)
            self._last_states.clear()
            self._next_states = 0.0  # every state again right away: nothing is retained
        elif event == "disconnected":
            self.connected, self.last_error = False, str(reply.get("error"))[:200]
            log.warning("mqtt_disconnected", broker=broker, error=self.last_error,
                        queued=int(reply.get("queued", 0)) + len(self._notes),
                        effect="decisions unaffected; summaries wait in a bounded queue",
                        check="is the broker running and reachable (TLS CA, credentials)?")
        elif event == "retrying":
            self.last_error = str(reply.get("error"))[:200]
        elif event == "refused":
            self.last_error = f"broker refused: {reply.get('reason')}"
            log.error("mqtt_refused", broker=broker, reason=str(reply.get("reason")),
                      check="mqtt.username / password file and the broker's ACL for this client")
        elif event == "ignored":
            self.ignored += 1
            log.warning("mqtt_message_ignored", topic=str(reply.get("topic"))[:120],
                        why="door-bridge accepts no command over MQTT")

    def _child_ended(self) -> None:
        """The publisher process died: what it did not confirm is lost (counted); start another."""
        assert self._child is not None
        code = self._child.returncode
        self._read_replies()
        lost = max(0, self._handed - self._child_published - self._child_dropped)
        self.dropped += lost
        self._close_pipes()
        self.restarts += 1
        log.error("mqtt_publisher_exited", exit_code=code, lost=lost, restarts=self.restarts,
                  effect="decisions unaffected; MQTT summaries paused until a new publisher connects",
                  check="the journal lines just before (a Python traceback?); memory (dmesg: oom-kill)")
        self._back_off(f"MQTT publisher process exited {code}")

    def _back_off(self, error: str) -> None:
        self.connected, self.last_error = False, error
        s = self.section
        cap = min(s.reconnect_max_s, s.reconnect_min_s * 2 ** min(self._attempt, 16))
        self._attempt += 1
        self._stop.wait(random.uniform(s.reconnect_min_s / 2, cap))

    def _finish(self) -> None:
        """At stop: the rest of the notes, then end of input; the process says `offline` and ends."""
        child = self._child
        if child is None:
            self.dropped += len(self._notes)  # stopped while no publisher process was running
            self._notes.clear()
            return
        if child.poll() is None:
            self._feed()
            deadline = time.monotonic() + CHILD_STOP_S / 2
            while self._unsent and time.monotonic() < deadline and child.poll() is None:
                select.select([], [child.stdin], [], 0.05)
                self._write()
        self._close_stdin()
        try:
            child.wait(CHILD_STOP_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
        self._read_replies()
        self.dropped += max(0, self._handed - self._child_published - self._child_dropped)
        self._close_pipes()
        self.connected = False

    def _close_stdin(self) -> None:
        if self._child is not None and self._child.stdin is not None:
            try:
                self._child.stdin.close()
            except OSError:
                pass  # BrokenPipe: the process is gone already

    def _close_pipes(self) -> None:
        self._close_stdin()
        if self._child is not None and self._child.stdout is not None:
            self._child.stdout.close()
        self._child = None

    # --- Home Assistant ---------------------------------------------------------------------------

    def _discovery(self) -> list[Message]:
        """MQTT discovery documents: one door sensor per door with a switch, one alarm sensor per door."""
        t = self.topics
        device = {"identifiers": [t.node], "name": f"door-bridge {self.bridge_id}", "manufacturer": "door-bridge",
                  "model": "door-bridge", "sw_version": __version__}
        common = {"availability_topic": t.status, "payload_available": ONLINE, "payload_not_available": OFFLINE,
                  "device": device}
        out = []
        for door, view in self._door_states().items():
            part = topic_part(door)
            if view.has_switch:
                out.append(Message(t.discovery(door, "position"), json.dumps({
                    "name": f"{door} door", "unique_id": f"{t.node}_{part}_position", "device_class": "door",
                    "state_topic": t.position(door), "payload_on": "open", "payload_off": "closed", **common}), True))
            out.append(Message(t.discovery(door, "alarm"), json.dumps({
                "name": f"{door} alarm", "unique_id": f"{t.node}_{part}_alarm", "device_class": "problem",
                "state_topic": t.alarm(door), "value_template": "{{ 'ON' if value != 'none' else 'OFF' }}",
                **common}), True))
        return out


def decision_row(note: DecisionNote, reader_door: dict[str, str], identities: bool) -> list[Any]:
    """A decision's summary as summary_rows.FIELDS (and IDENTITY_FIELDS when the site publishes them)."""
    d = note.decision
    row = [note.at.timestamp(), d.reader_id, reader_door.get(d.reader_id), d.decision.value,
           d.reason.value if d.reason else None, d.source.value, d.decided, d.cache_version, d.replay,
           note.latency_ms]
    if identities:
        row += [d.user_id, d.user_name, d.zone_id, d.zone_name]
    return row


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def _line(m: Message) -> str:
    """One line of the pipe to the publisher process: `topic TAB <retain><qos> TAB payload` (JSON
    payloads never hold a raw newline), or `[topic, payload, retain, qos]` as JSON when a name
    holds a tab or a newline (or the topic starts with `[`, or with `{`, which starts a batch of
    summary rows). Not JSON every time: re-escaping a JSON payload doubled the feeder's cost."""
    if m.topic.startswith(("[", "{")) or "\t" in m.topic or "\n" in m.topic or "\n" in m.payload:
        return json.dumps([m.topic, m.payload, m.retain, m.qos], separators=(",", ":")) + "\n"
    return f"{m.topic}\t{1 if m.retain else 0}{m.qos}\t{m.payload}\n"
