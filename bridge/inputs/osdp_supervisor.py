"""The OSDP bus's supervisor: a lost serial port reopened, offline PDs retried at a paced rate,
install mode and refused PDs reminded of — the slow, periodic half of `OsdpBus`.

The bus (bridge/inputs/osdp_reader.py) reacts to what libosdp reports; this loop looks every
`SUPERVISE_EVERY_S` at what libosdp does not report: a port that went away, a PD that never came
online since start, a back-off that has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from bridge.inputs.osdp_reader import OsdpBus, OsdpReader

log = structlog.get_logger()

SUPERVISE_EVERY_S = 0.1
# While install mode lasts, or a PD stays refused, the warning is repeated this often.
REMIND_EVERY_S = 60.0
# A PD that has not come online this long after start is reported offline (libosdp tries once).
NEVER_ONLINE_REPORT_S = 10.0


class BusSupervisor:
    def __init__(self, bus: OsdpBus) -> None:
        self.bus = bus
        self.port_warned_at: float | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_EVERY_S)
            now = time.monotonic()
            try:
                self.check_port(now)
                for reader in self.bus.readers:
                    self.check_reader(reader, now)
            except Exception as e:  # noqa: BLE001 - supervision must go on
                log.exception("osdp_supervisor_error", port=self.bus.port, error=f"{type(e).__name__}: {e}"[:200])

    def check_port(self, now: float) -> None:
        channel = self.bus.channel
        if channel.broken is None:
            if self.port_warned_at is not None:
                log.info("osdp_port_ready", port=self.bus.port)
                self.port_warned_at = None
            return
        problem = channel.broken
        try:
            channel.open()
        except Exception:  # noqa: BLE001 - reported below, retried next round
            if self.port_warned_at is None or now - self.port_warned_at >= REMIND_EVERY_S:
                self.port_problem(problem)
            return
        log.info("osdp_port_reopened", port=self.bus.port, after=problem)
        self.port_warned_at = None

    def port_problem(self, problem: str) -> None:
        self.port_warned_at = time.monotonic()
        log.error("osdp_port_unavailable", port=self.bus.port, error=problem,
                  check="the RS-485 adapter is plugged in (door-bridge doctor lists serial ports), the service user "
                        "is in the dialout group, no other program holds the port")

    def check_reader(self, reader: OsdpReader, now: float) -> None:
        state = reader.state
        cp = self.bus.cp
        if state.online or cp is None:
            if state.online and reader.installing is False and state.warned_at is not None:
                state.warned_at = None
            return
        if reader.installing and state.warned_at is not None and now - state.warned_at >= REMIND_EVERY_S:
            state.warned_at = now
            reader.log.warning("osdp_install_mode", key_file=str(reader.cfg.scbk_file), still="waiting for the PD")
        if state.offline_since is not None and not state.reported and state.next_retry_at is None:
            # Never came online at all since start: libosdp tries once, then we pace the retries.
            if now - state.offline_since > NEVER_ONLINE_REPORT_S:
                self.bus.offline(reader)
        if state.next_retry_at is not None and now >= state.next_retry_at:
            state.next_retry_at = None
            self.bus.watch.reset(reader.cfg.address)
            address = reader.cfg.address
            with contextlib.suppress(Exception):
                cp.disable_pd(address)
            if self.bus.loop is not None:
                self.bus.loop.call_later(0.1, self._enable, address)

    def _enable(self, address: int) -> None:
        cp = self.bus.cp
        if cp is not None:
            with contextlib.suppress(Exception):
                cp.enable_pd(address)
