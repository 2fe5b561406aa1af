"""The one narrow interface every input implements, and the value it produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Protocol

from verifier.types import Source

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from verifier.wiegand_formats import WiegandFormat

# What the bytes of a scan are, when the input knows better than the text parser:
#   None   — text as a keyboard-wedge / serial scanner types it; `verifier.credentials.parse` decides
#   "card" — a card number / UID the hardware read (NFC UID, Wiegand number)
#   "pin"  — digits typed on a keypad
Hint = Literal["card", "pin"] | None


@dataclass(frozen=True, slots=True)
class Scan:
    reader_id: str
    source: Source
    raw: bytes = field(repr=False)
    hint: Hint = None
    # time.monotonic() when the scan was complete (last byte/bit), for scan-to-relay latency.
    at_monotonic: float = 0.0


Emit = Callable[[Scan], None]


@dataclass(frozen=True, slots=True)
class InputContext:
    """What a reader may need besides its own section, the same for every type, so every
    `create(cfg, context)` has one signature: the GPIO pin factory (Wiegand's data lines; None is
    gpiozero's default) and the site's `[wiegand_formats]`, built (Wiegand, OSDP card bits)."""

    pin_factory: Factory | None = None
    site_formats: dict[str, WiegandFormat] | None = None


class Input(Protocol):
    """An input runs until cancelled and survives its device going away and coming back.

    `run` is a coroutine on the daemon's event loop; blocking device reads belong in a thread
    (`asyncio.to_thread` or a dedicated thread) and hand scans back with `emit`, which is safe to
    call from any thread.
    """

    reader_id: str

    async def run(self, emit: Emit) -> None: ...
