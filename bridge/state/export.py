"""`door-bridge events export`: the audit outbox as NDJSON, for centrals with no ingest (SNA).

SNA documents no way to hand it decisions, so offline decisions stay in the outbox (bounded by
`audit.max_events`, overflow itself audited) and a technician or a site script takes them out:
one JSON object per line, oldest first, exactly the fields replication would send.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Callable, TextIO

from bridge.state.outbox import Event, Outbox
from verifier.timeutil import TimeFormatError, parse_instant

_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class SinceError(ValueError):
    """`--since` is neither an ISO 8601 instant nor a relative age like 24h."""


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO 8601 instant (no offset = UTC, the SNA rule) or an age back from now: 90m, 24h, 7d."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        return parse_instant(text, "--since")
    except TimeFormatError as e:
        raise SinceError(f"--since: {e} (give an ISO 8601 instant such as 2026-06-01T08:00:00Z, or an age: 24h, 7d)") from None


def is_offline_decision(event: Event) -> bool:
    """A decision the door took without its upstream's say (signed or learned cache, local rules)."""
    return event.type == "VERIFY" and event.body.get("online") is False


def export_events(outbox: Outbox, since: datetime, out: TextIO, *,
                  keep: Callable[[Event], bool] = lambda e: True, page: int = 1000) -> int:
    """Write every kept event at or after `since` as NDJSON; returns how many. Bounded memory."""
    since_text = since.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    after, written = 0, 0
    while events := outbox.after(after, page, since_at=since_text):
        for event in events:
            if keep(event):
                out.write(json.dumps(event.as_wire() | {"acked": event.acked}, separators=(",", ":")) + "\n")
                written += 1
        after = events[-1].seq
    return written
