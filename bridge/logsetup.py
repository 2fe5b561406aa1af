"""Logging: structlog events rendered as one readable key=value line each.

Under systemd (JOURNAL_STREAM set) every line starts with an sd-daemon priority prefix (`<4>` for
warning, …), which journald strips and turns into the entry's PRIORITY, so `journalctl -p warning`
works without a libsystemd dependency and `journalctl -o cat` shows the plain key=value line.
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


def configure(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """Configure once at start-up. Journal detection follows systemd's JOURNAL_STREAM contract."""
    stream = stream or sys.stderr
    journal = bool(os.environ.get("JOURNAL_STREAM")) and stream is sys.stderr
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, redact_secrets]
    if fmt == "json":
        processors += [structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()]
    else:
        processors.append(LineRenderer(journal))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
