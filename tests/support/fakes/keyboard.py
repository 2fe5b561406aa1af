"""A keyboard-wedge scanner without a kernel: evdev events typed by a fake InputDevice, plugged in and out.

The real uinput device is used in the system suite (tests/system); these fakes drive the reader's shell
and its WedgeDecoder in unit and integration tests.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Callable

from evdev import InputEvent, ecodes

from bridge.inputs.base import Input, Scan
from bridge.inputs.evdev_scanner import (
    DeviceNotFound,
)

STEP = 0.004  # seconds between events, like a fast scanner


class Typist:
    """Types text as a scanner does: MSC_SCAN, key down, SYN, key up, SYN, with timestamps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start

    def _event(self, type_: int, code: int, value: int) -> InputEvent:
        sec = int(self.t)
        return InputEvent(sec, int(round((self.t - sec) * 1e6)), type_, code, value)

    def key(self, name: str, value: int) -> list[InputEvent]:
        events = [
            self._event(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000 + ecodes.ecodes[name] % 256),
            self._event(ecodes.EV_KEY, ecodes.ecodes[name], value),
            self._event(ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        ]
        self.t += STEP
        return events

    def tap(self, name: str, *modifiers: str) -> list[InputEvent]:
        events: list[InputEvent] = []
        for modifier in modifiers:
            events += self.key(modifier, 1)
        events += self.key(name, 1) + self.key(name, 0)
        for modifier in reversed(modifiers):
            events += self.key(modifier, 0)
        return events

    def pause(self, seconds: float) -> None:
        self.t += seconds

    def type(self, text: str, table: dict[str, tuple[str, ...]], enter: str = "KEY_ENTER") -> list[InputEvent]:
        events: list[InputEvent] = []
        for char in text:
            events += self.tap(*table[char])
        return events + (self.tap(enter) if enter else [])


def us_table(shift: str = "KEY_LEFTSHIFT") -> dict[str, tuple[str, ...]]:
    table: dict[str, tuple[str, ...]] = {}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        table[letter] = (f"KEY_{letter.upper()}",)
        table[letter.upper()] = (f"KEY_{letter.upper()}", shift)
    for digit in "0123456789":
        table[digit] = (f"KEY_{digit}",)
    unshifted = {".": "KEY_DOT", "/": "KEY_SLASH", "-": "KEY_MINUS", "=": "KEY_EQUAL", " ": "KEY_SPACE"}
    shifted = {
        ":": "KEY_SEMICOLON", "?": "KEY_SLASH", "_": "KEY_MINUS", "&": "KEY_7", "$": "KEY_4",
        "~": "KEY_GRAVE", "%": "KEY_5", "!": "KEY_1", "@": "KEY_2", "#": "KEY_3", "+": "KEY_EQUAL",
    }  # fmt: skip
    table.update({c: (k,) for c, k in unshifted.items()})
    table.update({c: (k, shift) for c, k in shifted.items()})
    return table


def unplugged() -> OSError:
    return OSError(errno.ENODEV, "No such device")


class FakeKeyboard:
    """Stands in for `evdev.InputDevice`: yields real InputEvents, then fails like an unplug."""

    def __init__(self, events: list[InputEvent], then: OSError | None = None, path: str = "/dev/input/event7") -> None:
        self.events = events
        self.then = then
        self.path: str | bytes = path
        self.name = "Fake 2D Scanner Keyboard"
        self.grabbed = False
        self.closed = False
        self.grab_error: OSError | None = None

    def grab(self) -> None:
        if self.grab_error:
            raise self.grab_error
        self.grabbed = True

    def close(self) -> None:
        self.closed = True

    async def _stream(self) -> AsyncIterator[InputEvent]:
        for event in self.events:
            await asyncio.sleep(0)
            yield event
        if self.then is not None:
            raise self.then
        await asyncio.Event().wait()  # plugged in, nobody scanning

    def async_read_loop(self) -> AsyncIterator[InputEvent]:
        return self._stream()


class Plugging:
    """The `open_device` seam: each open takes the next device, or raises the next error."""

    def __init__(self, *script: FakeKeyboard | OSError) -> None:
        self.script = list(script)
        self.opened: list[str] = []

    def __call__(self, selector: str) -> FakeKeyboard:
        self.opened.append(selector)
        step = self.script.pop(0) if self.script else DeviceNotFound(selector)
        if isinstance(step, OSError):
            raise step
        return step


def run_until(scanner: Input, done: Callable[[list[Scan]], bool]) -> list[Scan]:
    scans: list[Scan] = []

    async def main() -> None:
        task = asyncio.create_task(scanner.run(scans.append))
        try:
            while not done(scans):
                assert not task.done(), task.exception() if not task.cancelled() else "cancelled"
                await asyncio.sleep(0.001)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), timeout=20))
    return scans

