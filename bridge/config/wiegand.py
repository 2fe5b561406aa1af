"""Site-defined Wiegand formats in the config (`[wiegand_formats.NAME]`), and the one place a
reader's `formats` list is turned into the decoding table both the Wiegand GPIO reader and the
OSDP reader use.

Bits are counted from 1 as card-format data sheets count them (the first bit on the wire is bit
1). Every problem is found at `check-config` time and named by its key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from bridge.config.base import StrictModel
from verifier.wiegand_formats import FORMATS, MAX_FRAME_BITS, WiegandFormat, formats_by_length, site_format

_SPAN = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
BitNumber = Annotated[int, Field(ge=1, le=MAX_FRAME_BITS)]


def _span(value: str | int) -> tuple[int, int]:
    """`"3-14"` or `7` → (first, last), inclusive."""
    if isinstance(value, int):
        return value, value
    m = _SPAN.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a bit range like \"3-14\"")
    return int(m.group(1)), int(m.group(2))


class SiteParity(StrictModel):
    bit: BitNumber
    # The bits this parity bit checks, not itself: numbers and "first-last" ranges, e.g.
    # ["2-13"] or [2, 4, "6-9"].
    covers: list[str | int] = Field(min_length=1)
    sense: Literal["even", "odd"]

    @field_validator("covers")
    @classmethod
    def _ranges(cls, covers: list[str | int]) -> list[str | int]:
        for item in covers:
            _span(item)
        return covers

    def bits(self) -> list[int]:
        out: list[int] = []
        for item in self.covers:
            first, last = _span(item)
            out.extend(range(first, last + 1))
        return out


class SiteFormat(StrictModel):
    description: str = ""
    length: Annotated[int, Field(ge=9, le=MAX_FRAME_BITS)]
    card: str  # "first-last", e.g. "10-25"
    facility: str | None = None
    # Listed in the order they can be computed: a parity bit that covers another parity bit
    # comes after it.
    parity: list[SiteParity] = Field(default_factory=list)

    @field_validator("card", "facility")
    @classmethod
    def _range(cls, value: str | None) -> str | None:
        if value is not None:
            _span(value)
        return value

    def build(self, name: str) -> WiegandFormat:
        """ValueError (with a message naming the part) if the layout is impossible."""
        return site_format(
            name, self.length, _span(self.card), _span(self.facility) if self.facility is not None else None,
            [(p.bit, p.bits(), p.sense == "even") for p in self.parity], self.description,
        )


def build_site_formats(site: Mapping[str, SiteFormat]) -> dict[str, WiegandFormat]:
    """Raises `KeyError`-free ValueError naming `wiegand_formats.NAME` on the first bad format."""
    built: dict[str, WiegandFormat] = {}
    for name, spec in site.items():
        try:
            built[name] = spec.build(name)
        except ValueError as e:
            raise ValueError(f"wiegand_formats.{name}: {e}") from None
    return built


def format_table(names: Iterable[str], site: Mapping[str, WiegandFormat]) -> dict[int, WiegandFormat]:
    """A reader's `formats` list → the table `decode` takes; ValueError on unknown names or two
    formats of one length."""
    chosen: list[WiegandFormat] = []
    for name in names:
        if name in site:
            chosen.append(site[name])
        elif name in FORMATS:
            chosen.append(FORMATS[name])
        else:
            known = ", ".join(sorted(FORMATS))
            extra = f"; site formats: {', '.join(sorted(site))}" if site else " (define site formats under [wiegand_formats.NAME])"
            raise ValueError(f"unknown Wiegand format {name!r} (built-in: {known}{extra})")
    return formats_by_length(chosen)


# Validation context key: {name: built format, or None when that site format is itself invalid
# (its own error is reported under `wiegand_formats.NAME`)}.
CONTEXT_KEY = "wiegand_formats"


def prebuild(raw: object) -> dict[str, WiegandFormat | None]:
    """The site formats of a config dict, built ahead of the readers that name them."""
    out: dict[str, WiegandFormat | None] = {}
    if not isinstance(raw, dict):
        return out
    for name, spec in raw.items():
        try:
            out[str(name)] = SiteFormat.model_validate(spec).build(str(name))
        except (ValidationError, ValueError):
            out[str(name)] = None
    return out


def check_reader_formats(names: list[str], info: ValidationInfo) -> None:
    """A reader's `formats`: every name known, at most one per length (ValueError otherwise).

    Without a validation context (a reader model built on its own) only built-in names exist.
    """
    site = (info.context or {}).get(CONTEXT_KEY, {}) if info.context else {}
    if any(name in site and site[name] is None for name in names):
        return  # that site format's own error is reported; a second one here would only confuse
    format_table(names, {n: f for n, f in site.items() if f is not None})
