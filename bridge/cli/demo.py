"""`door-bridge demo`: the whole scan → decision → audit → relay path on a laptop.

A temporary state dir, a fresh local signing key, a signed demo bundle, mock GPIO and standard
input as the reader. Nothing is downloaded, no hardware or central is needed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, TextIO

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from bridge.service import logsetup
from bridge.config import from_dict
from bridge.service.daemon import Daemon
from bridge.inputs.console import ConsoleInput
from verifier.bundle import BundleWriter, apply_bundle, public_key_text
from verifier.cache import GrantCache
from verifier.hashing import PinHashing, hash_pin
from verifier.types import AccessDecision

READER = "DEMO-FRONT-DOOR"
RELAY_PIN = 17
PULSE_S = 3.0


@dataclass(frozen=True)
class Try:
    scan: str
    what: str


def build_demo_bundle(now: datetime, signing_key: Ed25519PrivateKey, credential_key: Ed25519PrivateKey) -> tuple[bytes, list[Try]]:
    day = timedelta(days=1)
    pin = PinHashing(os.urandom(16))
    iso = lambda t: t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")  # noqa: E731
    jwk = json.loads(OKPAlgorithm.to_jwk(credential_key.public_key()))
    invite = "vis_DemoVisitorPass0123456789abcdef"
    records = [
        {"type": "zone", "id": "zone_front", "name": "Front door", "readers": [READER], "scheduleAware": False},
        {"type": "user", "id": "user_layla", "name": "Layla Hassan", "active": True},
        {"type": "user", "id": "user_omar", "name": "Omar Said", "active": True},
        {"type": "user", "id": "user_ex", "name": "Former Employee", "active": False},
        {"type": "grant", "id": "grant_1", "userId": "user_layla", "zoneId": "zone_front",
         "startsAt": iso(now - 30 * day), "endsAt": iso(now + 180 * day)},
        {"type": "grant", "id": "grant_2", "userId": "user_omar", "zoneId": "zone_front",
         "startsAt": iso(now - 30 * day), "endsAt": iso(now + 180 * day), "revoked": True},
        {"type": "grant", "id": "grant_3", "userId": "user_ex", "zoneId": "zone_front"},
        {"type": "card", "number": "6B06C2A25E99C68EDCBE", "name": "Layla's card", "userId": "user_layla"},
        {"type": "card", "number": "04A22C1A7B3F80", "name": "Omar's card", "userId": "user_omar"},
        {"type": "card", "number": "0A1B2C3D4E5F", "name": "Guest Card (last week)", "devices": [READER],
         "start_at": iso(now - 9 * day), "end_at": iso(now - 2 * day)},
        {"type": "card", "number": "DEADBEEF01", "name": "Badge", "userId": "user_ex"},
        {"type": "visitor", "inviteCode": invite, "displayName": "ACME Pest Control — Ahmed",
         "zoneIds": ["zone_front"], "validFrom": iso(now - timedelta(hours=1)), "validUntil": iso(now + timedelta(hours=3))},
        {"type": "passcode", "id": "pwd_101", "keyboardPwdHash": hash_pin("4711", pin), "keyboardPwdName": "Guest 101",
         "devices": [READER], "startDate": iso(now - day), "endDate": iso(now + 2 * day)},
        {"type": "key", "kid": "demo-credential-key", "jwk": jwk},
    ]
    writer = BundleWriter(version=1, issued_at=now, not_after=now + 7 * day, pin_hashing=pin)
    writer.add_all(records)
    buf = io.BytesIO()
    writer.finish(signing_key, buf)
    token = jwt.encode({"sub": "user_layla", "name": "Layla Hassan", "iat": int(now.timestamp()),
                        "exp": int((now + day).timestamp())}, credential_key, algorithm="EdDSA",
                       headers={"kid": "demo-credential-key"})
    tries = [
        Try("6B06C2A25E99C68EDCBE", "SNA-style card, valid grant            → GRANT"),
        Try("04A22C1A7B3F80", "card whose grant was revoked           → GRANT_REVOKED"),
        Try("0A1B2C3D4E5F", "guest card from last week              → OUT_OF_DATE_WINDOW"),
        Try("DEADBEEF01", "badge of an inactive employee          → HOLDER_INACTIVE"),
        Try(invite, "Frontelio visitor invite code          → GRANT"),
        Try("4711#", "timed passcode on the keypad           → GRANT"),
        Try(token, "24 h credential JWT (EdDSA)            → GRANT"),
        Try("https://id.example/verify.php?token=abc123XYZ", "Digital ID QR (needs the central)      → UPSTREAM_UNAVAILABLE"),
        Try("FFFF0000AAAA", "unknown card                           → NO_GRANT"),
        Try("hello, door", "anything else                          → MALFORMED_CREDENTIAL"),
    ]
    return buf.getvalue(), tries


def _print_intro(out: TextIO, tries: list[Try], public_key: str, state: Path) -> None:
    out.write("door-bridge demo — simulated GPIO, console reader, standalone signed grants\n")
    out.write(f"  state dir  {state}\n  reader     {READER}   relay GPIO{RELAY_PIN} (mock), pulse {PULSE_S:.1f} s\n")
    out.write(f"  bundle key {public_key} (generated for this run)\n\n")
    out.write("Type or paste one credential per line (Ctrl-D to end). Try:\n")
    for t in tries:
        shown = t.scan if len(t.scan) <= 60 else t.scan[:28] + "…" + t.scan[-8:]
        out.write(f"  {t.what}\n      {shown}\n")
    jwt_line = next(t.scan for t in tries if t.scan.startswith("eyJ"))
    out.write(f"\n(the full JWT: {jwt_line})\n\n")
    out.flush()


def _printer(out: TextIO) -> Callable[[AccessDecision, float], None]:
    def show(d: AccessDecision, latency_ms: float) -> None:
        who = " @ ".join(x for x in (d.user_name or d.user_id, d.zone_name) if x) or "-"
        reason = d.reason.value if d.reason else "-"
        if d.granted and not d.replay:
            relay = f"relay GPIO{RELAY_PIN} pulsed {PULSE_S:.1f} s"
        elif d.replay:
            relay = "replay: relay not pulsed again"
        else:
            relay = "relay stays locked"
        out.write(f"{d.decision.value:<5}  reason={reason:<22} {who:<40} {relay:<34} {latency_ms:6.2f} ms\n")
        out.flush()
    return show


async def run_demo(stdin=None, out: TextIO = sys.stdout) -> int:
    logsetup.configure("warning")  # the demo prints its own lines; warnings still show on stderr
    with tempfile.TemporaryDirectory(prefix="door-bridge-demo-") as tmp:
        state = Path(tmp)
        now = datetime.now(timezone.utc)
        signing_key, credential_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        bundle, tries = build_demo_bundle(now, signing_key, credential_key)
        public = public_key_text(signing_key.public_key())
        config = from_dict({
            "bridge": {"id": "BRIDGE-DEMO", "state_dir": str(state)},
            "cache": {"public_key": public, "staleness": "deny"},
            "gpio": {"pin_factory": "mock"},
            "doors": {"main": {"relay_pin": RELAY_PIN, "pulse_s": PULSE_S}},
        }, source="<demo>")
        cache = GrantCache(state / "grants.db")
        apply_bundle(cache.conn, io.BytesIO(bundle), signing_key.public_key())
        cache.close()
        _print_intro(out, tries, public, state)
        eof = asyncio.Event()
        console = ConsoleInput(READER, stream=stdin, on_eof=eof.set, accept_pins=True)
        daemon = Daemon(config, inputs=[console])
        daemon.decision_listeners.append(_printer(out))  # the console reader opens the only door
        await daemon.start()
        rows = 0
        try:
            await eof.wait()
            await daemon.quiesce()
            rows = daemon.parts.outbox.count()
        finally:
            await daemon.stop()
        door = daemon.doors["main"]
        out.write(f"\n{daemon.health.stats.decisions} decisions, {daemon.health.stats.grants} granted, {door.pulses} relay pulses, "
                  f"{rows} audit events committed (incl. BOOT); relay released at exit\n")
    return 0
