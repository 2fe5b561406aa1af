"""PIN keypads: digits accumulate, `#` submits, `*` clears, a pause clears.

`KeypadBuffer` is the pure part and speaks symbols ('0'-'9', '#', '*'), not key codes, so the
Wiegand keypad decoder reuses it unchanged; it imports no evdev. `KeypadInput` feeds it from an
evdev keypad (USB numeric keypad or a gpio-matrix-keypad), through the same find/grab/reconnect
shell as the wedge scanners.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Callable

import structlog

from bridge.config.readers import KeypadConfig
from bridge.inputs import keymap
from bridge.inputs.base import Emit, InputContext, Scan
from verifier.credentials import PIN_MAX_DIGITS
from verifier.types import Source

if TYPE_CHECKING:
    from evdev import InputEvent

    from bridge.inputs.evdev_scanner import OpenDevice

log = structlog.get_logger()

DIGITS = frozenset("0123456789")
SUBMIT = "#"
CLEAR = "*"


class KeypadBuffer:
    """Accumulates one PIN entry. `feed` returns the digits when `#` submits them, else None.

    Timeouts are lazy: a pause longer than `entry_timeout_s` clears the entry when the next key
    arrives, so the next person never inherits someone's half-typed digits and no timer runs.
    Pass `at` (seconds, any clock) to replay recorded key times; otherwise `clock()` is read.
    An entry longer than `max_length` is refused whole at `#` (not cut to a prefix, which could
    be someone else's PIN); the counters say why nothing was submitted.
    """

    def __init__(
        self,
        max_length: int = PIN_MAX_DIGITS,
        entry_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_length = max_length
        self.entry_timeout_s = entry_timeout_s
        self._clock = clock
        self._digits: list[str] = []
        self._overflow = False
        self._last_at: float | None = None
        self.timed_out = 0
        self.too_long = 0
        self.ignored = 0

    @property
    def length(self) -> int:
        return len(self._digits)

    def clear(self) -> None:
        self._digits.clear()
        self._overflow = False

    def feed(self, key: str, at: float | None = None) -> str | None:
        at = self._clock() if at is None else at
        if (self._digits or self._overflow) and self._last_at is not None and at - self._last_at > self.entry_timeout_s:
            self.timed_out += 1
            self.clear()
        self._last_at = at
        if key in DIGITS:
            if len(self._digits) < self.max_length:
                self._digits.append(key)
            else:
                self._overflow = True
        elif key == CLEAR:
            self.clear()
        elif key == SUBMIT:
            entry, overflow = "".join(self._digits), self._overflow
            self.clear()
            if overflow:
                self.too_long += 1
                return None
            return entry or None
        else:
            self.ignored += 1
        return None


def feed_logged(buffer: KeypadBuffer, symbol: str, at: float, log: structlog.typing.FilteringBoundLogger,
                events: str = "keypad_entry") -> str | None:
    """Feed one key; say why an entry was dropped (timed out: info, too long: warning) and log a
    submitted one by its length only — the digits are a secret. Every keypad (evdev, OSDP, Wiegand)
    takes keys this way; `events` is the prefix of its event names."""
    before = (buffer.timed_out, buffer.too_long)
    pin = buffer.feed(symbol, at=at)
    if buffer.timed_out != before[0]:
        log.info(f"{events}_timed_out", timeout_s=buffer.entry_timeout_s)
    if buffer.too_long != before[1]:
        log.warning(f"{events}_too_long", max_length=buffer.max_length)
    if pin is not None:
        log.debug(events, length=len(pin))
    return pin


class KeypadKeys:
    """Evdev key events → keypad symbols (presses only; Shift for the US `#`/`*` on 3/8)."""

    def __init__(self) -> None:
        from evdev import ecodes

        from bridge.inputs.evdev_scanner import key_codes

        self._ecodes = ecodes
        self._plain = {ecodes.ecodes[name]: symbol for name, symbol in keymap.KEYPAD_KEYS.items()}
        self._shifted = {ecodes.ecodes[name]: symbol for name, symbol in keymap.KEYPAD_SHIFTED_KEYS.items()}
        self._shift = key_codes(keymap.SHIFT_KEYS)
        self._held: set[int] = set()

    def symbol(self, event: InputEvent) -> str | None:
        if event.type != self._ecodes.EV_KEY:
            return None
        if event.code in self._shift:
            if event.value:
                self._held.add(event.code)
            else:
                self._held.discard(event.code)
            return None
        if event.value != 1:  # release or autorepeat: holding `1` is not `1111`
            return None
        table = self._shifted if self._held else self._plain
        return table.get(event.code)


class KeypadInput:
    def __init__(self, cfg: KeypadConfig, open_device: OpenDevice | None = None) -> None:
        from bridge.inputs.evdev_scanner import KEYPAD_DEVICE_KEYS, open_evdev_device

        self.cfg = cfg
        self.reader_id = cfg.id
        self._open = open_device or functools.partial(open_evdev_device, needs_any=KEYPAD_DEVICE_KEYS)
        self._log = log.bind(reader=cfg.id, device=cfg.device)
        self._keys = KeypadKeys()
        self._buffer = self._new_buffer()

    def _new_buffer(self) -> KeypadBuffer:
        return KeypadBuffer(self.cfg.max_length, self.cfg.entry_timeout_s)

    async def run(self, emit: Emit) -> None:
        from bridge.inputs.evdev_scanner import read_device_forever

        def on_connect() -> None:
            self._keys = KeypadKeys()
            self._buffer = self._new_buffer()

        await read_device_forever(
            self.cfg.device,
            self._open,
            grab=self.cfg.grab,
            reconnect_s=self.cfg.reconnect_s,
            on_connect=on_connect,
            on_event=lambda event: self._handle(event, emit),
            logger=self._log,
        )

    def _handle(self, event: InputEvent, emit: Emit) -> None:
        symbol = self._keys.symbol(event)
        if symbol is None:
            return
        pin = feed_logged(self._buffer, symbol, event.timestamp(), self._log)
        if pin is not None:
            emit(Scan(self.reader_id, Source.KEYPAD, raw=pin.encode(), hint="pin", at_monotonic=time.monotonic()))


def create(cfg: KeypadConfig, context: InputContext = InputContext()) -> KeypadInput:
    from bridge.inputs.evdev_scanner import require_evdev

    require_evdev(cfg.id)
    return KeypadInput(cfg)
