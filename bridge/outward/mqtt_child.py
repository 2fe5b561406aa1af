"""The MQTT connection in a process of its own: `python -m bridge.outward.mqtt_child`.

Why a process: paho-mqtt is pure Python. Every publication (packet building, the socket write,
the PUBACK read back at QoS 1, the select loop around them) runs bytecode under the GIL, and a
thread doing that in the daemon makes the decision worker wait for the GIL each time it comes
back from an fsync or a log write — up to `sys.getswitchinterval()` (5 ms) per wait. bench/load.py
measured it (py-spy --gil: the MQTT thread held the GIL 15 % of the time at 1,000 decisions/s;
p99 2.2-6.5 ms without MQTT, 12.7-34.5 ms with it). Here that work holds another interpreter's
GIL; the daemon only writes ready lines to a pipe, 20 times a second at most.

The child knows nothing of doors: it is handed the connection settings, the availability topic
and the retained discovery documents in its first stdin line (with the password: never argv or
the environment, which `ps` shows), then publishes each later line in order, at the QoS the
daemon chose: one message (`topic TAB <retain><qos> TAB payload`, see `parse_line`), or a run
of decision summaries as rows, whose payloads it writes itself (summary_rows, `decode`). It
answers on stdout with one JSON object per event (`connected`, `disconnected`, `refused`,
`ignored`) and running `counts`; the daemon logs them, so the journal and `status` read as
before. End of stdin (the daemon stopped, or was killed) ends the child: it says
`offline` (retained) while still connected, then disconnects. It ignores
SIGTERM, SIGINT and SIGHUP, which systemd and a terminal send to every process of the service.

Imports only the standard library at module level (and summary_rows, which does too): the daemon
imports `tls_context` from here to check the TLS files at start, without loading paho.
"""

from __future__ import annotations

import json
import queue
import random
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from bridge.outward import summary_rows

if TYPE_CHECKING:
    import paho.mqtt.client as paho
    from paho.mqtt.reasoncodes import ReasonCode

ONLINE, OFFLINE = "online", "offline"
# The availability, its last will and the discovery documents: at least once (the broker
# acknowledges them). Every other message carries its own QoS from the daemon (`parse_line`).
QOS = 1
# How long the session blocks in paho's network loop before it looks at its queue again: the
# most a summary waits for its turn while the connection is idle.
LOOP_TIMEOUT_S = 0.05
# Running counts go to the daemon at most this often (and at every connection change).
COUNTS_EVERY_S = 0.25


# One message for the broker: topic, payload, retain, QoS.
Outgoing = tuple[str, str, bool, int]
_FLAGS: dict[str, tuple[bool, int]] = {"00": (False, 0), "01": (False, 1), "10": (True, 0), "11": (True, 1)}


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class SessionSettings:
    """What the child needs to hold one broker connection (the first stdin line, as JSON)."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    status_topic: str
    queue_size: int
    reconnect_min_s: float
    reconnect_max_s: float
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    # Published (retained) after `online` at every connection: Home Assistant discovery documents.
    on_connect: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "tls": None if self.tls is None else self.tls.__dict__,
                           "on_connect": [list(m) for m in self.on_connect]})

    @classmethod
    def from_json(cls, line: str) -> "SessionSettings":
        raw = json.loads(line)
        tls = raw.pop("tls")
        on_connect = [(str(t), str(p)) for t, p in raw.pop("on_connect")]
        return cls(**raw, tls=None if tls is None else TlsFiles(**tls), on_connect=on_connect)

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """What paho's tls_set() builds (TLS client, certificate and host name checked), built here so
    the daemon can check the files at start: a CA or key that is not PEM raises ssl.SSLError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if files.cert_file is not None:
        context.load_cert_chain(files.cert_file, files.key_file)
    if files.ca_file is not None:
        context.load_verify_locations(files.ca_file)
    else:
        context.load_default_certs()
    return context


