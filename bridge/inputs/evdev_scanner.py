"""Keyboard-wedge QR/barcode scanners read through the Linux input layer (python-evdev).

A wedge scanner is a USB keyboard that types what it reads and presses Enter. Three parts:

- `WedgeDecoder`, pure: `evdev.InputEvent`s in, complete scans out. It keys its inter-key timeout
  on the events' own kernel timestamps, so tests replay real event sequences with no clock.
- `read_device_forever`, the shell: find the device, `grab()` it so no scan ever leaks into a
  console login, read with python-evdev's asyncio support, and after an unplug re-find and re-open
  it every `reconnect_s`. Shared with `bridge.inputs.keypad`.
- `EvdevScannerInput`, the `Input` the daemon runs.

Reading uses `async_read_loop` (the device fd registered with the event loop) rather than a
thread: no thread per reader on a Pi Zero, and cancelling the task stops reading at once.

python-evdev is a Linux-only dependency; without it this module still imports (so a config file
naming an evdev reader validates on a laptop) and `create` says what is missing.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import glob
import os
import re
import time
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Literal,
    Protocol,
)

import structlog

from bridge.config.readers import EvdevScannerConfig
from bridge.inputs import keymap
from bridge.inputs.base import Emit, InputContext, Scan
from verifier.credentials import MAX_SCAN_BYTES
from verifier.types import Source

try:
    import evdev
    from evdev import ecodes
except ImportError:  # not Linux
    evdev = None  # type: ignore[assignment]
    ecodes = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from evdev import InputEvent

log = structlog.get_logger()

# Kernel key event values.
KEY_UP, KEY_DOWN = 0, 1  # 2 is autorepeat

# Typed in place of a key the layout does not know, so the scan can never pass for the text that
# was printed (the verifier answers MALFORMED_CREDENTIAL) instead of silently losing a character.
UNKNOWN_KEY_CHAR = "\ufffd"


# --- decoding -----------------------------------------------------------------------------------


def require_evdev(reader_id: str) -> None:
    if evdev is None:
        raise RuntimeError(f"reader {reader_id}: python-evdev is not installed (evdev readers and keypads need Linux)")


def key_codes(names: Iterable[str]) -> frozenset[int]:
    return frozenset(ecodes.ecodes[name] for name in names)


@dataclass(frozen=True, slots=True)
class TypedScan:
    """A scan ended by Enter. `too_long`: over the verifier's cap, which will call it malformed."""

    text: str = field(repr=False)
    too_long: bool = False
    unknown_keys: int = 0


@dataclass(frozen=True, slots=True)
class DiscardedScan:
    """A half scan thrown away: the scanner paused mid-code, or the kernel dropped events."""

    reason: Literal["inter_key_timeout", "events_dropped"]
    length: int


