"""Emulate an NFC Forum Type 3 (FeliCa) tag over nfcpy's `udp` driver, as a separate process.

The test starts this program, points the real `NfcInput` at `udp:127.0.0.1:<port>`, and reads our
stdout to follow along. Each presentation lasts until the reader has finished reading AND has
presence-checked the tag `--min-polls` times (so "held on the reader" is proven by protocol
traffic, not by a clock), then the tag goes silent (taken away), waits `--gap` seconds and comes
back, `--presentations` times. Lines on stdout: `listening <i>`, `presented <i>` (`activated again
<i>` if the reader re-activates a tag that never left), `removed <i>`,
`done`.

Usage:
  python tests/nfc_tag_emulator.py --port 40001 --idm 03FEFFE011223344 --uri https://…
  python tests/nfc_tag_emulator.py --port 40001 --idm 0102030405060708 --sys 0003   # no NDEF
"""

from __future__ import annotations

import argparse
import logging
import socket
import struct
import sys
import time
from typing import Any, Callable

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


nfc.clf.udp.Device._bind_socket = _bind_loopback_only


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idm", required=True, help="8-byte IDm in hex: the card's UID")
    parser.add_argument("--pmm", default=DEFAULT_PMM)
    parser.add_argument("--sys", default=NDEF_SYSTEM_CODE, help="system code; 12FC = NFC Forum NDEF")
    content = parser.add_mutually_exclusive_group()
    content.add_argument("--uri", help="NDEF URI record to carry")
    content.add_argument("--text", help="NDEF text record to carry")
    parser.add_argument("--presentations", type=int, default=1)
    parser.add_argument("--min-polls", type=int, default=3, help="presence checks to answer while held")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds away between presentations")
    parser.add_argument("--verbose", action="store_true", help="nfcpy debug log on stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
        logging.getLogger("nfc").setLevel(logging.DEBUG)

    records: list[ndef.Record] = []
    if args.uri is not None:
        records = [ndef.UriRecord(args.uri)]
    elif args.text is not None:
        records = [ndef.TextRecord(args.text)]
    memory = tt3_memory(b"".join(ndef.message_encoder(records)) if records else b"")
    has_ndef = bool(records) and args.sys.upper() == NDEF_SYSTEM_CODE

    def say(line: str) -> None:
        print(line, flush=True)

    for index in range(1, args.presentations + 1):
        polls_answered = 0
        connected = False

        def on_startup(target: nfc.clf.LocalTarget) -> nfc.clf.LocalTarget:
            target.brty = "212F"
            target.sensf_res = bytearray([0x01]) + bytearray.fromhex(args.idm + args.pmm + args.sys)
            return target

        def on_connect(tag: nfc.tag.tt3.Type3TagEmulation) -> bool:
            nonlocal connected
            say(f"activated again {index}" if connected else f"presented {index}")
            connected = True
            if has_ndef:
                tag.add_service(NDEF_READ_SERVICE, read_block, None)
                tag.add_service(NDEF_RW_SERVICE, read_block, None)
            # nfcpy's presence check is a Polling (Type3Tag) or a Request Response (FeliCa
            # Standard); count both, answered, as "still held on the reader".
            for name in ("polling", "request_response"):
                setattr(tag, name, counting(getattr(tag, name)))
            return True

        def counting(answer: Callable[[bytearray], bytearray]) -> Callable[[bytearray], bytearray]:
            def counted(cmd_data: bytearray) -> bytearray:
                nonlocal polls_answered
                polls_answered += 1
                return answer(cmd_data)

            return counted

        def read_block(block_number: int, rb: bool, re: bool) -> bytearray | None:
            if block_number * 16 < len(memory):
                return memory[block_number * 16:(block_number + 1) * 16]
            return None

        def taken_away() -> bool:
            return connected and polls_answered >= args.min_polls

        clf = nfc.ContactlessFrontend(f"udp:127.0.0.1:{args.port}")
        try:
            say(f"listening {index}")
            # A real card left on the reader is found again if the reader drops the field and
            # re-polls; so until the hold is over, keep answering (a second activation is then a
            # reader bug the test sees as a second scan).
            while not taken_away():
                clf.connect(card={"on-startup": on_startup, "on-connect": on_connect}, terminate=taken_away)
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
