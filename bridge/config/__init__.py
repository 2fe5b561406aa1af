"""Configuration: one TOML file, validated completely at start-up.

Every error a user can make names the file, the dotted key and what is wrong, and the CLI exits 2.
Unknown keys are errors: a misspelt `pulse_secs` silently ignored is a door that opens for the
wrong length of time.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, model_validator

from bridge.config.base import FilePath, GpioPin, Seconds, StrictModel


class ConfigError(Exception):
    """A problem in the configuration a user can fix. `str()` is the whole message."""


_Strict = StrictModel


class BridgeSection(_Strict):
    id: str = Field("BRIDGE-1", min_length=1, description="this bridge's name in logs and heartbeats")
    state_dir: FilePath = Path("/var/lib/door-bridge")
    mode: Literal["local-first", "online-first", "local-only"] = "local-first"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] = "console"


class CacheSection(_Strict):
    # The central's Ed25519 public key that signs grant bundles (PEM, or 32 raw bytes base64).
    public_key: str | None = None
    public_key_file: FilePath | None = None
    # Standalone sites (no central): the private key `door-bridge grants add/revoke` signs with.
    signing_key_file: FilePath | None = None
    staleness: Literal["deny", "warn"] = "deny"
    jwt_algorithms: list[Literal["EdDSA", "ES256", "HS256"]] = ["EdDSA", "ES256"]
    jwt_leeway_s: Annotated[float, Field(ge=0, le=300)] = 30.0

    @model_validator(mode="after")
    def _one_key(self) -> "CacheSection":
        if self.public_key and self.public_key_file:
            raise ValueError("set public_key or public_key_file, not both")
        return self


    def public_key_text(self, source: str) -> str | None:
        if self.public_key_file is not None:
            try:
                return self.public_key_file.read_text()
            except OSError as e:
                raise ConfigError(f"{source}: cache.public_key_file: cannot read {self.public_key_file}: {e.strerror}") from None
        return self.public_key


class PolicySection(_Strict):
    replay_window_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    rate_limit_denies: Annotated[int, Field(ge=1)] = 5
    rate_limit_window_s: Seconds = 60.0
    rate_limit_cooldown_s: Seconds = 30.0


class AuditSection(_Strict):
    max_events: Annotated[int, Field(ge=100)] = 500_000


class GpioSection(_Strict):
    # "mock" on a laptop or in tests; "auto" lets gpiozero pick (lgpio on a Pi 5 / bookworm).
    pin_factory: Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"] = "auto"
    # With pin_factory = "lgpio": use /dev/gpiochip<chip> without Raspberry Pi board detection;
    # pins are the chip's line offsets 0..27 (docs/door-io.md).
    chip: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _chip_needs_lgpio(self) -> "GpioSection":
        if self.chip is not None and self.pin_factory != "lgpio":
            raise ValueError('chip needs pin_factory = "lgpio"')
        return self


# Every GPIO function of a door, in the order doctor lists them.
DOOR_PIN_FIELDS = ("relay_pin", "door_switch_pin", "rex_pin", "led_pin", "buzzer_pin", "aux_relay_pin")


class DoorSection(_Strict):
    relay_pin: GpioPin
    relay_active_high: bool = True
    pulse_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    # Door-position switch (reed contact). With the usual wiring (contact to GND, internal
    # pull-up) a closed door reads LOW: door_closed_level = "low".
    door_switch_pin: GpioPin | None = None
    door_closed_level: Literal["low", "high"] = "low"
    # Open for longer than this after an authorised opening → DOOR_HELD_OPEN alarm.
    held_open_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Opened without a grant or REX within this many seconds before → DOOR_FORCED_OPEN alarm.
    forced_open_grace_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    # Request-to-exit button (to GND, internal pull-up): pulses the relay, audit event.
    rex_pin: GpioPin | None = None
    # Reader feedback.
    led_pin: GpioPin | None = None
    led_active_high: bool = True
    buzzer_pin: GpioPin | None = None
    buzzer_active_high: bool = True
    # Optional second relay: pulses with the main one ("grant", e.g. a maglock pair) or on
    # alarms ("alarm", e.g. a siren or a panel input).
    aux_relay_pin: GpioPin | None = None
    aux_relay_active_high: bool = True
    aux_relay_mode: Literal["grant", "alarm"] = "grant"
    # Offline passcodes (docs/offline-passcodes.md): the per-door secret (a file readable only by
    # the service, at least 16 bytes) and the door id codes are minted for (default: this
    # table's name).
    passcode_secret_file: FilePath | None = None
    passcode_door_id: str | None = Field(None, min_length=1, max_length=128)

    def pins(self) -> dict[str, int]:
        """The door's pin list, its one copy: each GPIO function it uses (`relay_pin`, …) → the pin."""
        return {name: pin for name in DOOR_PIN_FIELDS if (pin := getattr(self, name)) is not None}

    @model_validator(mode="after")
    def _distinct_pins(self) -> "DoorSection":
        pins = list(self.pins().values())
        if len(pins) != len(set(pins)):
            raise ValueError(f"two functions share one GPIO pin ({sorted(pins)})")
        return self


