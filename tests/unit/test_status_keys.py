"""`door-bridge status --json` speaks one key case, snake_case, in every part of it.

The status JSON is read by technicians' scripts and by fleet tools; a document that says
`last_error` at the top and `lastError` two levels down makes every reader guess. (Audit event
bodies are a different thing: they follow the central's wire format, camelCase, and are not
checked here.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bridge.central.handback import HandbackState
from bridge.central.replicator import ReplicationState
from bridge.central.sync import SyncState

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
# Maps keyed by the site's own names (reader ids, door names, upstream names): data, not schema.
NAMED = (".readers", ".doors", ".learned.upstreams")
NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def keys_not_snake(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        bad = [] if path.endswith(NAMED) else [f"{path}.{k}" for k in value if not SNAKE.match(str(k))]
        return bad + [p for k, v in value.items() for p in keys_not_snake(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for v in value for p in keys_not_snake(v, f"{path}[]")]
    return []


def test_the_central_parts_of_status_are_snake_case() -> None:
    sync = SyncState(version=3, last_sync_at=NOW, last_error="503", last_error_at=NOW)
    replication = ReplicationState()
    replication.last_success_at = NOW
    handback = HandbackState()
    parts = {"sync": sync.as_status(), "replication": replication.as_status(NOW), "handback": handback.as_status()}
    assert keys_not_snake(parts) == []
    assert parts["sync"]["last_sync_at"] == NOW.isoformat(timespec="seconds")
    assert parts["sync"]["last_error"] == "503"
    assert parts["replication"]["last_success_at"] == NOW.isoformat(timespec="seconds")
    assert "cursor_seq" in parts["handback"]


def test_the_check_sees_a_camel_case_key_deep_down() -> None:
    assert keys_not_snake({"a": {"b_c": [{"lastError": 1}]}}) == [".a.b_c[].lastError"]


async def test_a_running_daemons_whole_status_is_snake_case(tmp_path) -> None:
    from tests.support.harness import SetClock, Site, door_records, make_config, running

    site = Site()
    site.install(tmp_path, door_records("R1"))
    cfg = make_config(tmp_path, site, [{"type": "console", "id": "R1"}],
                      doors={"main": {"relay_pin": 17, "door_switch_pin": 22}})
    async with running(cfg, clock=SetClock()) as (daemon, _factory):
        snapshot = daemon.health.snapshot()
    assert snapshot["readers"] and snapshot["doors"]["main"]["position"] in ("open", "closed")
    assert keys_not_snake(snapshot) == []
