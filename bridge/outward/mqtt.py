"""MQTT publishing (paho-mqtt 2): door state, alarms and decision summaries for building systems
and Home Assistant. Publish only; off unless `[mqtt] enabled = true`.

Read-only by construction: the client never subscribes, so the broker has nothing to deliver to
it, and a message that arrives anyway is counted, logged and dropped. A retained "open" on some
topic at boot — esp-rfid's best-known failure — therefore cannot reach a relay. (The bridge
protocol's signed remote commands do not exist yet; when they do, they will arrive from the
central, not from a broker.)

Never on the decision path: the daemon's listeners `offer()` a ready message to a bounded queue
(a lock and an append; full → dropped and counted) after the relay has pulsed. One thread of our
own owns the paho client — connect, network loop, publish — so no paho lock is ever taken by a
decision. Reconnection waits a full-jitter exponential back-off, so a building's doors do not all
reconnect in the same second after a broker restart.

Retained: only the bridge's availability (`online`, and the broker's last-will `offline`) and the
Home Assistant discovery documents — descriptions, not states, nothing anyone should act on. Door
position and alarm are not retained: they are sent at every (re)connection and every
`state_interval_s`, so a door is never shown open from a message older than the broker's uptime.
"""

from __future__ import annotations

import json
import queue
import random
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from bridge import __version__
from bridge.config.observe import MqttSection
from verifier.types import AccessDecision

log = structlog.get_logger()

ONLINE, OFFLINE = "online", "offline"
# How long the publisher thread blocks in the network loop before it looks at its queue again:
# the most a summary waits for its turn while the connection is idle.
LOOP_TIMEOUT_S = 0.05
QOS = 1  # at least once: a summary survives a short broker drop while its PUBACK is pending
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def topic_part(name: str) -> str:
    """A config name as one topic level: no `/`, `+`, `#` or spaces (door "Back office" → Back_office)."""
    return _TOPIC_UNSAFE.sub("_", name) or "_"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: str | dict[str, Any]  # a dict is JSON-encoded on the publisher thread, not the decision's
    retain: bool = False


