"""A real mosquitto broker on loopback for the MQTT tests, and a subscriber that records what it hears.

mosquitto is the Debian package (`.ci/run` installs it). Without it the tests skip, except under
CI=true, where a missing broker is a failure (a skip would hide that nothing was tested).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion


def require_mosquitto() -> str:
    path = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class CertAuthority:
    """A CA and a server certificate for 127.0.0.1, generated at test time with cryptography."""

    dir: Path
    ca_file: Path = field(init=False)
    cert_file: Path = field(init=False)
    key_file: Path = field(init=False)

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "door-bridge test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
              .not_valid_after(now + dt.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.dir / "ca.pem"
        self.cert_file = self.dir / "server.pem"
        self.key_file = self.dir / "server.key"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))


class Broker:
    """mosquitto on 127.0.0.1:<port>, verbose log to a file (so a test can see every SUBSCRIBE).

    `verbose=False` logs errors and warnings only. bench/load.py's broker stands for another
    machine: at `log_type all` it wrote four lines a message (PUBLISH and PUBACK, in and out) to
    the file system the daemon's audit file is fsync'd on, and ext4's ordered journal commits
    those blocks with every fsync."""

    def __init__(self, dir: Path, *, tls: CertAuthority | None = None, users: dict[str, str] | None = None,
                 verbose: bool = True) -> None:
        self.binary = require_mosquitto()
        self.dir = dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = dir / "mosquitto.log"
        self.conf = dir / "mosquitto.conf"
        levels = ["log_type all"] if verbose else ["log_type error", "log_type warning"]
        lines = [f"listener {self.port} 127.0.0.1", f"log_dest file {self.log}", *levels,
                 "persistence false", "user root" if os.geteuid() == 0 else ""]
        if users:
            pw = dir / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(pw), user, password],
                               check=True, capture_output=True)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"cafile {tls.ca_file}", f"certfile {tls.cert_file}", f"keyfile {tls.key_file}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()[-500:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def pause(self) -> None:
        """SIGSTOP: the connections stay up, nothing is read: a broker that has stopped keeping up."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Listener:
    """A plain paho subscriber to `topic` (at QoS 1, so a message arrives at the QoS it was
    published with) that keeps every message (topic, payload, retained), and its QoS in `qos`."""

    def __init__(self, broker: Broker, topic: str = "#", *, tls: CertAuthority | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.qos: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-listener-{free_port()}")
        if tls is not None:
            self.client.tls_set(ca_certs=str(tls.ca_file))
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("test listener could not subscribe")

    def _on_message(self, client: paho.Client, userdata: object, m: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
            self.qos.append((m.topic, m.qos))

    def on(self, topic: str) -> list[str]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def qos_on(self, topic: str) -> set[int]:
        with self._lock:
            return {q for t, q in self.qos if t == topic}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def publish_retained(broker: Broker, messages: dict[str, str]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-seeder-{free_port()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages.items():
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
