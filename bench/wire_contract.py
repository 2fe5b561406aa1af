"""One run of each upstream through a real `door-bridge run` process, printing what the loopback
central recorded (method, path, body keys, `source`) and the daemon's journal lines.

    .venv/bin/python bench/wire_contract.py

Each run: the real daemon (tests/support/service.py: a subprocess with a pty serial scanner, as systemd
would start it), one fake upstream from tests/support/fakes/ on loopback, scans typed into the pty.
Frontelio runs online-first; SNA and Digital ID run in the default local-first mode (SNA is asked
for every card there, Digital ID tokens always go online).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.builders import make_jwt, user_claims  # noqa: E402
from tests.support.fakes.digital_id import FakeDigitalId, employee  # noqa: E402
from tests.support.fakes.frontelio import API_KEY, FakeFrontelio, Holder  # noqa: E402
from tests.support.fakes.sna import FakeSna  # noqa: E402
from tests.support.service import Service  # noqa: E402

CARD = "6B06C2A25E99C68EDCBE"
JOURNAL_EVENTS = ("decision", "upstream_", "started")


def _run(name: str, fake, tail: str, scans: list[str], mode: str | None = None) -> None:
    fake.server.start()
    with tempfile.TemporaryDirectory(prefix=f"wire-{name}-") as tmp:
        svc = Service(Path(tmp))
        text = svc.config.read_text() + tail.replace("@URL@", fake.server.url).replace("@TMP@", tmp)
        if mode:
            text = text.replace("[bridge]\n", f'[bridge]\nmode = "{mode}"\n', 1)
        svc.config.write_text(text)
        try:
            svc.start()
            for i, scan in enumerate(scans, 1):
                svc.pty.type(scan)
                svc.wait_log("decision ", count=i)
            time.sleep(0.3)
            journal = [line for line in svc.output().splitlines()
                       if any(f" {event}" in line for event in JOURNAL_EVENTS)]
        finally:
            svc.close()
            fake.server.stop()
    print(f"=== {name} ({mode or 'local-first'}) ===")
    print("requests the fake recorded:")
    for r in fake.server.requests:
        body = r.json if isinstance(r.json, dict) else {}
        print(f"  {r.method} {r.path}  body keys={sorted(body)}  source={body.get('source', '-')}"
              + (f"  type={body['type']}" if "type" in body else ""))
    print("journal:")
    for line in journal:
        print("  " + line.split("] ", 1)[-1].strip() if "] " in line else "  " + line)
    print()


def main() -> None:
    frontelio = FakeFrontelio()
    frontelio.credentials[CARD] = Holder("user_abc", "Layla Hassan", "Back of House — Stockroom")
    frontelio.credentials["04A22C1A7B3F80"] = Holder("user_def", "Omar Said", "Stockroom", "BANNED")
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".key") as f:
        f.write(API_KEY + "\n")
    os.chmod(f.name, 0o600)
    jwt = make_jwt(user_claims())
    _run("frontelio", frontelio,
         f'[upstream.frontelio]\nbase_url = "@URL@"\napi_key_file = "{f.name}"\n',
         [CARD, "04A22C1A7B3F80", jwt, "vis_CreatedAfterTheSync0002"], mode="online-first")
    os.unlink(f.name)

    sna = FakeSna()
    sna.cards[CARD] = {"number": CARD, "name": "Guest Card", "devices": ["SN-0042"]}
    _run("sna", sna, '[upstream.sna]\nbase_url = "@URL@"\ndevice_sn = "SN-0042"\n', [CARD, "ABCDEF0123"])

    digital_id = FakeDigitalId()
    digital_id.tokens["tok_valid_123"] = ("valid", employee(123, "John Smith"))
    digital_id.tokens["tok_revoked_9"] = ("revoked", employee(9, "Jane Doe"))
    _run("digital_id", digital_id, '[upstream.digital_id]\nbase_url = "@URL@"\nlocation = "Main_Entrance"\n',
         ["https://id.example/verify.php?token=tok_valid_123", "https://id.example/verify.php?token=tok_revoked_9"])


if __name__ == "__main__":
    main()
