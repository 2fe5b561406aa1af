"""OSDP readers for the tests: libosdp's own `PeripheralDevice`s on the master side of a pty.

The test opens a pseudo-terminal pair, points the daemon's OSDP reader at the slave path (the
daemon opens it by path with pyserial, as it opens a USB-RS485 adapter) and starts this program
with the master fd. Several PDs share the line as on an RS-485 bus: every byte from the CP reaches
every PD, each answers only its own address. Killing this process is pulling the PDs' power; the
test keeps the master open, so the bus stays and a new emulator on the same fd is the PDs coming
back.

Commands on stdin (one JSON object per line):
  {"pd": 101, "card": "<hex>", "bits": 26}       a card read (osdp_RAW, Wiegand format)
  {"pd": 101, "keys": "1234#"}                    key presses (osdp_KEYPAD; '#' sent as 0x0D, '*' as 0x7F)
  {"pd": 101, "status": [1, 0]}                   local status: tamper, power (osdp_LSTATR)
Lines on stdout (JSON): {"ready": true}, {"pd": 101, "secure": true} when a session is up,
{"pd": 101, "command": {...}, "at": t} for each command the PD receives (LED, BUZ, KEYSET with its
key in hex: this is the test's own throwaway key), {"pd": 101, "sent": "card", "at": t}.

--pd ADDRESS:KEY[:clear][:no-repeat]   KEY is 32 hex digits or "none" (factory-fresh: install
mode, SCBK-D). "clear" makes the PD announce no Secure Channel in its capabilities, as a reader
configured without SC does: libosdp's PD always announces it, so its PDCAP reply is rewritten on
the way out (capability 9, communication security, compliance 0; CRC recomputed).

A command repeated by the CP (the same frame again: libosdp's CP resends it when a reply is later
than 200 ms) is answered with the PD's last reply, as OSDP asks of a PD, and not handed to
libosdp's PD, which would process it again: inside a Secure Channel session that fails the MAC
check, drops the session and loses a card read that was in the late reply (docs/osdp.md, "One
late reply"). Each such answer is a {"pd": 101, "repeated": true, "at": t} line. "no-repeat"
leaves libosdp's PD as it is, for the tests and the bench that show what that costs.
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import errno
import json
import os
import select
import sys
import threading
import time
from typing import Any

import osdp

CAP_COMMUNICATION_SECURITY = 9
REPLY_PDCAP = 0x46
SOM, MIN_FRAME, MAX_FRAME = 0x53, 7, 1440
# An incomplete frame is held back this long at most (the CP writes a frame at once).
HOLD_S = 0.1
_out_lock = threading.Lock()


def say(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class BusTap(osdp.Channel):
    """One PD's view of the shared line: its own copy of every byte, writes to the line."""

    def __init__(self, fd: int, address: int, clear_text: bool, repeat: bool) -> None:
        super().__init__()
        self.fd = fd
        self.address = address
        self.clear_text = clear_text
        self.repeat = repeat
        self.rx = bytearray()
        self.lock = threading.Lock()
        self.pending = bytearray()  # the start of a frame not complete yet (repeat mode)
        self.pending_since = 0.0
        self.last_command = b""
        self.last_reply = b""
        self.answered = False  # the PD has written its reply to last_command

    def deliver(self, data: bytes) -> None:
        passed = self._without_repeats(data) if self.repeat else data
        with self.lock:
            self.rx += passed

    def _without_repeats(self, data: bytes) -> bytes:
        """Whole frames for this address pass once; the same frame again gets the last reply."""
        buf, out = self.pending, bytearray()
        if buf and time.monotonic() - self.pending_since > HOLD_S:
            out += buf  # a frame start that never completed: noise, libosdp's to skip
            buf.clear()
        was_holding = bool(buf)
        buf += data
        while buf:
            start = buf.find(SOM)
            start = len(buf) if start < 0 else start
            out += buf[:start]
            del buf[:start]
            if len(buf) < 4:
                break
            length = buf[2] | buf[3] << 8
            if not MIN_FRAME <= length <= MAX_FRAME:
                out += buf[:1]
                del buf[:1]
                continue
            if len(buf) < length:
                break
            frame = bytes(buf[:length])
            del buf[:length]
            if frame[1] == self.address and frame == self.last_command:
                # Answered already: the same reply again. Not yet (both copies came in while the
                # PD was held up): its answer to the first copy will answer this one too.
                if self.answered:
                    with contextlib.suppress(OSError):
                        os.write(self.fd, self.last_reply)
                say({"pd": self.address, "repeated": True, "answered": self.answered, "at": time.monotonic()})
                continue
            if frame[1] == self.address:
                self.last_command, self.answered = frame, False
            out += frame
        if buf and not was_holding:
            self.pending_since = time.monotonic()
        return bytes(out)

    def read(self, max_bytes: int) -> bytes:
        with self.lock:
            out = bytes(self.rx[:max_bytes])
            del self.rx[:max_bytes]
        return out

    def write(self, buf: bytes) -> int:
        data = without_secure_channel(bytes(buf)) if self.clear_text else bytes(buf)
        self.last_reply, self.answered = data, True
        try:
            return os.write(self.fd, data) and len(buf)
        except OSError:
            return 0

    def flush(self) -> None:
        pass


