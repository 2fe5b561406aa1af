"""The doctor's OSDP section: each configured bus, the PDs on it, and what to check for each.

Unlike the rest of the doctor this talks to the devices: a PD says who it is and whether a
session comes up only when asked. It does so through `bridge.inputs.osdp_probe`, which opens the
port exclusively (never next to a running daemon) and never changes a PD (no key handed over).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bridge.cli.doctor import RERUN, Finding, fail, ok, warn

if TYPE_CHECKING:
    from bridge.inputs.osdp_probe import BusFound, PdFound
    from bridge.config.readers import OsdpReaderConfig

def osdp_buses(readers: Iterable[Any]) -> dict[str, list[OsdpReaderConfig]]:
    """Configured OSDP readers by port, in config order."""
    buses: dict[str, list[OsdpReaderConfig]] = {}
    for reader in readers:
        if reader.type == "osdp":
            buses.setdefault(reader.port, []).append(reader)
    return buses


def probe_osdp_bus(readers: list[OsdpReaderConfig]) -> Iterable[Finding]:
    try:
        from bridge.inputs.osdp_probe import probe_bus, specs_for
    except ImportError as e:
        yield fail(f"OSDP support unavailable ({e}): `pip install libosdp` in the venv")
        return
    port, baudrate = readers[0].port, readers[0].baudrate
    found = probe_bus(port, baudrate, specs_for(readers))
    yield from describe_bus(found)


def describe_bus(found: BusFound) -> Iterable[Finding]:
    if found.held is not None:
        if "lock" in found.held.lower() or "busy" in found.held.lower():
            yield warn(f"{found.port}: held by another process (the running daemon?), so not asked: "
                       "`door-bridge status` shows its readers; `sudo systemctl stop door-bridge` to ask the PDs here")
        else:
            yield fail(f"{found.port}: cannot be opened ({found.held}): the adapter, the dialout group "
                       f"(serial ports above); {RERUN}")
        return
    answered = sum(pd.answered for pd in found.pds)
    yield ok(f"{found.port} at {found.baudrate} baud: {answered} of {len(found.pds)} configured PD(s) answered")
    for pd in found.pds:
        yield describe_pd(pd)


def describe_pd(pd: PdFound) -> Finding:
    label = f"reader {pd.reader_id} at address {pd.address}"
    about = _about(pd)
    if pd.secure and pd.problem is None:
        return ok(f"{label}: Secure Channel (AES-128) up with the key in {pd.key_source}; {about}")
    assert pd.problem is not None
    said = f"{label}: {pd.problem.text}"
    if pd.answered:
        said += f"; {about}"
    said += f"; Secure Channel: {_secure_state(pd)}; check {pd.problem.check}; {RERUN}"
    return warn(said) if pd.problem.kind == "no_key" else fail(said)


def _about(pd: PdFound) -> str:
    parts = []
    if pd.identity:
        i = pd.identity
        parts.append(f"vendor {i['vendor']}, model {i['model']}, version {i['version']}, serial {i['serial']}, "
                     f"firmware {i['firmware']}")
    else:
        parts.append("no osdp_PDID reply (identity unknown)")
    parts.append(f"capabilities {', '.join(pd.capabilities) or 'none announced'}")
    return "; ".join(parts)


def _secure_state(pd: PdFound) -> str:
    if pd.problem is not None and pd.problem.kind == "no_key":
        return "not tried (no key yet)"
    if pd.sc_capable is False:
        return "not offered by the PD (clear text only)"
    if pd.sc_capable is None:
        return "unknown (no osdp_PDCAP reply)"
    return "offered by the PD, no session on the configured key"
