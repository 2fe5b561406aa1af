"""Wiegand reader input: card numbers and keypad PINs from the two data lines D0 and D1.

A Wiegand reader holds both lines high and sends each bit as a short low pulse (about 50 µs) on
D0 for a 0 or D1 for a 1, about 1-2 ms apart. There is no start or stop marker: a frame ends
when the lines stay quiet for longer than any inter-bit gap (`frame_gap_ms`). gpiozero calls
`when_activated` on each falling edge from its own thread; the bits are timestamped there and
the asyncio side cuts frames, decodes them (`verifier.wiegand_formats`) and emits scans.

Keypad readers send one 4- or 8-bit burst per key. Keys go through the keypad input's
`KeypadBuffer`: '#' submits, '*' clears, and a pause longer than `pin_timeout_s` forgets a
half-typed PIN, so the next person does not inherit it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog
from gpiozero import DigitalInputDevice
from gpiozero.pins import Factory

from bridge.config.readers import WiegandReaderConfig
from bridge.inputs.base import Emit, InputContext, Scan
from bridge.inputs.keypad import KeypadBuffer, feed_logged
from verifier.credentials import PIN_MAX_DIGITS
from verifier.types import Source
from bridge.config.wiegand import format_table
from verifier.wiegand_formats import (
    WiegandCard,
    WiegandError,
    WiegandFormat,
    WiegandKey,
    card_key,
    decode,
)

log = structlog.get_logger()

# The longest frame kept bit by bit; longer bursts are noise (or a format we do not know) and
# are only counted, so a stuck line cannot grow memory.
MAX_FRAME_BITS = 64


class FrameAssembler:
    """Timestamped bits → frames cut on the inter-bit gap. Thread-safe.

    Bits arrive on gpiozero's thread; frames are taken on the event loop. A frame is closed by
    the gap measured between bit timestamps, so a slow event loop can delay a frame but never
    merge two frames or split one.
    """

    def __init__(self, gap_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._gap_s = gap_s
        self._clock = clock
        self._lock = threading.Lock()
        self._bits: list[int] = []
        self._overflow = 0
        self._last_bit_at = 0.0
        self._closed: list[tuple[tuple[int, ...], int, float]] = []

    def bit(self, value: int) -> None:
        now = self._clock()
        with self._lock:
            if self._pending() and now - self._last_bit_at >= self._gap_s:
                self._close()
            if len(self._bits) < MAX_FRAME_BITS:
                self._bits.append(value)
            else:
                self._overflow += 1
            self._last_bit_at = now

    def take(self, now: float) -> list[tuple[tuple[int, ...], int, float]]:
        """Finished frames as (bits, length, time of the last bit); length > len(bits) on overflow."""
        with self._lock:
            if self._pending() and now - self._last_bit_at >= self._gap_s:
                self._close()
            done, self._closed = self._closed, []
            return done

    def seconds_to_frame_end(self, now: float) -> float | None:
        with self._lock:
            if not self._pending():
                return None
            return max(0.0, self._last_bit_at + self._gap_s - now)

    def _pending(self) -> bool:
        return bool(self._bits) or self._overflow > 0

    def _close(self) -> None:
        self._closed.append((tuple(self._bits), len(self._bits) + self._overflow, self._last_bit_at))
        self._bits, self._overflow = [], 0


class WiegandInput:
    """Implements `bridge.inputs.base.Input` for one reader on two GPIO lines."""

    def __init__(self, cfg: WiegandReaderConfig, pin_factory: Factory | None = None,
                 site_formats: dict[str, WiegandFormat] | None = None) -> None:
        self.reader_id = cfg.id
        self._cfg = cfg
        self._formats = format_table(cfg.formats, site_formats or {})
        self._pin_factory = pin_factory
        self._frames = FrameAssembler(cfg.frame_gap_ms / 1000)
        self._entry = KeypadBuffer(PIN_MAX_DIGITS, cfg.pin_timeout_s)
        self._log = log.bind(reader=cfg.id)  # re-bound in run(), after logging is configured
        self._wake: Callable[[], object] = lambda: None
        self._lines: tuple[DigitalInputDevice, DigitalInputDevice] | None = None
        # Claim the lines now: a pin that is busy or missing is a start-up error, not a silent reader.
        self._open()

    def _open(self) -> None:
        if self._lines is not None:
            return
        # Idle high through the pull-up; a bit is the line pulled low, so active-low.
        d0 = DigitalInputDevice(self._cfg.d0_pin, pull_up=True, pin_factory=self._pin_factory)
        try:
            d1 = DigitalInputDevice(self._cfg.d1_pin, pull_up=True, pin_factory=self._pin_factory)
        except Exception:
            d0.close()
            raise
        d0.when_activated = lambda: self._on_bit(0)
        d1.when_activated = lambda: self._on_bit(1)
        self._lines = (d0, d1)

    def close(self) -> None:
        if self._lines is not None:
            for line in self._lines:
                line.close()
            self._lines = None

    def _on_bit(self, value: int) -> None:
        # gpiozero's thread: record and wake the loop, nothing more.
        self._frames.bit(value)
        self._wake()

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        self._open()
        self._log = log.bind(reader=self.reader_id)
        self._wake = lambda: loop.call_soon_threadsafe(woken.set)
        self._log.info("wiegand_ready", d0=self._cfg.d0_pin, d1=self._cfg.d1_pin, keypad=self._cfg.keypad)
        try:
            while True:
                woken.clear()
                now = time.monotonic()
                for bits, length, at in self._frames.take(now):
                    self._handle(bits, length, at, emit)
                try:
                    await asyncio.wait_for(woken.wait(), timeout=self._frames.seconds_to_frame_end(now))
                except TimeoutError:
                    pass
        finally:
            self._wake = lambda: None
            self.close()

    def _handle(self, bits: tuple[int, ...], length: int, at: float, emit: Emit) -> None:
        frame = decode(bits, self._formats) if length == len(bits) else WiegandError(length, f"longer than {MAX_FRAME_BITS} bits: line noise or a stuck line")
        match frame:
            case WiegandCard():
                self._log.debug("wiegand_card", format=frame.format, bits=length)
                emit(Scan(self.reader_id, Source.CARD, card_key(frame).encode(), hint="card", at_monotonic=at))
            case WiegandKey() if not self._cfg.keypad:
                self._log.warning("wiegand_key_ignored", bits=length, why="reader is not configured with keypad = true")
            case WiegandKey():
                entry = feed_logged(self._entry, frame.symbol, at, self._log, events="wiegand_pin")
                if entry is not None:
                    emit(Scan(self.reader_id, Source.KEYPAD, entry.encode(), hint="pin", at_monotonic=at))
            case WiegandError():
                self._log.warning(
                    "wiegand_frame_rejected", bits=length, format=frame.format, parity=frame.parity, why=frame.reason
                )


def create(cfg: WiegandReaderConfig, context: InputContext = InputContext()) -> WiegandInput:
    return WiegandInput(cfg, context.pin_factory, context.site_formats)
