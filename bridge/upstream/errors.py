"""The few upstream failures the daemon acts on, whichever upstream raised them.

The daemon does not care whether Frontelio, SNA or Digital ID failed, only what to do next:
fall back and retry later (`UpstreamUnavailable`), fall back and tell a human
(`UpstreamRejected`, `UpstreamProtocolError`), or not ask this upstream at all
(`UpstreamNotApplicable`). Messages never quote an API key, a token or a card number.
"""

from __future__ import annotations

import re

# Anything token-shaped: a run of 16+ key/JWT/base64 characters holding both a letter and a digit.
# Messages can quote what an upstream sent (a Content-Type, a socket error); an upstream that
# echoes our API key or a credential there must not put it in a journal line or `status`.
_TOKEN_LIKE = re.compile(r"(?=[A-Za-z0-9_+=~-]*[0-9])(?=[A-Za-z0-9_+=~-]*[A-Za-z])[A-Za-z0-9_+=~-]{16,}")


def redact(text: str) -> str:
    """The one filter every upstream error message passes through (see UpstreamError)."""
    return _TOKEN_LIKE.sub("[redacted]", text)


class UpstreamError(Exception):
    """Base class: `upstream` names the adapter (`frontelio`, `sna`, `digital_id`).

    The message is redacted here, centrally, whatever an adapter put in it."""

    def __init__(self, upstream: str, message: str, *, status: int | None = None) -> None:
        super().__init__(redact(f"{upstream}: {message}"))
        self.upstream = upstream
        self.status = status


class UpstreamUnavailable(UpstreamError):
    """Transient: timeout, connect error, dropped connection, 5xx, 429 or an open circuit.

    Decide from the cache now; background work retries with back-off.
    """


class UpstreamRejected(UpstreamError):
    """The upstream answered but refuses us (401/403/402, wrong path): a human must fix config.

    `hint` says what to check; retrying without that fix only repeats the refusal.
    """

    def __init__(self, upstream: str, message: str, *, hint: str, status: int | None = None) -> None:
        super().__init__(upstream, f"{message}; {hint}", status=status)
        self.hint = hint


class UpstreamProtocolError(UpstreamError):
    """The answer does not match the documented wire format (bad JSON, wrong types, unknown
    enum value, body over the size cap): the answer cannot be trusted, so it is not used."""


class UpstreamNotApplicable(UpstreamError):
    """This upstream cannot judge this credential or source (call `accepts` first)."""


def status_error(upstream: str, what: str, status: int, rejections: dict[int, tuple[str, str]]) -> UpstreamError:
    """An HTTP status the adapter's table names → UpstreamRejected with its hint; any other →
    UpstreamProtocolError. The tables (label, hint per status) live with each adapter."""
    if status in rejections:
        label, hint = rejections[status]
        return UpstreamRejected(upstream, f"{what}: {label} ({status})", hint=hint, status=status)
    return UpstreamProtocolError(upstream, f"{what}: unexpected HTTP {status}", status=status)
