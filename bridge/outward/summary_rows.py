"""Decision summaries cross the pipe to the MQTT publisher process as rows, not as payloads.

Why: the daemon's feeder thread used to build each summary itself (a dict, `isoformat`,
`json.dumps`, the pipe line): 12 µs a decision under the deciding process's GIL, held in one run
of ~0.6 ms every `FEED_INTERVAL_S` at 1,000 decisions/s. A decision coming back from its fsync or
its log write waits that run out before it can go on (bench/feeder.py measures both forms). Now
the feeder puts a decision's fields in a list and the whole batch goes through one C-level JSON
encode (~3 µs a decision); the publisher process, under its own GIL, turns each row into the
payload the daemon sent before, key for key.

Standard library only: the publisher process imports this, and it knows nothing of doors.

A batch is one line: a JSON object (`{"topic": …, "qos": 0|1, "rows": [[…], …]}`). No other
pipe line starts with `{` (mqtt._line writes such a topic in its JSON-list form), so the
child tells them apart by the first byte.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

# The summary's keys, in the order of the row and of the payload (docs/operations.md). `at` is
# carried as seconds since the epoch (a float, which JSON round-trips exactly) and written as UTC
# with milliseconds; `latencyMs` is rounded to 0.01 ms by the publisher.
FIELDS = ("at", "reader", "door", "decision", "reason", "source", "mode", "cacheVersion", "replay", "latencyMs")
# Appended only when the site sets `publish_identities`.
IDENTITY_FIELDS = ("userId", "userName", "zoneId", "zoneName")

_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_SIZES = (len(FIELDS), len(FIELDS) + len(IDENTITY_FIELDS))


def batch_line(topic: str, qos: int, rows: list[list[Any]]) -> str:
    """The rows of consecutive summaries, as one pipe line."""
    return _ENCODE({"topic": topic, "qos": qos, "rows": rows}) + "\n"


def payload(row: list[Any]) -> str:
    """One summary's MQTT payload (compact JSON) from its row; ValueError/TypeError if not a row."""
    if len(row) not in _SIZES:
        raise ValueError(f"a summary row has {len(FIELDS)} or {_SIZES[1]} fields, not {len(row)}")
    at, latency = row[0], row[9]
    body = dict(zip(FIELDS, row))
    body["at"] = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")
    body["latencyMs"] = round(latency, 2)
    if len(row) > len(FIELDS):
        body.update(zip(IDENTITY_FIELDS, row[len(FIELDS):]))
    return _ENCODE(body)


def expand(line: str) -> tuple[str, int, list[str], int]:
    """A batch line → (topic, qos, payloads, rows that were not summaries). ValueError if the line
    is not a batch at all."""
    try:
        batch = json.loads(line)
        topic, qos, rows = batch["topic"], batch["qos"], batch["rows"]
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a batch of summaries: {e}") from None
    if not isinstance(topic, str) or qos not in (0, 1) or isinstance(qos, bool) or not isinstance(rows, list):
        raise ValueError("not a batch of summaries: topic, qos or rows of the wrong type")
    payloads, bad = [], 0
    for row in rows:
        try:
            payloads.append(payload(row))
        except (ValueError, TypeError, OverflowError, OSError):
            bad += 1
    return topic, qos, payloads, bad