class Reporter:
    """One JSON object per line on stdout; two threads report, so the writes are serialised."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, **report: object) -> None:
        with self._lock:
            self._out.write(json.dumps(report, separators=(",", ":")) + "\n")
            self._out.flush()


class Session:
    """The broker connection: connect, network loop, publish — all on one thread, so no paho lock
    is ever contended. Reconnection waits a full-jitter exponential back-off, so a building's doors
    do not all reconnect in the same second after a broker restart."""

    def __init__(self, settings: SessionSettings, report: Reporter) -> None:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        self.settings = settings
        self.report = report
        self.queue: queue.Queue[Outgoing] = queue.Queue(maxsize=settings.queue_size)
        self.stop = threading.Event()
        self.socket_open = False
        self.ever_connected = False
        self.attempt = 0
        self.connected = False
        self.published = 0
        self.dropped = 0
        self._counts_due = 0.0
        self._reported = (0, 0)

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, protocol=paho.MQTTv311,
                             clean_session=True)
        client.will_set(settings.status_topic, OFFLINE, qos=QOS, retain=True)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls is not None:
            client.tls_set_context(tls_context(settings.tls))
        client.max_queued_messages_set(settings.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self.client = client
        self._paho = paho

    def offer(self, message: Outgoing) -> None:
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.dropped += 1

    def run(self) -> None:
        paho = self._paho
        while not self.stop.is_set():
            if not self.socket_open and not self._connect():
                continue
            rc = self.client.loop(timeout=LOOP_TIMEOUT_S)
            if rc != paho.MQTT_ERR_SUCCESS:
                self._lost(paho.error_string(rc))
                continue
            if self.connected:
                self._drain()
            self._report_counts()
        if self.connected:
            self._drain()
        self._close()
        self._report_counts(force=True)

    def _connect(self) -> bool:
        s = self.settings
        try:
            if self.ever_connected or self.attempt:
                self.client.reconnect()
            else:
                self.client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except (OSError, ssl.SSLError, ValueError) as e:
            self._lost(f"{type(e).__name__}: {e}"[:200])
            return False
        self.socket_open = True
        return True

    def _lost(self, error: str) -> None:
        """The socket is gone (or never came): wait a jittered, growing while, then try again."""
        was = self.connected or self.attempt == 0
        self.socket_open = self.connected = False
        if was:
            self.report(event="disconnected", error=error, queued=self.queue.qsize())
        else:
            self.report(event="retrying", error=error)
        self._report_counts(force=True)
        s = self.settings
        cap = min(s.reconnect_max_s, s.reconnect_min_s * 2 ** min(self.attempt, 16))
        self.attempt += 1
        until = time.monotonic() + random.uniform(s.reconnect_min_s / 2, cap)
        while not self.stop.is_set() and (left := until - time.monotonic()) > 0:
            self.stop.wait(min(left, COUNTS_EVERY_S))
            self._report_counts()  # drops while the broker is away show in status as they happen

    def _on_connect(self, client: "paho.Client", userdata: Any, flags: Any, reason: "ReasonCode", props: Any) -> None:
        if reason.is_failure:
            # Bad credentials or not authorised: the broker will close; run() backs off and retries.
            self.report(event="refused", reason=str(reason))
            return
        self.connected, self.ever_connected = True, True
        self.report(event="connected", attempts=self.attempt, tls=self.settings.tls is not None)
        self.attempt = 0
        client.publish(self.settings.status_topic, ONLINE, qos=QOS, retain=True)
        for topic, payload in self.settings.on_connect:
            client.publish(topic, payload, qos=QOS, retain=True)

    def _on_disconnect(self, client: "paho.Client", userdata: Any, flags: Any, reason: "ReasonCode",
                       props: Any) -> None:
        self.connected = False

    def _on_message(self, client: "paho.Client", userdata: Any, message: "paho.MQTTMessage") -> None:
        # Unreachable while we subscribe to nothing; if a broker delivers anyway, it does nothing.
        self.report(event="ignored", topic=message.topic[:120])

    def _drain(self) -> None:
        """Hand paho what waits, corked: the daemon's lines come in batches (20 a second at most)
        and each publish is a send(); uncorked, the kernel made a TCP segment of each (Nagle
        merged a few): at 1,000 summaries a second the broker, and every subscriber behind it,
        woke ~400 times a second for what one segment per batch carries (tests: segs_out)."""
        if self.queue.qsize() < 2:
            self._publish_waiting()
            return
        sock = self.client.socket()
        corked = _cork(sock, True)
        try:
            self._publish_waiting()
        finally:
            if corked:
                _cork(sock, False)  # uncorking sends what the kernel holds, now

    def _publish_waiting(self) -> None:
        paho = self._paho
        while self.connected:
            if self.client.want_write():
                # The socket took less than paho had: the broker reads slower than we publish.
                # The rest waits in the bounded queue (full: dropped and counted), not in paho's
                # packet list, which has no bound for QoS 0.
                return
            try:
                topic, payload, retain, qos = self.queue.get_nowait()
            except queue.Empty:
                return
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1  # paho's own in-flight queue is full (broker not acknowledging)
                continue
            # Anything else leaves a QoS 1 message in paho's in-flight store, sent again at the
            # next connection (NO_CONN, CONN_LOST): handed over, not lost. A QoS 0 message in the
            # socket's buffer when the connection drops is lost, as QoS 0 allows.
            self.published += 1
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return  # the connection is going; loop() will say so

    def _report_counts(self, force: bool = False) -> None:
        now = time.monotonic()
        counts = (self.published, self.dropped)
        if counts != self._reported and (force or now >= self._counts_due):
            self._reported, self._counts_due = counts, now + COUNTS_EVERY_S
            self.report(counts={"published": counts[0], "dropped": counts[1]})

    def _close(self) -> None:
        paho = self._paho
        if self.connected:
            info = self.client.publish(self.settings.status_topic, OFFLINE, qos=QOS, retain=True)
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline:
                if self.client.loop(timeout=LOOP_TIMEOUT_S) != paho.MQTT_ERR_SUCCESS:
                    break
            self.client.disconnect()
            self.client.loop(timeout=LOOP_TIMEOUT_S)
        self.connected = False


def _cork(sock: Any, on: bool) -> bool:
    """TCP_CORK (Linux): hold partial segments until uncorked. False where it cannot be set (no
    socket, another OS, a socket type without it): publishing goes on uncorked."""
    option = getattr(socket, "TCP_CORK", None)
    if sock is None or option is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1 if on else 0)
    except (OSError, ValueError, AttributeError):
        return False
    return True


def parse_line(line: str) -> Outgoing | None:
    """`topic TAB <retain 0|1><qos 0|1> TAB payload`, or `[topic, payload, retain, qos]` (JSON)
    for names with a tab."""
    line = line.rstrip("\n")
    if line.startswith("["):
        try:
            topic, payload, retain, qos = json.loads(line)
        except (ValueError, TypeError):
            return None
        if qos not in (0, 1) or isinstance(qos, bool):
            return None
        return str(topic), str(payload), bool(retain), qos
    parts = line.split("\t", 2)
    if len(parts) != 3 or parts[1] not in _FLAGS:
        return None
    retain, qos = _FLAGS[parts[1]]
    return parts[0], parts[2], retain, qos


def decode(line: str) -> tuple[list[Outgoing], int]:
    """One pipe line → (its messages, how many it held that could not be read): a batch of
    summary rows (a JSON object: summary_rows) or one message (`parse_line`)."""
    if line.startswith("{"):
        try:
            topic, qos, payloads, bad = summary_rows.expand(line)
        except ValueError:
            return [], 1
        return [(topic, p, False, qos) for p in payloads], bad
    message = parse_line(line)
    return ([], 1) if message is None else ([message], 0)


def read_messages(session: Session, lines: IO[bytes]) -> None:
    """The daemon's lines, in order, into the session's bounded queue; end of input ends the session.
    Bytes split on LF only: text mode would also split on a CR inside a name."""
    for raw in lines:
        messages, unreadable = decode(raw.decode("utf-8", "replace"))
        session.dropped += unreadable  # not ours: nothing the daemon writes looks like this
        for message in messages:
            session.offer(message)
    session.stop.set()


def main() -> int:
    # systemd stops a unit by signalling every process of its cgroup, and Ctrl-C reaches the whole
    # process group: the daemon decides when this ends (end of stdin), so `offline` is said and
    # nothing is logged as a crash at every stop. A hung child still meets systemd's SIGKILL.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    settings = SessionSettings.from_json(stdin.readline().decode())
    session = Session(settings, Reporter(sys.stdout))
    reader = threading.Thread(target=read_messages, args=(session, stdin), name="mqtt-input", daemon=True)
    reader.start()
    session.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
