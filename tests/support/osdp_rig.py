"""The OSDP rig: libosdp's own PeripheralDevice in a second process on the master side of a pty, and
the daemon set up to open the slave by path, as it opens a USB-RS485 adapter.

Shared by the OSDP tests (tests/integration/test_osdp_*.py) and bench/osdp_latency.py. Import the
`bus` fixture into a test module to use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import tty
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.harness import SetClock, Site, make_config, running
from verifier.hashing import PinHashing, hash_pin
from verifier.wiegand_formats import encode, encode_bytes

EMULATOR = Path(__file__).resolve().parent / "osdp_pd_emulator.py"
KEY = "00112233445566778899AABBCCDDEEFF"
OTHER_KEY = "FFEEDDCCBBAA99887766554433221100"
READER = "OSDP-1"
CARD = encode("H10301", 4567, 123)  # granted below
# libosdp gives up on a silent PD after 8 retries (~8 s) and we retry it every few seconds.
DEADLINE_S = 30.0


class Pd:
    """The emulator process: orders on stdin, what the PDs saw on stdout (read on a thread)."""

    def __init__(self, master: int, specs: list[str]) -> None:
        args = [sys.executable, str(EMULATOR), "--fd", str(master)]
        for spec in specs:
            args += ["--pd", spec]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(master,), text=True)
        self.lines: list[dict[str, Any]] = []
        import threading

        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                if os.environ.get("OSDP_PD_LOG"):
                    print("PD:", line.rstrip(), file=sys.stderr)

    def send(self, **order: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(order) + "\n")
        self.proc.stdin.flush()

    def card(self, address: int, frame: tuple[int, ...]) -> None:
        self.send(pd=address, card=encode_bytes(frame).hex(), bits=len(frame))

    def commands(self, address: int, kind: int) -> list[dict[str, Any]]:
        return [line["command"] for line in self.lines if line.get("pd") == address and "command" in line
                and line["command"]["command"] == kind]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def bus() -> Iterator[tuple[int, str]]:
    """The pty pair: the daemon opens its end by path, the emulator gets the master's fd."""
    master, slave = os.openpty()
    tty.setraw(master)
    path = os.ttyname(slave)
    os.close(slave)  # the daemon opens it by path
    try:
        yield master, path
    finally:
        os.close(master)


@contextlib.contextmanager
def emulated(master: int, *specs: str) -> Iterator[Pd]:
    pd = Pd(master, list(specs))
    deadline = time.monotonic() + DEADLINE_S
    while not any(line.get("ready") for line in pd.lines) and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield pd
    finally:
        if pd.proc.poll() is None:
            pd.kill()


def records(pin: PinHashing) -> list[dict[str, Any]]:
    readers = [READER, "OSDP-2"]
    return [
        {"type": "zone", "id": "zone_a", "name": "Lobby", "readers": readers},
        {"type": "user", "id": "u1", "name": "Layla Hassan"},
        {"type": "grant", "id": "g1", "userId": "u1", "zoneId": "zone_a"},
        {"type": "card", "number": "123:4567", "userId": "u1"},
        {"type": "card", "number": "04A22C1A7B3F80", "userId": "u1"},  # a CSN reader's (card_bits = "hex")
        {"type": "passcode", "id": "p1", "keyboardPwdHash": hash_pin("2468", pin), "devices": readers},
    ]


def key_file(tmp_path: Path, name: str, key: str | None) -> Path:
    path = tmp_path / name
    if key is not None:
        path.write_text(key + "\n")
        path.chmod(0o600)
    return path


def config(tmp_path: Path, port: str, readers: list[dict[str, Any]]) -> Any:
    site = Site()
    pin = PinHashing(os.urandom(16))
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    site.install(state, records(pin), pin_hashing=pin)
    full = [{"type": "osdp", "id": READER, "port": port, "address": 101, "retry_s": 1.0, **r} for r in readers]
    return make_config(state, site, full, doors={"main": {"relay_pin": 17, "pulse_s": 0.2}})


@contextlib.asynccontextmanager
async def daemon_on(cfg: Any) -> AsyncIterator[Any]:
    async with running(cfg, clock=SetClock()) as (daemon, factory):
        daemon.factory = factory
        yield daemon


def reader_bus(daemon: Any, reader: str = READER) -> Any:
    return daemon.parts.reader_feedback[reader].bus


def events(daemon: Any, kind: str) -> list[dict[str, Any]]:
    return [e.body for e in daemon.parts.outbox.recent(200) if e.type == kind]


def online(daemon: Any, reader: str = READER) -> bool:
    return bool(daemon.parts.reader_feedback[reader].state.online)
