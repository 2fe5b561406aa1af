"""The pure parts of the OSDP reader: what a PD's bytes mean, and what to tell a technician.

No libosdp, no serial port, no clock: values in, values out, so each rule is tested on its own.

- `ReplyWatch` reads the PD-to-CP frames that pass on the bus (headers only: start of message,
  address, length, control, the security block type, the reply code) to know which PD answered
  what. libosdp decides and checks everything (CRC, MAC, decryption); this only lets a refusal
  be explained: "no answer", "clear text only" or "wrong key" need to know how far the PD got.
- `diagnose` turns that into one problem and what to check.
- `led_pattern`/`buzzer_pattern` convert the door's GPIO feedback patterns (seconds) into OSDP's
  100 ms units, so an OSDP reader blinks and beeps like the GPIO LED and buzzer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.door.feedback import Blink

SOM = 0x53
REPLY_ADDRESS_BIT = 0x80
# Reply codes (OSDP v2.2, table 3) that tell how far a PD got with the CP.
REPLY_ACK = 0x40
REPLY_NAK = 0x41
REPLY_PDID = 0x45
REPLY_PDCAP = 0x46
REPLY_CCRYPT = 0x76
REPLY_RMAC_I = 0x78
# A reply frame: SOM, address, length (2, little-endian), control, [security block], code, ... ;
# the length counts the whole frame. Longer claims are noise.
MAX_FRAME = 1440
_MIN_FRAME = 7


@dataclass
class PdReplies:
    """What one address answered since the last reset (one attempt to bring it online)."""

    codes: set[int]
    frames: int = 0
    nak_codes: set[int] | None = None


class ReplyWatch:
    """PD-to-CP frame headers → reply codes per address. Total: any bytes are accepted, noise
    is skipped by resynchronising on the next start-of-message byte; memory stays bounded."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self.replies: dict[int, PdReplies] = {}
        self.noise_bytes = 0

    def reset(self, address: int) -> None:
        self.replies.pop(address, None)

    def seen(self, address: int) -> PdReplies:
        return self.replies.get(address) or PdReplies(set())

    def feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            start = buf.find(SOM)
            if start < 0:
                self.noise_bytes += len(buf)
                buf.clear()
                return
            if start:
                self.noise_bytes += start
                del buf[:start]
            if len(buf) < 5:
                return
            length = buf[2] | buf[3] << 8
            if not _MIN_FRAME <= length <= MAX_FRAME:
                self.noise_bytes += 1
                del buf[:1]
                continue
            if len(buf) < length:
                if len(buf) > MAX_FRAME:  # cannot happen with the check above; a guard for memory
                    buf.clear()
                return
            frame = bytes(buf[:length])
            del buf[:length]
            self._frame(frame)

    def _frame(self, frame: bytes) -> None:
        address = frame[1]
        if not address & REPLY_ADDRESS_BIT:
            return  # a command from the CP (ours) echoed or seen on the bus
        address &= 0x7F
        control = frame[4]
        offset = 5
        if control & 0x08:  # security control block present
            if len(frame) < 6:
                return
            offset += frame[5]
        if offset >= len(frame):
            return
        code = frame[offset]
        seen = self.replies.setdefault(address, PdReplies(set()))
        seen.codes.add(code)
        seen.frames += 1
        if code == REPLY_NAK and offset + 1 < len(frame):
            if seen.nak_codes is None:
                seen.nak_codes = set()
            seen.nak_codes.add(frame[offset + 1])


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a PD is not online, for the journal and `status`. Never carries key material."""

    kind: str  # no_answer | clear_text_only | wrong_key | handshake_failed | secure_channel_refused | protocol_error
    text: str
    check: str


def diagnose(seen: PdReplies, sc_capable: bool | None, *, install_mode: bool, key_source: str,
             key_worked: bool = False) -> Problem:
    """How far the PD got → the problem. `sc_capable` is from its PDCAP (None: not known);
    `key_worked`: a session on this key was up with this PD a moment ago, so a failed handshake
    says more about the line than about the key."""
    if not seen.codes:
        return Problem("no_answer", "the PD does not answer",
                       "RS-485 wiring (A/B swapped?), termination at both ends, common ground, the PD's power, "
                       "its address and baud rate (they must match this reader's address and the bus baudrate)")
    if (REPLY_CCRYPT in seen.codes or REPLY_RMAC_I in seen.codes) and key_worked:
        return Problem("handshake_failed", "the Secure Channel handshake failed with the key that worked "
                       "with this PD a moment ago (a reply came late or garbled)",
                       "noise on the RS-485 line (termination, cable, common ground), a slow PD; if the PD was "
                       "reset to factory defaults or replaced, its key (" + key_source + ")")
    if REPLY_CCRYPT in seen.codes or REPLY_RMAC_I in seen.codes:
        if install_mode:
            return Problem("wrong_key", "the PD refused both the new key and the default install key (SCBK-D)",
                           "the PD already has another key: reset it to factory defaults (install mode) "
                           "or put its key in " + key_source)
        return Problem("wrong_key", "Secure Channel refused: the PD's key (SCBK) is not the one in " + key_source,
                       "that " + key_source + " holds this PD's key; a PD reset to factory defaults needs "
                       "install mode once (docs/osdp.md)")
    if sc_capable is False or (REPLY_PDCAP in seen.codes and seen.nak_codes and 0x05 in seen.nak_codes):
        return Problem("clear_text_only", "the PD answers only in clear text (no Secure Channel)",
                       "enable Secure Channel (AES-128) in the reader's configuration, or replace it: "
                       "door-bridge refuses clear-text OSDP (it can be sniffed and replayed)")
    if seen.nak_codes:
        return Problem("secure_channel_refused",
                       f"the PD refused the session (NAK {', '.join(f'{c:#04x}' for c in sorted(seen.nak_codes))})",
                       "the PD's OSDP settings (Secure Channel on, address, installed key); its manual")
    return Problem("protocol_error", "the PD answered but did not complete the handshake "
                   f"(replies seen: {', '.join(f'{c:#04x}' for c in sorted(seen.codes))})",
                   "noise on the line (termination, cable length, baud rate), two PDs on one address")


# --- feedback ---------------------------------------------------------------------------------

UNIT_S = 0.1  # OSDP LED and buzzer times are in units of 100 ms


def units(seconds: float) -> int:
    """Seconds → 100 ms units, at least 1 for a non-zero time, at most 255 (one byte)."""
    if seconds <= 0:
        return 0
    return max(1, min(255, int(round(seconds / UNIT_S, 6) + 0.5)))  # half up: 0.15 s is 2 units


@dataclass(frozen=True, slots=True)
class LedPattern:
    on: int  # 100 ms units
    off: int
    timer: int  # how long the temporary pattern lasts, 100 ms units; 0 = permanent
    on_color: int
    off_color: int


@dataclass(frozen=True, slots=True)
class BuzzerPattern:
    on: int
    off: int
    repeat: int


def led_pattern(blink: Blink, on_color: int, off_color: int, *, permanent: bool = False) -> LedPattern:
    on, off = units(blink.on_s), units(blink.off_s)
    timer = 0 if permanent else max(1, min(65535, (blink.n or 1) * (on + off)))
    return LedPattern(on, off, timer, on_color, off_color if off else on_color)


def buzzer_pattern(blink: Blink) -> BuzzerPattern:
    return BuzzerPattern(units(blink.on_s), units(blink.off_s), blink.n or 1)


def door_patterns() -> dict[str, Blink]:
    """The GPIO door's patterns (bridge/door/feedback.py), imported late: that module loads gpiozero,
    which this pure module's users (`doctor`, the OSDP unit tests) do not need."""
    from bridge.door.feedback import DENY_BEEPS, DENY_LED, GRANT_BEEP, OFFLINE_IDLE_LED, RATE_LIMITED_BEEP

    return {"deny_led": DENY_LED, "deny_beeps": DENY_BEEPS, "grant_beep": GRANT_BEEP,
            "locked_out_beep": RATE_LIMITED_BEEP, "offline_idle": OFFLINE_IDLE_LED}

# Key codes of osdp_KEYPAD: digits as ASCII; the spec sends '*' as 0x7F and '#' as 0x0D, some
# readers send the ASCII characters.
KEY_CODES = {**{0x30 + d: str(d) for d in range(10)}, 0x7F: "*", 0x2A: "*", 0x0D: "#", 0x23: "#"}
