"""Keeping every reader running, and saying which one is not.

A reader's input that raises or ends is an error in the journal and in `status`/STATUS=, then a
retry with a back-off (a cable or a driver may come back; a bug keeps failing, loudly). A
supervised reader (OSDP) tells its own health and events through the `ReaderSink` methods here.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import structlog

from bridge.inputs.base import Emit, Input
from bridge.service.audit_events import EventRecorder
from bridge.service.health import Health, ReaderState

log = structlog.get_logger()

# A reader whose input raised (or returned) is started again after a back-off that doubles from
# the first to the last value; it counts as working again once a run has lasted this long.
READER_RETRY_FIRST_S = 5.0
READER_RETRY_MAX_S = 300.0
READER_HEALTHY_AFTER_S = 60.0


class ReaderSupervisor:
    """Runs each input for ever; the `ReaderSink` of supervised readers (bridge/inputs/osdp_reader.py)."""

    def __init__(self, health: Health, recorder: EventRecorder, emit: Emit,
                 publish_status: Callable[[], None]) -> None:
        self.health = health
        self.recorder = recorder
        self.emit = emit
        self.publish_status = publish_status  # STATUS= after every change of a reader's health

    async def run(self, inp: Input) -> None:
        readers = self.health.stats.readers
        state = readers.setdefault(inp.reader_id, ReaderState())
        delay = READER_RETRY_FIRST_S
        while True:
            healthy = asyncio.get_running_loop().call_later(READER_HEALTHY_AFTER_S, self._recovered, inp.reader_id)
            try:
                await inp.run(self.emit)
                if getattr(inp, "finite", False):  # standard input at its end: nothing failed
                    log.info("reader_input_ended", reader=inp.reader_id)
                    return
                error = "the reader stopped reading (its input ended)"
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"[:200]
            finally:
                healthy.cancel()
            if not state.failed:
                delay = READER_RETRY_FIRST_S
            state.last_error, state.failures = error, state.failures + 1
            log.error("reader_failed", reader=inp.reader_id, error=error, failures=state.failures, retry_s=delay,
                      check="reader configuration, cable and device permissions; door-bridge doctor lists the devices it can open")
            if not [r for r, st in readers.items() if not st.failed]:
                log.error("no_reader_working", failed=",".join(sorted(readers)),
                          effect="no credential can be read; REX, door monitoring and the audit trail go on; the relay stays released",
                          check="journalctl -u door-bridge -p err for each reader_failed; door-bridge doctor")
            self.publish_status()
            await asyncio.sleep(delay)
            delay = min(delay * 2, READER_RETRY_MAX_S)

    def _recovered(self, reader_id: str) -> None:
        state = self.health.stats.readers.get(reader_id)
        if state is not None and state.last_error is not None:
            state.last_error = None
            log.info("reader_recovered", reader=reader_id, failures=state.failures)
            self.publish_status()

    # --- ReaderSink ---------------------------------------------------------------------------------

    def reader_event(self, reader_id: str, kind: str, body: dict[str, Any]) -> None:
        self.recorder.reader_event(reader_id, kind, body)

    def reader_offline(self, reader_id: str, problem: str | None) -> None:
        """On the event loop: a supervised reader's device stopped answering (problem) or is back (None)."""
        state = self.health.stats.readers.setdefault(reader_id, ReaderState())
        if state.offline == problem:
            return
        state.offline = problem
        self.publish_status()
