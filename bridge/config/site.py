"""`[site]`: the site's IANA time zone and the door-mode defaults (docs/door-modes.md).

A leaf module (no hardware, no HTTP), like the rest of the configuration package. The zone is
checked against the system's tz database at load time, so a misspelt zone is a config error
(exit 2), never a door that runs its schedules in UTC.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from bridge.config.base import StrictModel

ModeName = Literal["card-only", "card-and-pin", "card-or-pin", "pin-only", "facility-code", "unlocked", "locked"]


class SiteSection(StrictModel):
    # Schedules' wall times are in this zone (DST handled by zoneinfo).
    time_zone: str = "UTC"
    # The mode of a door no `door_mode` record names. card-or-pin is what a door did before modes.
    default_mode: ModeName = "card-or-pin"
    # card-and-pin: the holder's PIN must follow the card at the same door within this time.
    pin_timeout_s: Annotated[float, Field(ge=1, le=300)] = 10.0

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not an IANA time zone on this system: {v!r} (e.g. Europe/Berlin; see timedatectl list-timezones)") from None
        return v

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)
