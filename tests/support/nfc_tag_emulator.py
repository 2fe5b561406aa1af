"""Emulate a FeliCa (Type 3) tag or an ISO 14443 A card over nfcpy's `udp` driver, in a process.

The test starts this program, points the real `NfcInput` at `udp:127.0.0.1:<port>`, and reads our
stdout to follow along. Each presentation lasts until the reader has finished reading AND has
presence-checked the tag `--min-polls` times (so "held on the reader" is proven by protocol
traffic, not by a clock), then the tag goes silent (taken away), waits `--gap` seconds and comes
back, `--presentations` times. Lines on stdout: `listening <i>`, `presented <i>` (`activated again
<i>` if the reader re-activates a tag that never left), `removed <i>`, `done`.

Usage:
  python tests/support/nfc_tag_emulator.py --port 40001 --uid 03FEFFE011223344 --uri https://…
  python tests/support/nfc_tag_emulator.py --port 40001 --uid 0102030405060708 --sys 0003   # no NDEF
  python tests/support/nfc_tag_emulator.py --port 40001 --tech 106A --uid 05A1B2C3D4E5F6    # Type A UID
"""

from __future__ import annotations

import argparse
import logging
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import ndef
import nfc
import nfc.clf
import nfc.clf.udp
import nfc.tag.tt3

NDEF_SYSTEM_CODE = "12FC"
NDEF_READ_SERVICE = 0x000B
NDEF_RW_SERVICE = 0x0009
# PMm with IC code 0x01 (a plain FeliCa Standard chip), so nfcpy activates it without asking for
# Lite/Plug-specific commands the emulation does not answer.
DEFAULT_PMM = "0101000000FFFF00"


def _bind_loopback_only(self: Any, time_to_return: float) -> bool:
    # nfcpy's listener binds 0.0.0.0; test servers here bind loopback only.
    try:
        self.socket.bind(("127.0.0.1", self.addr[1]))
        return True
    except OSError:
        return False