from bridge.config.emergency import EmergencySection  # noqa: E402
from bridge.config.observe import MetricsSection, MqttSection  # noqa: E402
from bridge.config.offline import OfflineSection  # noqa: E402
from bridge.config.readers import (  # noqa: E402
    ConsoleReader,
    EvdevScannerConfig,
    KeypadConfig,
    NfcReaderConfig,
    OsdpReaderConfig,
    SerialReader,
    WiegandReaderConfig,
)
from bridge.config.site import SiteSection  # noqa: E402
from bridge.config.upstream import UpstreamSection  # noqa: E402
from bridge.config.wiegand import CONTEXT_KEY, SiteFormat, build_site_formats, prebuild  # noqa: E402

ReaderConfig = Annotated[
    Union[ConsoleReader, SerialReader, EvdevScannerConfig, KeypadConfig, NfcReaderConfig, WiegandReaderConfig,
          OsdpReaderConfig],
    Field(discriminator="type"),
]


class Config(_Strict):
    bridge: BridgeSection = BridgeSection()
    site: SiteSection = SiteSection()
    cache: CacheSection = CacheSection()
    policy: PolicySection = PolicySection()
    audit: AuditSection = AuditSection()
    gpio: GpioSection = GpioSection()
    doors: dict[str, DoorSection] = Field(default_factory=dict)
    readers: list[ReaderConfig] = Field(default_factory=list)
    upstream: UpstreamSection = UpstreamSection()
    metrics: MetricsSection = MetricsSection()
    mqtt: MqttSection = MqttSection()
    offline: OfflineSection = OfflineSection()
    emergency: EmergencySection = EmergencySection()
    # Site-defined Wiegand card formats, named in a reader's `formats` (docs: hardware/readers.md).
    wiegand_formats: dict[str, SiteFormat] = Field(default_factory=dict)

    def site_wiegand_formats(self) -> dict[str, Any]:
        return build_site_formats(self.wiegand_formats)

    @model_validator(mode="after")
    def _cross_check(self) -> "Config":
        for name, spec in self.wiegand_formats.items():
            try:
                spec.build(name)
            except ValueError as e:
                raise _KeyError(f"wiegand_formats.{name}", str(e)) from None
        seen: set[str] = set()
        for i, reader in enumerate(self.readers):
            if reader.id in seen:
                raise _KeyError(f"readers.{i}.id", f"duplicate reader id {reader.id!r}")
            seen.add(reader.id)
            if reader.door not in self.doors:
                known = ", ".join(sorted(self.doors)) or "none"
                raise _KeyError(f"readers.{i}.door", f"no door {reader.door!r} (doors: {known})")
        for key, problem in self.emergency.check_names(set(self.doors), seen):
            raise _KeyError(key, problem)
        emergency_pins = self.emergency.pins()
        for name, door in self.doors.items():
            for field, pin in door.pins().items():
                if pin in emergency_pins:
                    raise _KeyError(f"emergency.{emergency_pins[pin]}", f"GPIO {pin} is also doors.{name}.{field}")
        if self.offline.webhook is not None and self.upstream.frontelio is None:
            raise _KeyError("offline.webhook", "hands offline decisions back to Frontelio: needs [upstream.frontelio]")
        if self.upstream.sna is not None and self.bridge.mode == "local-only":
            raise _KeyError("bridge.mode", 'SNA decides every card itself (its terminals do no local verification), '
                            'but "local-only" never asks it: set mode = "local-first" or "online-first", '
                            "or remove [upstream.sna]")
        return self


class _KeyError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-after"))
    ctx = error.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _KeyError):
        return inner.key, inner.message
    kind = error["type"]
    if kind == "extra_forbidden":
        return key, "unknown key (misspelt? see config.example.toml)"
    if kind == "missing":
        return key, "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if "input" in error and kind not in ("model_type", "dict_type") and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})"
    return key, message


def load(path: str | Path) -> Config:
    """Read and validate `path`; raise ConfigError naming file, key and problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return from_dict(data, source=str(path))


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        # Site formats first: reader models check their `formats` against them.
        return Config.model_validate(data, context={CONTEXT_KEY: prebuild(data.get("wiegand_formats") if isinstance(data, dict) else None)})
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            key, message = _describe(err)
            lines.append(f"{source}: {key or '(top level)'}: {message}")
        raise ConfigError("\n".join(lines)) from None
