"""Door, reader and emergency events into the audit log, through the decision worker.

Events arrive from gpiozero's callback threads, OSDP's refresh thread and the emergency shell;
writing them on the worker keeps one order with the decisions and one fsync discipline. An
outbox that cannot be written is an error line with what to check, never a silent loss.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable

import structlog

from bridge.state.outbox import Outbox

log = structlog.get_logger()

Submit = Callable[..., "Future[Any]"]
DoorEventListener = Callable[[str, str], None]


class EventRecorder:
    def __init__(self, outbox: Outbox, submit: Submit, bridge_id: str, reader_door: dict[str, str],
                 listeners: list[DoorEventListener]) -> None:
        self.outbox = outbox
        self.submit = submit
        self.bridge_id = bridge_id
        self.reader_door = reader_door
        self.listeners = listeners  # (door, event type) after the event's audit row: metrics, MQTT

    def door_event(self, door: str, kind: str, body: dict[str, Any]) -> None:
        """From gpiozero's callback threads: record through the worker so order and fsync hold."""
        self.submit(self.record_door_event, door, kind, body)

    def record_door_event(self, door: str, kind: str, body: dict[str, Any]) -> None:
        try:
            self.outbox.append(kind, {"bridgeId": self.bridge_id, "door": door, **body})
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", door=door, event=kind, error=str(e)[:200],
                      check="disk space and permissions of the state dir")
        log.info("door_event", door=door, type=kind)
        self._tell(door, kind)

    def record_emergency(self, kind: str, body: dict[str, Any]) -> None:
        """On the worker: an emergency event's audit row (the shell writes its own journal line)."""
        try:
            self.outbox.append(kind, body)
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", event=kind, error=str(e)[:200], check="disk space and permissions of the state dir")
        self._tell(str(body.get("door") or ""), kind)

    def reader_event(self, reader_id: str, kind: str, body: dict[str, Any]) -> None:
        """READER_OFFLINE/ONLINE, READER_TAMPER, READER_POWER, OSDP_KEY_INSTALLED: audit rows,
        recorded through the worker like door events."""
        door = self.reader_door.get(reader_id)
        self.submit(self._record_reader_event, reader_id, door, kind, body)

    def _record_reader_event(self, reader_id: str, door: str | None, kind: str, body: dict[str, Any]) -> None:
        try:
            self.outbox.append(kind, {"bridgeId": self.bridge_id, "readerId": reader_id, "door": door, **body})
        except Exception as e:  # the outbox failing must be loud, never silent
            log.error("audit_append_failed", reader=reader_id, event=kind, error=str(e)[:200],
                      check="disk space and permissions of the state dir")
        log.info("reader_event", reader=reader_id, event=kind)

    def _tell(self, door: str, kind: str) -> None:
        for listener in self.listeners:
            listener(door, kind)
