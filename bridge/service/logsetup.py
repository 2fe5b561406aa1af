"""Logging: structlog events rendered as one readable key=value line each.

Under systemd (JOURNAL_STREAM set) every line starts with an sd-daemon priority prefix (`<4>` for
warning, …), which journald strips and turns into the entry's PRIORITY, so `journalctl -p warning`
works without a libsystemd dependency and `journalctl -o cat` shows the plain key=value line.

When stderr really is the journal stream (JOURNAL_STREAM names it) and journald's socket is there,
each line goes through the native protocol instead (bridge/service/journal.py), the same text as MESSAGE=
plus fields to filter on: READER_ID=, DOOR=, DECISION=, REASON=, SOURCE=, CACHE_VERSION=,
UPSTREAM= (when the event has them), DOOR_BRIDGE_EVENT= (the event name) and PRIORITY=. If
journald does not take an entry, that line goes to stderr as before.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

# sd-daemon(3) priorities.
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "critical": 2, "exception": 3}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Keys whose values are secrets whatever a caller passes: a last line of defence, not the first.
_SECRET_KEYS = frozenset({"api_key", "apikey", "authorization", "pin", "passcode", "token", "credential", "secret", "password"})


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


class LineRenderer:
    """`<6>decision reader=R1 decision=GRANT …`: event name first, then logfmt pairs."""

    def __init__(self, journal: bool) -> None:
        self._journal = journal
        self._logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> str:
        level = event.pop("level", name)
        message = str(event.pop("event", ""))
        rest = self._logfmt(logger, name, event) if event else ""
        prefix = f"<{_PRIORITY.get(level, 6)}>" if self._journal else ""
        head = message if self._journal else f"{level:<7} {message}"
        return f"{prefix}{head} {rest}".rstrip()


# Event keys → journal fields (docs/operations.md, "Journal fields").
JOURNAL_FIELDS = {"reader": "READER_ID", "door": "DOOR", "decision": "DECISION", "reason": "REASON",
                  "source": "SOURCE", "cache_version": "CACHE_VERSION", "upstream": "UPSTREAM"}


class JournalEntry:
    """The last processor under the journal: the same line as MESSAGE=, and the fields beside it."""

    def __init__(self) -> None:
        self._line = LineRenderer(journal=False)
        self._logfmt = structlog.processors.LogfmtRenderer(bool_as_flag=False)

    def __call__(self, logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        level = event.get("level", name)
        fields = {"PRIORITY": str(_PRIORITY.get(level, 6)), "SYSLOG_IDENTIFIER": "door-bridge",
                  "DOOR_BRIDGE_EVENT": str(event.get("event", ""))}
        for key, field in JOURNAL_FIELDS.items():
            value = event.get(key)
            if value is not None and value != "-":
                fields[field] = str(value)
        event.pop("level", None)
        message = str(event.pop("event", ""))
        rest = self._logfmt(logger, name, event) if event else ""
        return {"message": f"{message} {rest}".rstrip(), "fields": fields}


class JournalLogger:
    """Sends each entry to journald; a refused entry is written to `fallback` with its priority prefix."""

    def __init__(self, writer: Any, fallback: TextIO) -> None:
        self._writer = writer
        self._fallback = fallback

    def msg(self, message: str, fields: dict[str, str]) -> None:
        if not self._writer.send({"MESSAGE": message, **fields}):
            print(f"<{fields['PRIORITY']}>{message}", file=self._fallback, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = failure = err = log = msg


def configure(level: str = "info", fmt: str = "console", stream: TextIO | None = None,
              journal_socket: str | None = None) -> None:
    """Configure once at start-up. Journal detection follows systemd's JOURNAL_STREAM contract;
    `journal_socket` sends to that journald socket whatever the environment (tests, namespaces)."""
    from bridge.service import journal as native

    stream = stream or sys.stderr
    journal = bool(os.environ.get("JOURNAL_STREAM")) and stream is sys.stderr
    if journal_socket is None and journal and native.under_journal() and os.path.exists(native.JOURNAL_SOCKET):
        journal_socket = native.JOURNAL_SOCKET
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, redact_secrets]
    factory: Any = structlog.PrintLoggerFactory(stream)
    if fmt == "json":
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()]
    elif journal_socket is not None:
        processors.append(JournalEntry())
        logger = JournalLogger(native.JournalWriter(journal_socket), stream)
        factory = lambda *_: logger  # noqa: E731 - structlog wants a factory; one logger serves all
    else:
        processors.append(LineRenderer(journal))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