@dataclass(frozen=True, slots=True)
class DoorView:
    """What MQTT may say about a door: position ("open", "closed", "unknown") and alarm ("none", …)."""

    position: str
    alarm: str
    has_switch: bool


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
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=section.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._socket_open = False
        self._ever_connected = False
        self._attempt = 0
        self._next_states = 0.0
        self._last_states: dict[str, DoorView] = {}
        # Read by metrics and status from other threads: plain ints and a bool (GIL-atomic).
        self.connected = False
        self.published = 0
        self.dropped = 0
        self.ignored = 0
        self.last_error: str | None = None

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=section.client_id or f"door-bridge-{bridge_id}",
                             protocol=paho.MQTTv311, clean_session=True)
        client.will_set(self.topics.status, OFFLINE, qos=QOS, retain=True)
        if section.username is not None:
            client.username_pw_set(section.username, password)
        if section.tls:
            client.tls_set(ca_certs=str(section.ca_file) if section.ca_file else None,
                           certfile=str(section.cert_file) if section.cert_file else None,
                           keyfile=str(section.key_file) if section.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_queued_messages_set(section.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client

    # --- what the daemon calls (any thread; never blocks) -----------------------------------------

    def start(self) -> None:
        self._thread.start()

    def offer(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1

    def on_decision(self, d: AccessDecision, latency_ms: float) -> None:
        body: dict[str, Any] = {
            "at": self._clock().isoformat(timespec="milliseconds"), "reader": d.reader_id,
            "door": self._reader_door.get(d.reader_id), "decision": d.decision.value,
            "reason": d.reason.value if d.reason else None, "source": d.source.value,
            "mode": d.decided, "cacheVersion": d.cache_version,
            "replay": d.replay, "latencyMs": round(latency_ms, 2),
        }
        if self.section.publish_identities:
            body.update(userId=d.user_id, userName=d.user_name, zoneId=d.zone_id, zoneName=d.zone_name)
        self.offer(Message(self.topics.decision, body))

    def on_door_event(self, door: str, kind: str) -> None:
        self.offer(Message(self.topics.event,
                           {"at": self._clock().isoformat(timespec="milliseconds"), "door": door, "type": kind}))
        view = self._door_states().get(door)
        if view is not None:
            self._offer_door(door, view)

    def stop(self, timeout_s: float = 2.0) -> None:
        """Say `offline` (retained) while still connected, then close; bounded."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # --- the publisher thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._socket_open and not self._connect():
                continue
            rc = self.client.loop(timeout=LOOP_TIMEOUT_S)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._lost(paho.error_string(rc))
                continue
            if self.connected:
                self._drain()
                if time.monotonic() >= self._next_states:
                    self._send_states()
        self._close()

    def _connect(self) -> bool:
        s = self.section
        try:
            if self._ever_connected or self._attempt:
                self.client.reconnect()
            else:
                self.client.connect(s.host, s.broker_port, keepalive=s.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as e:
            self._lost(f"{type(e).__name__}: {e}"[:200])
            return False
        self._socket_open = True
        return True

    def _lost(self, error: str) -> None:
        """The socket is gone (or never came): wait a jittered, growing while, then try again."""
        was = self.connected or self._attempt == 0
        self._socket_open = self.connected = False
        self.last_error = error
        if was:
            log.warning("mqtt_disconnected", broker=f"{self.section.host}:{self.section.broker_port}", error=error,
                        queued=self._queue.qsize(), effect="decisions unaffected; summaries wait in a bounded queue",
                        check="is the broker running and reachable (TLS CA, credentials)?")
        cap = min(self.section.reconnect_max_s, self.section.reconnect_min_s * 2 ** min(self._attempt, 16))
        self._attempt += 1
        self._stop.wait(random.uniform(self.section.reconnect_min_s / 2, cap))

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            # Bad credentials or not authorised: the broker will close; _run backs off and retries.
            self.last_error = f"broker refused: {reason}"
            log.error("mqtt_refused", broker=f"{self.section.host}:{self.section.broker_port}", reason=str(reason),
                      check="mqtt.username / password file and the broker's ACL for this client")
            return
        self.connected, self._ever_connected, self.last_error = True, True, None
        log.info("mqtt_connected", broker=f"{self.section.host}:{self.section.broker_port}", attempts=self._attempt,
                 tls=self.section.tls)
        self._attempt = 0
        client.publish(self.topics.status, ONLINE, qos=QOS, retain=True)
        if self.section.homeassistant:
            for m in self._discovery():
                client.publish(m.topic, m.payload, qos=QOS, retain=True)
        self._last_states.clear()
        self._next_states = 0.0  # every state again right away: nothing is retained

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connected = False

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # Unreachable while we subscribe to nothing; if a broker delivers anyway, it does nothing.
        self.ignored += 1
        log.warning("mqtt_message_ignored", topic=message.topic[:120],
                    why="door-bridge accepts no command over MQTT")

    def _drain(self) -> None:
        while self.connected:
            try:
                m = self._queue.get_nowait()
            except queue.Empty:
                return
            payload = m.payload if isinstance(m.payload, str) else json.dumps(m.payload, separators=(",", ":"))
            info = self.client.publish(m.topic, payload, qos=QOS, retain=m.retain)
            if info.rc == paho.MQTT_ERR_SUCCESS:
                self.published += 1
            elif info.rc == paho.MQTT_ERR_NO_CONN:
                self.dropped += 1
                return
            else:
                self.dropped += 1  # paho's own in-flight queue is full (broker not acknowledging)

    def _send_states(self) -> None:
        self._next_states = time.monotonic() + self.section.state_interval_s
        for door, view in self._door_states().items():
            self._offer_door(door, view, force=True)
        self._drain()

    def _offer_door(self, door: str, view: DoorView, force: bool = False) -> None:
        last = self._last_states.get(door)
        if view.has_switch and (force or last is None or last.position != view.position):
            self.offer(Message(self.topics.position(door), view.position))
        if force or last is None or last.alarm != view.alarm:
            self.offer(Message(self.topics.alarm(door), view.alarm))
        self._last_states[door] = view

    def _close(self) -> None:
        if self.connected:
            info = self.client.publish(self.topics.status, OFFLINE, qos=QOS, retain=True)
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline:
                if self.client.loop(timeout=LOOP_TIMEOUT_S) != paho.MQTT_ERR_SUCCESS:
                    break
            self.client.disconnect()
            self.client.loop(timeout=LOOP_TIMEOUT_S)
        self.connected = False

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