class WedgeDecoder:
    """Turns key events into typed scans, one event at a time.

    Only key presses type; autorepeat is ignored (a scanner never holds a key, so a repeat is a
    slow bus, not a second character). A scan longer than `max_bytes` keeps its first bytes just
    past the cap and is still emitted, so the person at the door gets a DENY and the audit log a
    MALFORMED_CREDENTIAL rather than silence, while memory stays bounded.
    """

    def __init__(
        self, layout: str = "us", inter_key_timeout_s: float = 0.5, max_bytes: int = MAX_SCAN_BYTES
    ) -> None:
        self.layout = keymap.get_layout(layout)
        self._timeout = inter_key_timeout_s
        self._max_bytes = max_bytes
        self._names = {ecodes.ecodes[name]: name for name in self.layout.keys}
        self._enter = key_codes(keymap.ENTER_KEYS)
        self._shift = key_codes(keymap.SHIFT_KEYS)
        self._altgr = key_codes(keymap.ALTGR_KEYS)
        self._chord = key_codes(keymap.CHORD_KEYS)
        self._silent = key_codes(keymap.SILENT_KEYS)
        self._capslock = ecodes.ecodes[keymap.CAPSLOCK_KEY]
        self._modifiers = self._shift | self._altgr | self._chord
        self._held: set[int] = set()
        self._caps = False
        self._last_at = 0.0
        self._reset_scan()
        self.unknown_keys_total = 0

    def _reset_scan(self) -> None:
        self._parts: list[str] = []
        self._bytes = 0
        self._dead: str | None = None
        self._unknown = 0

    @property
    def _pending(self) -> bool:
        return bool(self._parts) or self._dead is not None or self._unknown > 0

    def feed(self, event: InputEvent) -> TypedScan | DiscardedScan | None:
        if event.type == ecodes.EV_SYN and event.code == ecodes.SYN_DROPPED:
            # Events were lost: the half scan is corrupt and modifier state unknown.
            self._held.clear()
            return self._discard("events_dropped")
        if event.type != ecodes.EV_KEY:
            return None
        if event.value == KEY_UP:
            self._held.discard(event.code)
            return None
        if event.value != KEY_DOWN:
            return None
        outcome: TypedScan | DiscardedScan | None = None
        at = event.timestamp()
        if self._pending and at - self._last_at > self._timeout:
            outcome = self._discard("inter_key_timeout")
        self._last_at = at
        code = event.code
        if code in self._modifiers:
            self._held.add(code)
        elif code == self._capslock:
            self._caps = not self._caps
        elif code in self._enter:
            if self._pending:
                return self._complete()
        elif code not in self._silent:
            self._type(self._char(code))
        return outcome

    def _char(self, code: int) -> str | None:
        name = self._names.get(code)
        if name is None or self._held & self._chord:
            return None
        altgr = bool(self._held & self._altgr)
        shift = bool(self._held & self._shift)
        plain = self.layout.char(name, shift=False, altgr=False)
        if self._caps and not altgr and plain and plain.isalpha() and self.layout.char(name, True, False) == plain.upper():
            shift = not shift
        return self.layout.char(name, shift=shift, altgr=altgr)

    def _type(self, char: str | None) -> None:
        if char is None:
            self._unknown += 1
            self.unknown_keys_total += 1
            self._append(UNKNOWN_KEY_CHAR)
        elif char in self.layout.dead:
            if self._dead is not None:
                self._append(self._dead)
            self._dead = char
        elif self._dead is not None:
            # No composition: QR payloads are ASCII; dead key + Space is the accent itself.
            self._append(self._dead if char == " " else self._dead + char)
            self._dead = None
        else:
            self._append(char)

    def _append(self, text: str) -> None:
        if self._bytes > self._max_bytes:
            return
        self._parts.append(text)
        self._bytes += len(text.encode())

    def _complete(self) -> TypedScan:
        if self._dead is not None:
            self._append(self._dead)
        scan = TypedScan("".join(self._parts), too_long=self._bytes > self._max_bytes, unknown_keys=self._unknown)
        self._reset_scan()
        return scan

    def _discard(self, reason: Literal["inter_key_timeout", "events_dropped"]) -> DiscardedScan | None:
        if not self._pending:
            return None
        discarded = DiscardedScan(reason, self._bytes)
        self._reset_scan()
        return discarded


# --- finding and reading the device ------------------------------------------------------------


class KeyDevice(Protocol):
    """What the shell needs of an `evdev.InputDevice` (tests hand in a fake with these)."""

    path: str | bytes
    name: str

    def grab(self) -> None: ...

    def close(self) -> None: ...

    def async_read_loop(self) -> AsyncIterator[Any]: ...


OpenDevice = Callable[[str], KeyDevice]


class DeviceNotFound(OSError):
    def __init__(self, selector: str) -> None:
        super().__init__(errno.ENODEV, f"no input device matches {selector!r}")


_VENDOR_PRODUCT = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")

# A device must have one of these keys to be picked by name or vendor:product: a scanner exposes
# several event nodes (keyboard, consumer control, …) under one name and only one types.
SCANNER_DEVICE_KEYS = keymap.ENTER_KEYS
KEYPAD_DEVICE_KEYS = ("KEY_KP0", "KEY_0", "KEY_NUMERIC_0")


