"""Running door-bridge's command line in a child process, as an operator does, and a config for it.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from bridge.config import load
from bridge.inputs.base import Scan
from bridge.service.daemon import Daemon
from verifier.types import Source

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def cli_config(tmp_path: Path, public_key: str, signing: Path | None = None) -> Path:
    path = tmp_path / "door.toml"
    lines = ["[bridge]", f'state_dir = "{tmp_path / "state"}"', "[cache]", f'public_key = "{public_key}"']
    if signing:
        lines.append(f'signing_key_file = "{signing}"')
    lines += ["[gpio]", 'pin_factory = "mock"', "[doors.main]", "relay_pin = 17", "pulse_s = 0.1"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def decide_once(config_path: Path, text: str, hint=None):

    cfg = load(config_path)
    from gpiozero.pins.mock import MockFactory

    daemon = Daemon(cfg, pin_factory=MockFactory(), clock=lambda: datetime.now(timezone.utc),
                    inputs=[])
    await daemon.start()
    try:
        daemon.parts.reader_door["FRONT"] = "main"
        return await daemon.pipeline.handle(Scan("FRONT", Source.CARD, text.encode(), hint))
    finally:
        await daemon.stop()

