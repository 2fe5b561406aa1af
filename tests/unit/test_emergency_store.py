"""emergency.db (bridge/state/emergency_store.py) on a real SQLite file, and the outbox's urgent lane:
alarm events lead the pending list ahead of an older backlog."""

from __future__ import annotations

from pathlib import Path

from bridge.state.emergency_store import EmergencyStore
from bridge.state.outbox import Outbox
from verifier.antipassback import Presence, PresenceChange


def test_state_presence_and_nonces_survive_reopening(tmp_path: Path) -> None:
    store = EmergencyStore(tmp_path / "emergency.db")
    store.save("precedence", {"lockdowns": {"*": {"source": "input", "by": "GPIO6", "atMs": 1}}, "overrides": {}})
    p = Presence("lobby", "layla", True, "IN", 5)
    store.apply_presence([PresenceChange("lobby", "layla", p), PresenceChange("lobby", "omar", Presence("lobby", "omar", False, "OUT", 6))])
    store.apply_presence([PresenceChange("lobby", "omar", None)])
    store.take_nonce("n" * 20, expires_ms=1_000, now_ms=0)
    store.close()
    again = EmergencyStore(tmp_path / "emergency.db")
    assert again.load("precedence")["lockdowns"]["*"]["by"] == "GPIO6"
    assert again.presence() == [p]
    assert again.nonce_seen("n" * 20) and not again.nonce_seen("m" * 20)
    again.take_nonce("m" * 20, expires_ms=5_000, now_ms=2_000)  # the first one has expired: forgotten
    assert not again.nonce_seen("n" * 20) and again.nonce_seen("m" * 20)
    again.close()


def test_alarm_events_lead_the_pending_backlog_then_order_resumes(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "audit.db")
    for i in range(5):
        outbox.append("VERIFY", {"decision": "DENY", "reason": "NO_GRANT", "n": i})
    duress = outbox.append("DURESS", {"userId": "layla"})
    outbox.append("VERIFY", {"decision": "GRANT", "n": 5})
    first = outbox.pending(3)
    assert [e.type for e in first] == ["DURESS", "VERIFY", "VERIFY"]
    assert [e.body.get("n") for e in first[1:]] == [0, 1]
    outbox.ack([duress.id])
    assert [e.body["n"] for e in outbox.pending(10)] == [0, 1, 2, 3, 4, 5]
    outbox.close()
