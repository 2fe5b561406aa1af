"""The daemon → publisher-process line format (bridge/outward/mqtt.py `_line`, mqtt_child `parse_line`):
every message comes back as it went in, whatever its topic and payload hold."""

from __future__ import annotations

import json

from hypothesis import given, strategies as st

from bridge.outward.mqtt import Message, _line
from bridge.outward.mqtt_child import parse_line


TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))  # config strings are valid UTF-8


@given(TEXT.filter(bool), TEXT, st.booleans(), st.sampled_from([0, 1]))
def test_any_message_survives_the_pipe_line(topic: str, payload: str, retain: bool, qos: int) -> None:
    line = _line(Message(topic, payload, retain, qos)).encode()
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one message, one line (split on LF only)
    assert parse_line(line.decode()) == (topic, payload, retain, qos)


def test_a_json_payload_is_not_escaped_again_and_odd_names_fall_back_to_json() -> None:
    body = json.dumps({"reader": "R1", "decision": "GRANT"}, separators=(",", ":"))
    assert _line(Message("door-bridge/B/decision", body, qos=0)) == f"door-bridge/B/decision\t00\t{body}\n"
    assert _line(Message("door-bridge/B/status", "online", True)) == "door-bridge/B/status\t11\tonline\n"
    assert _line(Message("a\tb", "x", True)).startswith("[")
    assert parse_line("garbage without tabs\n") is None
    for flags in ("2", "1", "02", "21", "1 1"):
        assert parse_line(f"t\t{flags}\tx\n") is None, flags
    assert parse_line('["t","x",false,2]\n') is None and parse_line('["t","x",false,true]\n') is None
