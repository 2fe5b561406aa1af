"""Keyboard layouts as data: which character a key types, plain, with Shift and with AltGr.

A keyboard-wedge scanner does not send characters, it presses keys as if a person with a given
keyboard layout typed them; the scanner's "keyboard country" setting and ours must agree or `/`
arrives as `-`. Each layout is one table keyed by kernel key *names* (`KEY_A`), so this module
needs no evdev import (names are resolved to codes where evdev is in use) and a new layout is one
more table in `LAYOUTS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from string import ascii_lowercase
from types import MappingProxyType
from typing import Mapping

from bridge.config.readers import KEYBOARD_LAYOUTS


@dataclass(frozen=True, slots=True)
class Layout:
    """`keys` maps a key name to 2 or 3 characters: plain, with Shift, and (if any) with AltGr."""

    name: str
    keys: Mapping[str, str]
    # Dead keys type nothing until the next key: dead key + Space is the accent itself (de `^`).
    dead: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        for key, chars in self.keys.items():
            if not 2 <= len(chars) <= 3:
                raise ValueError(f"layout {self.name}: {key} needs 2 or 3 characters, got {chars!r}")

    def char(self, key_name: str, shift: bool, altgr: bool) -> str | None:
        """The character typed, or None when this layout has none for that key and level."""
        chars = self.keys.get(key_name)
        if chars is None:
            return None
        if altgr:
            return chars[2] if len(chars) == 3 else None
        return chars[1] if shift else chars[0]


def _letters(swap: Mapping[str, str] = MappingProxyType({})) -> dict[str, str]:
    """Letter keys; `swap` relabels keys whose letter differs (QWERTZ: KEY_Y types z)."""
    table = {}
    for letter in ascii_lowercase:
        typed = swap.get(letter, letter)
        table[f"KEY_{letter.upper()}"] = typed + typed.upper()
    return table


# Keys that type the same on every layout here. Keypad keys ignore Shift: scanners that send
# digits as keypad codes (a common "emulate keypad" setting) mean digits whatever the modifiers.
_COMMON = {
    "KEY_SPACE": "  ",
    **{f"KEY_KP{d}": d + d for d in "0123456789"},
    "KEY_KPDOT": "..",
    "KEY_KPSLASH": "//",
    "KEY_KPASTERISK": "**",
    "KEY_KPMINUS": "--",
    "KEY_KPPLUS": "++",
    "KEY_KPEQUAL": "==",
}

US = Layout(
    name="us",
    keys=MappingProxyType(
        {
            **_COMMON,
            **_letters(),
            "KEY_1": "1!", "KEY_2": "2@", "KEY_3": "3#", "KEY_4": "4$", "KEY_5": "5%",
            "KEY_6": "6^", "KEY_7": "7&", "KEY_8": "8*", "KEY_9": "9(", "KEY_0": "0)",
            "KEY_MINUS": "-_", "KEY_EQUAL": "=+",
            "KEY_LEFTBRACE": "[{", "KEY_RIGHTBRACE": "]}", "KEY_BACKSLASH": "\\|",
            "KEY_SEMICOLON": ";:", "KEY_APOSTROPHE": "'\"", "KEY_GRAVE": "`~",
            "KEY_COMMA": ",<", "KEY_DOT": ".>", "KEY_SLASH": "/?",
            "KEY_102ND": "<>",
        }
    ),
)  # fmt: skip

UK = Layout(
    name="uk",
    keys=MappingProxyType(
        {
            **US.keys,
            "KEY_2": '2"', "KEY_3": "3£", "KEY_4": "4$€",
            "KEY_APOSTROPHE": "'@", "KEY_BACKSLASH": "#~", "KEY_102ND": "\\|", "KEY_GRAVE": "`¬",
        }
    ),
)  # fmt: skip

# German QWERTZ (xkb `de`, Linux console `de-latin1`): `~ @ \ { } [ ] |` need AltGr (KEY_RIGHTALT).
DE = Layout(
    name="de",
    keys=MappingProxyType(
        {
            **_COMMON,
            **_letters({"y": "z", "z": "y"}),
            "KEY_Q": "qQ@", "KEY_E": "eE€", "KEY_M": "mMµ",
            "KEY_1": "1!", "KEY_2": '2"²', "KEY_3": "3§³", "KEY_4": "4$", "KEY_5": "5%",
            "KEY_6": "6&", "KEY_7": "7/{", "KEY_8": "8([", "KEY_9": "9)]", "KEY_0": "0=}",
            "KEY_MINUS": "ß?\\", "KEY_EQUAL": "´`",
            "KEY_LEFTBRACE": "üÜ", "KEY_RIGHTBRACE": "+*~", "KEY_BACKSLASH": "#'",
            "KEY_SEMICOLON": "öÖ", "KEY_APOSTROPHE": "äÄ", "KEY_GRAVE": "^°",
            "KEY_COMMA": ",;", "KEY_DOT": ".:", "KEY_SLASH": "-_",
            "KEY_102ND": "<>|",
            "KEY_KPDOT": ",,",
        }
    ),
    dead=frozenset("^´`"),
)  # fmt: skip

LAYOUTS: Mapping[str, Layout] = MappingProxyType({layout.name: layout for layout in (US, UK, DE)})
# The configuration names the layouts without importing this module (bridge/config is a leaf).
assert tuple(sorted(LAYOUTS)) == KEYBOARD_LAYOUTS, "bridge.config.readers.KEYBOARD_LAYOUTS is out of date"


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown keyboard layout {name!r} (known: {', '.join(sorted(LAYOUTS))})") from None


# --- what the decoders treat specially (names, resolved to codes where evdev is in use) ---------

ENTER_KEYS = ("KEY_ENTER", "KEY_KPENTER")
SHIFT_KEYS = ("KEY_LEFTSHIFT", "KEY_RIGHTSHIFT")
ALTGR_KEYS = ("KEY_RIGHTALT",)
# While one of these is held a key is a shortcut, not text.
CHORD_KEYS = ("KEY_LEFTCTRL", "KEY_RIGHTCTRL", "KEY_LEFTALT", "KEY_LEFTMETA", "KEY_RIGHTMETA")
CAPSLOCK_KEY = "KEY_CAPSLOCK"
# Pressed on their own these type nothing and are not "unknown" either.
SILENT_KEYS = ("KEY_NUMLOCK", "KEY_SCROLLLOCK")

# Keypads: symbols '0'-'9', '#' (submit) and '*' (clear), as `KeypadBuffer` takes them.
# Matrix keypads (gpio-matrix-keypad) usually emit KEY_NUMERIC_*, USB keypads KEY_KP*.
KEYPAD_KEYS: Mapping[str, str] = MappingProxyType(
    {
        **{f"KEY_KP{d}": d for d in "0123456789"},
        **{f"KEY_{d}": d for d in "0123456789"},
        **{f"KEY_NUMERIC_{d}": d for d in "0123456789"},
        "KEY_KPENTER": "#",
        "KEY_ENTER": "#",
        "KEY_NUMERIC_POUND": "#",
        "KEY_KPASTERISK": "*",
        "KEY_NUMERIC_STAR": "*",
    }
)
_TOP_ROW_DIGITS = frozenset(f"KEY_{d}" for d in "0123456789")
# With Shift held the top-row digits are US symbols (Shift+3 = '#', Shift+8 = '*'); keys that are
# not top-row digits mean the same with or without Shift.
KEYPAD_SHIFTED_KEYS: Mapping[str, str] = MappingProxyType(
    {
        **{name: symbol for name, symbol in KEYPAD_KEYS.items() if name not in _TOP_ROW_DIGITS},
        "KEY_3": "#",
        "KEY_8": "*",
    }
)
