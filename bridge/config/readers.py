"""The reader models: one per `type` in `[[readers]]`, validated with the rest of the file.

They live here, not beside each reader's code, so that loading a configuration (`check-config`,
`status`) never imports evdev, nfcpy, gpiozero or libosdp: the configuration package is a leaf.
Each input module imports its model from here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bridge.config.base import EvdevDeviceConfig, FilePath, GpioPin, ReaderId, Seconds, StrictModel
from bridge.config.wiegand import check_reader_formats
from verifier.credentials import PIN_MAX_DIGITS
from verifier.wiegand_formats import DEFAULT_FORMATS

# Keyboard layouts an evdev scanner can be set to; bridge/inputs/keymap.py holds their tables and
# checks at import that it has exactly these.
KEYBOARD_LAYOUTS = ("de", "uk", "us")
# NFC technologies nfcpy polls for.
Technology = Literal["106A", "106B", "212F", "424F"]
# The longest wait between two attempts to bring an offline OSDP PD back.
OSDP_RETRY_MAX_S = 30.0


class ConsoleReader(StrictModel):
    type: Literal["console"]
    id: ReaderId
    door: str = "main"
    # A scanned line that is a PIN ("1234#") is refused unless this reader is a wedge keypad:
    # a QR code must not be a faster keypad (docs/offline-passcodes.md).
    accept_pins: bool = False


class SerialReader(StrictModel):
    type: Literal["serial"]
    id: ReaderId
    door: str = "main"
    port: str = Field(min_length=1)
    baudrate: Annotated[int, Field(gt=0)] = 9600
    reconnect_s: Seconds = 1.0
    accept_pins: bool = False  # see ConsoleReader


class EvdevScannerConfig(EvdevDeviceConfig):
    type: Literal["evdev"]
    # Must match the scanner's "keyboard country" setting.
    layout: str = "us"
    inter_key_timeout_s: Seconds = 0.5
    # A scanned line that is a PIN ("1234#") is refused unless this device is a wedge keypad.
    accept_pins: bool = False

    @field_validator("layout")
    @classmethod
    def _known_layout(cls, name: str) -> str:
        if name not in KEYBOARD_LAYOUTS:
            raise ValueError(f"unknown keyboard layout {name!r} (known: {', '.join(KEYBOARD_LAYOUTS)})")
        return name


class KeypadConfig(EvdevDeviceConfig):
    """Selected like an evdev scanner: event path, by-id link, device name or `vendor:product`."""

    type: Literal["keypad"]
    max_length: Annotated[int, Field(ge=1, le=64)] = PIN_MAX_DIGITS
    entry_timeout_s: Seconds = 10.0


class NfcReaderConfig(StrictModel):
    type: Literal["nfc"]
    id: ReaderId
    door: str = "main"
    # An nfcpy path: "usb", "usb:054c:06c3", "usb:001:004", "tty:AMA0:pn532", "udp:127.0.0.1:54321".
    device: str
    reconnect_s: Seconds = 2.0
    # Technologies to poll. Fewer is faster: a FeliCa-only site can say ["212F"].
    targets: list[Technology] = Field(default=["106A", "106B", "212F"], min_length=1)
    # Pause between polling rounds; nfcpy's own default is 0.5 s, a door wants a quicker answer.
    poll_interval_s: Annotated[float, Field(gt=0, le=5)] = 0.2
    # A card must be away this long before the same UID counts as a new scan: one flaky presence
    # check (card at the edge of the field) must not become a second scan.
    rescan_gap_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Read an NDEF text/URI record (phones, credential stickers). Turn off at sites whose badges
    # carry unrelated NDEF (a company URL): then every tag counts by its UID.
    read_ndef: bool = True

    @field_validator("device")
    @classmethod
    def _nfcpy_path(cls, device: str) -> str:
        if not re.fullmatch(r"(usb|tty|com|udp)(:\S+)*", device):
            raise ValueError(
                "not an nfcpy device path: use usb, usb:VVVV:PPPP, usb:BUS:DEV, tty:PORT:DRIVER "
                "(e.g. tty:AMA0:pn532) or udp:HOST:PORT"
            )
        return device


class WiegandReaderConfig(StrictModel):
    type: Literal["wiegand"]
    id: ReaderId
    door: str = "main"
    d0_pin: GpioPin
    d1_pin: GpioPin
    # Quiet time that ends a frame. Readers space bits 1-2 ms apart and frames (or key presses)
    # far more than 25 ms apart; raise it only for readers with slow, irregular bit timing.
    frame_gap_ms: Annotated[float, Field(ge=5, le=1000)] = 25.0
    # A half-typed PIN is forgotten after this long without a key.
    pin_timeout_s: Seconds = 10.0
    # The reader has a keypad (4- or 8-bit key bursts). Off: key bursts are logged and dropped.
    keypad: bool = False
    # Card formats this site issues, built-in or defined under [wiegand_formats.NAME], at most
    # one per frame length (H10304 and H10302 are both 37 bits and cannot be told apart).
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS), min_length=1)

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str], info: ValidationInfo) -> list[str]:
        check_reader_formats(formats, info)  # ValueError names the unknown or clashing formats
        return formats

    @model_validator(mode="after")
    def _check(self) -> WiegandReaderConfig:
        if self.d0_pin == self.d1_pin:
            raise ValueError("d0_pin and d1_pin must be different GPIO lines")
        return self


class OsdpReaderConfig(StrictModel):
    """One PD on an RS-485 bus (docs/osdp.md)."""

    type: Literal["osdp"]
    id: ReaderId
    door: str = "main"
    # The RS-485 adapter: /dev/serial/by-id/… (USB) or /dev/ttyAMA0 / /dev/serial0 (Pi UART).
    port: str = Field(min_length=1)
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = 115200
    address: Annotated[int, Field(ge=0, le=126)]
    # The PD's Secure Channel Base Key: 32 hex digits in a file only the service can read
    # (0600), or a systemd credential (LoadCredential=). Never in this file.
    scbk_file: FilePath | None = None
    scbk_credential: str | None = None
    # Give a factory-fresh PD its own key: only with scbk_file, which must not exist yet.
    install: bool = False
    # "wiegand": card bits are decoded with `formats` (parity checked); "hex": the bits are the
    # card's number as the reader sends it (a CSN/UID reader), spelled like an NFC UID.
    card_bits: Literal["wiegand", "hex"] = "wiegand"
    formats: list[str] = Field(default_factory=lambda: list(DEFAULT_FORMATS), min_length=1)
    # A card read again within this long is the same presentation (readers that repeat while a
    # card is held).
    rescan_gap_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    max_pin_length: Annotated[int, Field(ge=1, le=64)] = PIN_MAX_DIGITS
    pin_timeout_s: Seconds = 10.0
    retry_s: Annotated[float, Field(gt=0, le=OSDP_RETRY_MAX_S)] = 2.0

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: list[str], info: ValidationInfo) -> list[str]:
        check_reader_formats(formats, info)
        return formats

    @model_validator(mode="after")
    def _key_source(self) -> OsdpReaderConfig:
        if (self.scbk_file is None) == (self.scbk_credential is None):
            raise ValueError("give exactly one of scbk_file or scbk_credential (the PD's Secure Channel key)")
        if self.install and self.scbk_file is None:
            raise ValueError("install = true needs scbk_file: the new key is written there")
        return self

    @property
    def key_source(self) -> str:
        return str(self.scbk_file) if self.scbk_file is not None else f"credential {self.scbk_credential}"
