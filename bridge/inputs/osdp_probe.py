"""A short look at an OSDP bus for `door-bridge doctor`: which PDs answer, who they are, what
they can do, and whether a Secure Channel session with their configured key comes up.

It runs a Control Panel of its own for a few seconds, over the daemon's `SerialChannel` and
`ReplyWatch` (the same bytes read the same way, the same diagnosis). It never changes a PD:
every PD is asked with ENFORCE_SECURE, so libosdp never falls back to the default key SCBK-D
and never sends osdp_KEYSET (it only does after an SCBK-D session, which ENFORCE_SECURE
forbids). A PD whose key file does not exist yet (install mode pending) is asked with a
throwaway random key: that tells that it answers and who it is, nothing more.

The port is opened exclusively, as the daemon opens it: while the daemon runs, the probe says
the port is held and leaves the bus alone (`door-bridge status` shows the daemon's view).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from bridge.config.readers import OsdpReaderConfig
from bridge.inputs.osdp_logic import REPLY_PDCAP, REPLY_PDID, Problem, ReplyWatch, diagnose
from bridge.inputs.osdp_reader import (
    _EVENT_NOTIFICATION,
    _NOTIF_PD_STATUS,
    _NOTIF_SC_STATUS,
    OsdpKeyError,
    SerialChannel,
    load_scbk,
    pd_info,
    sc_capable,
)

# A PD that has sent no byte at all by then does not answer (libosdp itself would go on
# retrying osdp_ID for ~9 s: 8 × (200 ms reply timeout + 800 ms wait)).
SILENT_AFTER_S = 5.0
# A PD that answers gets until then for libosdp to finish (session up, or refused); a handshake
# takes well under a second on a healthy bus, and one late reply costs libosdp's 1 s retry.
DECIDED_WITHIN_S = 15.0
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class PdSpec:
    """One configured PD, as the doctor asks it."""

    reader_id: str
    address: int
    key: bytes | None  # None: no key yet (install mode pending), or its key cannot be read
    key_source: str
    key_problem: str | None = None  # why the key could not be read (OsdpKeyError text)


@dataclass(frozen=True, slots=True)
class PdFound:
    """What one PD showed. `identity`/`capabilities` are empty when it never sent them."""

    reader_id: str
    address: int
    key_source: str
    answered: bool
    secure: bool  # a Secure Channel session on the configured key came up
    identity: dict[str, Any]
    capabilities: tuple[str, ...]
    sc_capable: bool | None
    problem: Problem | None


@dataclass(frozen=True, slots=True)
class BusFound:
    port: str
    baudrate: int
    held: str | None  # the port could not be opened: why (then `pds` is empty)
    pds: tuple[PdFound, ...]


def specs_for(readers: list[OsdpReaderConfig]) -> list[PdSpec]:
    """Key loading through the daemon's own secret loader (mode check, credentials)."""
    specs = []
    for cfg in readers:
        if cfg.install and cfg.scbk_file is not None and not cfg.scbk_file.exists():
            specs.append(PdSpec(cfg.id, cfg.address, None, cfg.key_source))
            continue
        try:
            specs.append(PdSpec(cfg.id, cfg.address, load_scbk(cfg), cfg.key_source))
        except OsdpKeyError as e:
            specs.append(PdSpec(cfg.id, cfg.address, None, cfg.key_source, key_problem=str(e)))
    return specs


class _Notes:
    """libosdp's notifications, from its refresh thread: online, offline, session state."""

    def __init__(self, count: int) -> None:
        self.lock = threading.Lock()
        self.online = [False] * count
        self.offline = [False] * count
        self.secure = [False] * count

    def __call__(self, pd: int, event: dict[str, Any]) -> int:
        if event.get("event") != _EVENT_NOTIFICATION or not 0 <= pd < len(self.online):
            return 0
        kind, arg0 = event.get("type"), bool(event.get("arg0"))
        with self.lock:
            if kind == _NOTIF_PD_STATUS:
                if arg0:
                    self.online[pd] = True
                else:
                    self.offline[pd] = True
            elif kind == _NOTIF_SC_STATUS:
                self.secure[pd] = arg0 and not event.get("arg1")
        return 0


def probe_bus(port: str, baudrate: int, specs: list[PdSpec]) -> BusFound:
    """Ask every PD on one port; returns when each has come online, been refused, or stayed silent."""
    import osdp

    watch = ReplyWatch()
    channel = SerialChannel(port, baudrate, watch)
    try:
        channel.open()
    except Exception as e:  # noqa: BLE001 - reported as the finding
        return BusFound(port, baudrate, f"{type(e).__name__}: {e}"[:200], ())
    notes = _Notes(len(specs))
    infos = [osdp.PDInfo(spec.address, channel, scbk=spec.key or secrets.token_bytes(16),
                         flags=[osdp.LibFlag.EnableNotification, osdp.LibFlag.EnforceSecure], name=f"PD-{spec.address}")
             for spec in specs]
    cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Emergency, event_handler=notes)
    try:
        cp.start()
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            with notes.lock:
                pending = [i for i, spec in enumerate(specs) if not (notes.online[i] or notes.offline[i])
                           and not (elapsed >= SILENT_AFTER_S and not watch.seen(spec.address).codes)]
            if not pending or elapsed >= DECIDED_WITHIN_S:
                break
            time.sleep(POLL_S)
        return BusFound(port, baudrate, None, tuple(_found(cp, watch, notes, i, spec) for i, spec in enumerate(specs)))
    finally:
        with contextlib.suppress(Exception):
            cp.stop()
        channel.close()


def _found(cp: Any, watch: ReplyWatch, notes: _Notes, index: int, spec: PdSpec) -> PdFound:
    seen = watch.seen(spec.address)
    info = pd_info(cp, spec.address)
    capabilities = tuple(c for c in str(info.pop("capabilities", "")).split(",") if c and c != "-")
    # libosdp keeps a placeholder id until the PD's osdp_PDID reply: show only what the PD sent.
    identity = info if REPLY_PDID in seen.codes else {}
    if REPLY_PDCAP not in seen.codes:
        capabilities = ()
    secure = notes.secure[index] and notes.online[index]
    sc = sc_capable(cp, watch, spec.address)
    problem = None
    if spec.key_problem is not None:
        problem = Problem("key_unreadable", spec.key_problem, "the key file's path, owner and mode (0600)")
    elif not secure and spec.key is None and seen.codes:
        problem = Problem("no_key", "no key yet (install = true): the daemon gives it its own key",
                          "start the daemon with this PD alone on the bus (docs/osdp.md, install mode)")
    elif not secure:
        problem = diagnose(seen, sc, install_mode=False, key_source=spec.key_source)
    return PdFound(spec.reader_id, spec.address, spec.key_source, bool(seen.codes), secure, identity, capabilities, sc, problem)