def _by_event_number(path: str) -> tuple[int, str]:
    return len(path), path  # event2 before event10


def find_device_path(selector: str, needs_any: Iterable[str] = SCANNER_DEVICE_KEYS) -> str:
    """Resolve a config `device` selector to an event node path; DeviceNotFound if none matches.

    Paths are returned as given: a `/dev/input/by-id/` link is re-resolved at every open, so after
    a re-plug it leads to the new `eventN`.
    """
    if selector.startswith("/"):
        return selector
    wanted = key_codes(needs_any)
    vendor_product = _VENDOR_PRODUCT.match(selector)
    for path, device in _each_device():
        if vendor_product:
            matches = (device.info.vendor, device.info.product) == (
                int(vendor_product[1], 16),
                int(vendor_product[2], 16),
            )
        else:
            matches = device.name == selector
        if matches and wanted & set(device.capabilities().get(ecodes.EV_KEY, [])):
            return path
    raise DeviceNotFound(selector)


INPUT_DIR = "/dev/input"


def readable_event_nodes() -> list[str]:
    """`/dev/input/event*` this user may read (reading and the exclusive grab need no more).

    Not `evdev.list_devices()`: its `writable=False` exists only from evdev 2.0, and the
    python3-evdev that Debian 12 and Raspberry Pi OS ship (1.6.1, kept by install.sh's venv) has
    no such argument and lists only nodes the user may also write.
    """
    return [path for path in glob.glob(os.path.join(INPUT_DIR, "event*")) if os.access(path, os.R_OK)]


def _each_device() -> Iterator[tuple[str, Any]]:
    """Every input device this user can open, in event-number order; each closed after use."""
    for path in sorted(readable_event_nodes(), key=_by_event_number):
        try:
            device = evdev.InputDevice(path)
        except OSError:
            continue
        try:
            yield path, device
        finally:
            device.close()


def open_evdev_device(selector: str, needs_any: Iterable[str] = SCANNER_DEVICE_KEYS) -> KeyDevice:
    return evdev.InputDevice(find_device_path(selector, needs_any))


@dataclass(frozen=True, slots=True)
class FoundDevice:
    """One input device as `door-bridge doctor` shows it."""

    path: str
    name: str
    vendor_product: str
    by_id: tuple[str, ...]
    types_enter: bool
    has_digits: bool


def list_key_devices() -> list[FoundDevice]:
    """Every readable input device with keys, for `doctor` and for writing `device = ...`."""
    links: dict[str, list[str]] = {}
    for link in glob.glob("/dev/input/by-id/*"):
        links.setdefault(os.path.realpath(link), []).append(link)
    enter, digits = key_codes(SCANNER_DEVICE_KEYS), key_codes(KEYPAD_DEVICE_KEYS)
    found = []
    for path, device in _each_device():
        keys = set(device.capabilities().get(ecodes.EV_KEY, []))
        if keys:
            found.append(
                FoundDevice(
                    path=path,
                    name=device.name,
                    vendor_product=f"{device.info.vendor:04x}:{device.info.product:04x}",
                    by_id=tuple(sorted(links.get(os.path.realpath(path), []))),
                    types_enter=bool(keys & enter),
                    has_digits=bool(keys & digits),
                )
            )
    return found


def _hint(error: OSError) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return "the service user cannot open /dev/input: add it to group 'input' (hardware/udev rules)"
    if error.errno == errno.EBUSY:
        return "another program has grabbed the device (a second door-bridge? a desktop session?)"
    return "check the USB cable and that `device` matches a device listed by `door-bridge doctor`"


def _close_quietly(device: KeyDevice) -> None:
    try:
        device.close()
    except OSError:
        pass


async def _read_until_gone(device: KeyDevice, on_event: Callable[[Any], None]) -> None:
    while True:
        try:
            async for event in device.async_read_loop():
                on_event(event)
            return
        except BlockingIOError:
            continue  # woken with nothing to read: keep reading the same device


