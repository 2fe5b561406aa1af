"""`[emergency]`: fire/evacuation, lockdown, tamper and power-fault inputs, duress, door rules.

A leaf module (no hardware, no HTTP), like the rest of the configuration. Door and reader names
are cross-checked against `[doors]` and `[[readers]]` by `Config` (`check_names`).

Input contacts default to normally closed (`"nc"`): the line is pulled up and the contact holds
it LOW while all is well, so a cut wire reads as an alarm — the fail-safe wiring every fire and
tamper installer expects. `"no"`: a normally open contact that closes on alarm.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bridge.config.base import GpioPin, ReaderId, StrictModel

Contact = Literal["nc", "no"]
Action = Literal["none", "alarm_output", "lockdown"]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

# How often the bridge asks the central for signed commands (a lockdown from the central should
# take effect within seconds, and an empty answer costs the central almost nothing).
DEFAULT_COMMAND_POLL_S = 2.0


class AntiPassbackArea(StrictModel):
    entry_readers: list[ReaderId] = Field(min_length=1)
    exit_readers: list[ReaderId] = Field(default_factory=list)
    mode: Literal["soft", "hard", "timed"] = "soft"
    # timed: no re-entry at the same reader for this long.
    reentry_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    # Local wall time (site.time_zone) at which every presence in the area is forgiven, daily.
    forgive_at: str | None = None

    @field_validator("forgive_at")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is not None and not _HHMM.match(v):
            raise ValueError(f"forgive_at must be HH:MM (local time), got {v!r}")
        return v

    @model_validator(mode="after")
    def _exit_for_soft_hard(self) -> "AntiPassbackArea":
        if self.mode != "timed" and not self.exit_readers:
            raise ValueError("soft and hard anti-passback need exit_readers (how else would anyone leave?)")
        if set(self.entry_readers) & set(self.exit_readers):
            raise ValueError("a reader cannot be both an entry and an exit reader")
        return self


class EmergencySection(StrictModel):
    # Doors the fire/evacuation input releases (held unlocked while it is active).
    egress_doors: list[str] = Field(default_factory=list)
    # Holders with one of these roles (bundle `role` ids) still pass during a lockdown.
    lockdown_override_roles: list[str] = Field(default_factory=list)
    fire_pin: GpioPin | None = None
    fire_contact: Contact = "nc"
    lockdown_pin: GpioPin | None = None
    lockdown_contact: Contact = "no"
    tamper_pin: GpioPin | None = None
    tamper_contact: Contact = "nc"
    tamper_action: Action = "alarm_output"
    power_fault_pin: GpioPin | None = None
    power_fault_contact: Contact = "nc"
    power_fault_action: Action = "none"
    # A siren, strobe or alarm-panel input, energised while an alarm with action alarm_output lasts.
    alarm_output_pin: GpioPin | None = None
    alarm_output_active_high: bool = True
    # The designated admin credential: a valid credential at one of these readers, of a holder with
    # one of these roles, toggles the site lockdown.
    admin_readers: list[ReaderId] = Field(default_factory=list)
    admin_roles: list[str] = Field(default_factory=list)
    # Duress PIN = the PIN with its last digit + this (mod 10); 0 = no duress PINs.
    duress_offset: Annotated[int, Field(ge=0, le=9)] = 0
    # Two-person doors: door → seconds within which the second holder must present.
    two_person: dict[str, Annotated[float, Field(ge=1, le=300)]] = Field(default_factory=dict)
    # Mantraps: pairs of doors of which only one may be open at a time.
    interlock: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(default_factory=list)
    antipassback: dict[str, AntiPassbackArea] = Field(default_factory=dict)
    command_poll_s: Annotated[float, Field(ge=0.2, le=3600)] = DEFAULT_COMMAND_POLL_S

    @model_validator(mode="after")
    def _distinct(self) -> "EmergencySection":
        pins = [p for p in (self.fire_pin, self.lockdown_pin, self.tamper_pin, self.power_fault_pin,
                            self.alarm_output_pin) if p is not None]
        if len(pins) != len(set(pins)):
            raise ValueError(f"two emergency functions share one GPIO pin ({sorted(pins)})")
        if self.fire_pin is None and self.egress_doors:
            raise ValueError("egress_doors needs fire_pin (the input that mirrors the fire panel)")
        if "alarm_output" in (self.tamper_action if self.tamper_pin is not None else "none",
                              self.power_fault_action if self.power_fault_pin is not None else "none") \
                and self.alarm_output_pin is None:
            raise ValueError("an action of alarm_output needs alarm_output_pin")
        if self.admin_readers and not self.admin_roles:
            raise ValueError("admin_readers needs admin_roles (whose credential toggles the lockdown)")
        for pair in self.interlock:
            if pair[0] == pair[1]:
                raise ValueError("an interlock pairs two different doors")
        return self

    def pins(self) -> dict[int, str]:
        return {p: k for k, p in (("fire_pin", self.fire_pin), ("lockdown_pin", self.lockdown_pin),
                                  ("tamper_pin", self.tamper_pin), ("power_fault_pin", self.power_fault_pin),
                                  ("alarm_output_pin", self.alarm_output_pin)) if p is not None}

    def check_names(self, doors: set[str], readers: set[str]) -> list[tuple[str, str]]:
        """(key, problem) for every door or reader name that the rest of the config lacks."""
        problems = []
        for i, d in enumerate(self.egress_doors):
            if d not in doors:
                problems.append((f"emergency.egress_doors.{i}", f"no door {d!r}"))
        for d in self.two_person:
            if d not in doors:
                problems.append((f"emergency.two_person.{d}", f"no door {d!r}"))
        for i, pair in enumerate(self.interlock):
            for d in pair:
                if d not in doors:
                    problems.append((f"emergency.interlock.{i}", f"no door {d!r}"))
        for name, area in self.antipassback.items():
            for r in area.entry_readers + area.exit_readers:
                if r not in readers:
                    problems.append((f"emergency.antipassback.{name}", f"no reader {r!r}"))
        for i, r in enumerate(self.admin_readers):
            if r not in readers:
                problems.append((f"emergency.admin_readers.{i}", f"no reader {r!r}"))
        return problems
