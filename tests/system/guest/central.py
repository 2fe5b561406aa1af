"""The fake central inside the guest, made as durable as a real one: every event it stores is in
SQLite (synchronous=FULL) before it answers, and its signing key outlives reboots and power cuts.

Run by fake-central.service (venv python, PYTHONPATH=/root/door-bridge). Loopback only.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.fakes.central import FakeCentral
from tests.support.fakes.server import Reply
from tests.support.harness import door_records

HOME = Path("/var/lib/fake-central")
PORT = 8787
READER = "qr1"


def signing_key() -> Ed25519PrivateKey:
    path = HOME / "signing.pem"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (HOME / "public.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(loaded, Ed25519PrivateKey)
    return loaded


def main() -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(HOME / "events.db", check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    db.execute("CREATE TABLE IF NOT EXISTS answers (id TEXT NOT NULL, answer TEXT NOT NULL)")
    now = datetime.now(UTC).replace(microsecond=0)
    fake = FakeCentral(bridge_id="BRIDGE-1", signing_key=signing_key(), issued_at=now - timedelta(minutes=5),
                       not_after=now + timedelta(days=30))
    for event_id, body in db.execute("SELECT id, body FROM events"):
        fake.events[event_id] = json.loads(body)
    fake.publish_full(door_records(READER, now))
    lock = threading.Lock()
    ingest = fake._ingest

    def durable_ingest(request):  # type: ignore[no-untyped-def]
        reply: Reply = ingest(request)
        if reply.status == 200 and isinstance(reply.body, dict):
            with lock:
                db.execute("BEGIN")
                for event_id in reply.body.get("stored", []):
                    db.execute("INSERT INTO events VALUES (?, ?)", (event_id, json.dumps(fake.events[event_id])))
                for kind in ("stored", "duplicates"):
                    db.executemany("INSERT INTO answers VALUES (?, ?)", [(i, kind) for i in reply.body.get(kind, [])])
                db.execute("COMMIT")
        return reply

    fake.server.routes[("POST", "/bridges/BRIDGE-1/events")] = durable_ingest
    fake.server.port = PORT
    fake.server.start()
    print(f"fake central on {fake.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    fake.server.stop()


if __name__ == "__main__":
    sys.exit(main())