def tt3_memory(message: bytes) -> bytearray:
    """Attribute block + NDEF data blocks, laid out as the NFC Forum Type 3 Tag spec says."""
    blocks = max(1, (len(message) + 15) // 16)
    attribute = bytearray(16)
    attribute[0] = 0x10  # mapping version 1.0
    attribute[1] = 4  # blocks per read
    attribute[2] = 1  # blocks per write
    attribute[3:5] = struct.pack(">H", blocks)
    attribute[9] = 0x00  # write flag: done
    attribute[10] = 0x00  # read-only
    attribute[11:14] = struct.pack(">I", len(message))[1:]
    attribute[14:16] = struct.pack(">H", sum(attribute[:14]))
    return attribute + bytearray(message) + bytearray(blocks * 16 - len(message))


class Presentation:
    """One tap: the tag is "taken away" once activated and presence-checked `min_polls` times."""

    def __init__(self, index: int, min_polls: int) -> None:
        self.index = index
        self.min_polls = min_polls
        self.activations = 0
        self.polls_answered = 0

    def activated(self) -> None:
        self.activations += 1
        say(f"presented {self.index}" if self.activations == 1 else f"activated again {self.index}")

    def polled(self) -> None:
        self.polls_answered += 1

    def taken_away(self) -> bool:
        return self.activations > 0 and self.polls_answered >= self.min_polls


def say(line: str) -> None:
    print(line, flush=True)


def hold_felica(clf: nfc.ContactlessFrontend, tap: Presentation, sensf_res: bytearray,
                memory: bytearray | None) -> None:
    """Answer as a Type 3 tag with nfcpy's own `Type3TagEmulation` until taken away."""

    def read_block(block_number: int, rb: bool, re: bool) -> bytearray | None:
        assert memory is not None
        if block_number * 16 < len(memory):
            return memory[block_number * 16:(block_number + 1) * 16]
        return None

    def counting(answer: Callable[[bytearray], bytearray]) -> Callable[[bytearray], bytearray]:
        def counted(cmd_data: bytearray) -> bytearray:
            tap.polled()
            return answer(cmd_data)

        return counted

    def on_startup(target: nfc.clf.LocalTarget) -> nfc.clf.LocalTarget:
        target.brty = "212F"
        target.sensf_res = sensf_res
        return target

    def on_connect(tag: nfc.tag.tt3.Type3TagEmulation) -> bool:
        tap.activated()
        if memory is not None:
            tag.add_service(NDEF_READ_SERVICE, read_block, None)
            tag.add_service(NDEF_RW_SERVICE, read_block, None)
        # nfcpy's presence check is a Polling (Type3Tag) or a Request Response (FeliCa
        # Standard); count both, answered, as "still held on the reader".
        for name in ("polling", "request_response"):
            setattr(tag, name, counting(getattr(tag, name)))
        return True

    # A real card left on the reader is found again if the reader drops the field and re-polls;
    # so until the hold is over, keep answering (a second activation is then a reader bug that the
    # test sees as a second scan).
    while not tap.taken_away():
        clf.connect(card={"on-startup": on_startup, "on-connect": on_connect}, terminate=tap.taken_away)


def hold_type_a(clf: nfc.ContactlessFrontend, tap: Presentation, uid: bytearray) -> None:
    """Answer as a plain ISO 14443 A Type 2 card (UID, no NDEF) until taken away.

    nfcpy has no Type 2 emulation class, so the few commands a reader sends are answered here:
    READ (30h) returns 16 bytes; anything else gets silence, as a real tag gives.
    """
    target = nfc.clf.LocalTarget("106A")
    target.sens_res = bytearray.fromhex("4400" if len(uid) == 7 else "0400")
    target.sdd_res = uid
    target.sel_res = bytearray([0x00])  # Type 2 Tag platform
    memory = bytearray(uid[:3]) + bytearray(13) + bytearray(48)  # capability container zero: no NDEF
    while not tap.taken_away():
        activated = clf.listen(target, 1.0)
        if activated is None:
            continue
        tap.activated()
        command: bytearray | None = activated.tt2_cmd
        while not tap.taken_away():
            response = None
            if command and len(command) == 2 and command[0] == 0x30:
                start = command[1] * 4 % len(memory)
                response = (memory + memory)[start:start + 16]
                if command[1] == 0:
                    tap.polled()  # nfcpy's Type 2 presence check reads page 0
            try:
                command = clf.exchange(response, timeout=0.5)
            except nfc.clf.TimeoutError:
                command = None
            except nfc.clf.CommunicationError:  # RFOFF: the reader dropped the field
                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tech", choices=["212F", "106A"], default="212F", help="FeliCa or ISO 14443 A")
    parser.add_argument("--uid", required=True, help="the card's UID in hex: 8-byte FeliCa IDm, 4/7-byte NFCID1")
    parser.add_argument("--pmm", default=DEFAULT_PMM, help="FeliCa only")
    parser.add_argument("--sys", default=NDEF_SYSTEM_CODE, help="FeliCa system code; 12FC = NFC Forum NDEF")
    content = parser.add_mutually_exclusive_group()
    content.add_argument("--uri", help="NDEF URI record to carry (FeliCa only)")
    content.add_argument("--text", help="NDEF text record to carry (FeliCa only)")
    content.add_argument("--ndef-hex", help="raw NDEF message bytes in hex, valid or not (FeliCa only)")
    parser.add_argument("--presentations", type=int, default=1)
    parser.add_argument("--min-polls", type=int, default=3, help="presence checks to answer while held")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds away between presentations")
    parser.add_argument("--verbose", action="store_true", help="nfcpy debug log on stderr")
    args = parser.parse_args(argv)
    nfc.clf.udp.Device._bind_socket = _bind_loopback_only  # here, not on import: tests import us too
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        logging.getLogger("nfc").setLevel(logging.DEBUG)

    message: bytes | None = None
    if args.uri is not None:
        message = b"".join(ndef.message_encoder([ndef.UriRecord(args.uri)]))
    elif args.text is not None:
        message = b"".join(ndef.message_encoder([ndef.TextRecord(args.text)]))
    elif args.ndef_hex is not None:
        message = bytes.fromhex(args.ndef_hex)
    if message is not None and (args.tech != "212F" or args.sys.upper() != NDEF_SYSTEM_CODE):
        parser.error("NDEF content needs --tech 212F with system code 12FC")
    memory = tt3_memory(message) if message is not None else None
    uid = bytearray.fromhex(args.uid)

    for index in range(1, args.presentations + 1):
        tap = Presentation(index, args.min_polls)
        clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{args.port}")
        try:
            say(f"listening {index}")
            if args.tech == "212F":
                hold_felica(clf, tap, bytearray([0x01]) + uid + bytearray.fromhex(args.pmm + args.sys), memory)
            else:
                hold_type_a(clf, tap, uid)
        finally:
            clf.close()  # the socket closes: the reader's next presence check gets no answer
        say(f"removed {index}")
        if index < args.presentations:
            time.sleep(args.gap)
    say("done")
    return 0


def free_udp_port() -> int:
    """A free loopback UDP port that nfcpy can use (it breaks on ports with a service name)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            socket.getservbyport(port, "udp")
        except OSError:
            return int(port)


if __name__ == "__main__":
    sys.exit(main())