def without_secure_channel(frame: bytes) -> bytes:
    """A clear PDCAP reply with capability 9 set to compliance 0 (see the module docstring)."""
    start = frame.find(0x53)
    if start < 0 or len(frame) < start + 8:
        return frame
    body = bytearray(frame[start:])
    control = body[4]
    if control & 0x08 or body[5] != REPLY_PDCAP:
        return frame
    crc = bool(control & 0x04)
    end = len(body) - (2 if crc else 1)
    for i in range(6, end - 2, 3):
        if body[i] == CAP_COMMUNICATION_SECURITY:
            body[i + 1] = 0
    if crc:
        value = binascii.crc_hqx(bytes(body[:end]), 0x1D0F)
        body[end:end + 2] = value.to_bytes(2, "little")
    else:
        body[end] = (-sum(body[:end])) & 0xFF
    return frame[:start] + bytes(body)


def make_pd(address: int, key: bytes | None, tap: BusTap) -> osdp.PeripheralDevice:
    caps = osdp.PDCapabilities([(osdp.Capability.LEDControl, 1, 1), (osdp.Capability.AudibleControl, 1, 1),
                                (osdp.Capability.CardDataFormat, 1, 0), (osdp.Capability.Readers, 1, 1)])
    info = osdp.PDInfo(address, tap, scbk=key, flags=[] if key else [osdp.LibFlag.InstallMode],
                       id=osdp.PdId(2, 7, 0x00A0B1, 0x1234 + address, 0x010203))

    def on_command(command: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        shown = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in command.items()}
        say({"pd": address, "command": shown, "at": time.monotonic()})
        return 0, None

    return osdp.PeripheralDevice(info, caps, log_level=int(os.environ.get("OSDP_PD_LOG", osdp.LogLevel.Emergency)), command_handler=on_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fd", type=int, required=True, help="the pty master, inherited")
    parser.add_argument("--pd", action="append", required=True, help="ADDRESS:KEY[:clear][:no-repeat]")
    args = parser.parse_args(argv)
    os.set_blocking(args.fd, False)
    pds: dict[int, osdp.PeripheralDevice] = {}
    taps: list[BusTap] = []
    for spec in args.pd:
        address_text, key_text, *rest = spec.split(":")
        tap = BusTap(args.fd, int(address_text), clear_text="clear" in rest, repeat="no-repeat" not in rest)
        taps.append(tap)
        pds[int(address_text)] = make_pd(int(address_text), None if key_text == "none" else bytes.fromhex(key_text), tap)
    for pd in pds.values():
        pd.start()

    def pump() -> None:
        while True:
            ready, _, _ = select.select([args.fd], [], [], 0.01)
            if not ready:
                continue
            try:
                data = os.read(args.fd, 4096)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:  # nobody has the slave open (yet, or between two daemons)
                    time.sleep(0.05)
                    continue
                return
            for tap in taps:
                tap.deliver(data)

    threading.Thread(target=pump, daemon=True).start()

    def watch_sessions() -> None:
        secure = {a: False for a in pds}
        while True:
            for address, pd in pds.items():
                now = bool(pd.is_sc_active())
                if now != secure[address]:
                    secure[address] = now
                    say({"pd": address, "secure": now})
            time.sleep(0.05)

    threading.Thread(target=watch_sessions, daemon=True).start()
    say({"ready": True})
    for line in sys.stdin:
        if not line.strip():
            continue
        order = json.loads(line)
        pd = pds[order["pd"]]
        if "card" in order:
            event = {"event": osdp.Event.CardRead, "reader_no": 0, "format": osdp.CardFormat.Wiegand,
                     "direction": 0, "length": order["bits"], "data": bytes.fromhex(order["card"])}
            kind = "card"
        elif "keys" in order:
            data = bytes({"#": 0x0D, "*": 0x7F}.get(c, ord(c)) for c in order["keys"])
            event, kind = {"event": osdp.Event.KeyPress, "reader_no": 0, "data": data}, "keys"
        else:
            event = {"event": osdp.Event.Status, "type": osdp.StatusReportType.Local, "report": bytes(order["status"])}
            kind = "status"
        at = time.monotonic()
        pd.submit_event(event)
        say({"pd": order["pd"], "sent": kind, "at": at})
    for pd in pds.values():
        pd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