async def read_device_forever(
    selector: str,
    open_device: OpenDevice,
    *,
    grab: bool,
    reconnect_s: float,
    on_connect: Callable[[], None],
    on_event: Callable[[Any], None],
    logger: Any = log,
) -> None:
    """Open (and grab) the device, feed its events to `on_event`, survive unplugging; runs until
    cancelled. One warning per outage (not one per retry), one info line when it is back.
    `on_connect` runs after every (re)open so decoders start from a clean state.
    """
    outage_since: float | None = None
    while True:
        try:
            device = open_device(selector)
        except OSError as e:
            outage_since = _note_outage(logger, "evdev_device_unavailable", e, outage_since, reconnect_s)
            await asyncio.sleep(reconnect_s)
            continue
        try:
            if grab:
                device.grab()
            if outage_since is None:
                logger.info("evdev_device_opened", path=str(device.path), name=device.name, grabbed=grab)
            else:
                logger.info(
                    "evdev_device_reconnected",
                    path=str(device.path),
                    name=device.name,
                    outage_s=round(time.monotonic() - outage_since, 1),
                )
                outage_since = None
            on_connect()
            await _read_until_gone(device, on_event)
            error = OSError(errno.ENODEV, "event stream ended")
        except OSError as e:
            error = e
        finally:
            _close_quietly(device)
        outage_since = _note_outage(logger, "evdev_device_lost", error, outage_since, reconnect_s)
        await asyncio.sleep(reconnect_s)


def _note_outage(logger: Any, event: str, error: OSError, since: float | None, retry_s: float) -> float:
    fields = dict(error=error.strerror or str(error), errno=errno.errorcode.get(error.errno or 0, error.errno))
    if since is None:
        logger.warning(event, **fields, hint=_hint(error), retry_s=retry_s)
        return time.monotonic()
    logger.debug(event, **fields)
    return since


# --- the input ----------------------------------------------------------------------------------


class EvdevScannerInput:
    def __init__(self, cfg: EvdevScannerConfig, open_device: OpenDevice | None = None) -> None:
        self.cfg = cfg
        self.reader_id = cfg.id
        self._open = open_device or functools.partial(open_evdev_device, needs_any=SCANNER_DEVICE_KEYS)
        self._log = log.bind(reader=cfg.id, device=cfg.device)
        self._decoder = self._new_decoder()

    def _new_decoder(self) -> WedgeDecoder:
        return WedgeDecoder(self.cfg.layout, self.cfg.inter_key_timeout_s)

    async def run(self, emit: Emit) -> None:
        def on_connect() -> None:
            self._decoder = self._new_decoder()

        def on_event(event: InputEvent) -> None:
            self._handle(self._decoder.feed(event), emit)

        await read_device_forever(
            self.cfg.device,
            self._open,
            grab=self.cfg.grab,
            reconnect_s=self.cfg.reconnect_s,
            on_connect=on_connect,
            on_event=on_event,
            logger=self._log,
        )

    def _handle(self, outcome: TypedScan | DiscardedScan | None, emit: Emit) -> None:
        if isinstance(outcome, DiscardedScan):
            self._log.info("evdev_scan_discarded", reason=outcome.reason, length=outcome.length)
        elif isinstance(outcome, TypedScan):
            raw = outcome.text.encode()
            if outcome.unknown_keys:
                self._log.warning(
                    "evdev_unknown_keys",
                    count=outcome.unknown_keys,
                    layout=self.cfg.layout,
                    hint="set `layout` to the scanner's keyboard country, or turn off its prefix/suffix keys",
                )
            if outcome.too_long:
                self._log.warning("evdev_scan_too_long", length=len(raw), limit=MAX_SCAN_BYTES)
            self._log.debug("evdev_scan", length=len(raw))
            emit(Scan(self.reader_id, Source.PHONE_QR, raw=raw, hint=None, at_monotonic=time.monotonic()))


def create(cfg: EvdevScannerConfig, context: InputContext = InputContext()) -> EvdevScannerInput:
    require_evdev(cfg.id)
    return EvdevScannerInput(cfg)
