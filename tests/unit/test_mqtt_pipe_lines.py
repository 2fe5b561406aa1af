"""The daemon → publisher-process line format (bridge/outward/mqtt.py `_line`, mqtt_child `parse_line`):
every message comes back as it went in, whatever its topic and payload hold."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, strategies as st

from bridge.config.observe import MqttSection
from bridge.outward.mqtt import DecisionNote, DoorEventNote, Message, MqttPublisher, _line
from bridge.outward.mqtt_child import decode, parse_line
from bridge.outward.summary_rows import FIELDS, IDENTITY_FIELDS, batch_line
from verifier.types import AccessDecision, Decision, Reason, Source

BASE = "door-bridge/B"


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


# --- decision summaries: rows in the daemon, payloads in the publisher process -----------------

T = datetime(2026, 12, 4, 21, 40, 5, 123456, tzinfo=timezone.utc)


def _publisher(**section: object) -> MqttPublisher:
    return MqttPublisher(MqttSection(enabled=True, **section), "B", lambda: {}, reader_door={"R1": "main"},
                         clock=lambda: T)


def _decision(i: int, **kw: object) -> AccessDecision:
    return AccessDecision(Decision.GRANT if i % 2 else Decision.DENY, None if i % 2 else Reason.NO_GRANT,
                          "R1" if i % 3 else "R9", Source.CARD, cache_version=i, replay=i == 4, **kw)


def _expected(i: int, d: AccessDecision, latency: float, at: datetime) -> dict[str, object]:
    return {"at": at.isoformat(timespec="milliseconds"), "reader": d.reader_id,
            "door": "main" if d.reader_id == "R1" else None, "decision": d.decision.value,
            "reason": d.reason.value if d.reason else None, "source": "CARD", "mode": d.decided,
            "cacheVersion": i, "replay": i == 4, "latencyMs": round(latency, 2)}


def test_a_run_of_decisions_crosses_the_pipe_as_one_line_and_comes_out_as_the_documented_summaries() -> None:
    """The feeder used to build every summary itself (12 µs each under the deciding process's
    GIL, bench/feeder.py); now a run of decisions is one line of rows, and the publisher process
    writes the payloads: the same keys, in the documented order, the same values."""
    p = _publisher()
    decisions = [_decision(i) for i in range(50)]
    for i, d in enumerate(decisions):
        p._notes.append(DecisionNote(d, 0.1 + i / 7, T + timedelta(milliseconds=i)))
    p._notes.append(DoorEventNote("main", "DOOR_FORCED_OPEN", T, None))
    p._notes.append(DecisionNote(decisions[1], 2.0, T))

    lines = p._take_notes().splitlines(keepends=True)
    assert len(lines) == 3, [line[:60] for line in lines]  # 50 rows, the event, 1 row: in order
    out = [m for line in lines for m in _decoded(line)]
    assert len(out) == 52 and p._handed == 52
    assert [topic for topic, *_ in out] == [f"{BASE}/decision"] * 50 + [f"{BASE}/event", f"{BASE}/decision"]
    for i, (_, payload, retain, qos) in enumerate(out[:50]):
        body = json.loads(payload)
        assert list(body) == list(FIELDS) and (retain, qos) == (False, 0)
        assert body == _expected(i, decisions[i], 0.1 + i / 7, T + timedelta(milliseconds=i))
    assert json.loads(out[50][1]) == {"at": T.isoformat(timespec="milliseconds"), "door": "main",
                                      "type": "DOOR_FORCED_OPEN"}
    assert (out[50][3], json.loads(out[51][1])["latencyMs"]) == (1, 2.0)


def test_identities_are_in_the_rows_only_when_the_site_publishes_them_and_qos_is_the_sites() -> None:
    d = _decision(1, user_id="user_ok", user_name="Layla Hassan", zone_id="z1", zone_name="Stockroom")
    for publish, qos in ((False, 0), (True, 1)):
        p = _publisher(publish_identities=publish, decision_qos=qos)
        p._notes.append(DecisionNote(d, 1.0, T))
        line = p._take_notes()
        [(_, payload, _, got_qos)] = _decoded(line)
        body = json.loads(payload)
        assert got_qos == qos
        if publish:
            assert list(body) == [*FIELDS, *IDENTITY_FIELDS]
            assert [body[k] for k in IDENTITY_FIELDS] == ["user_ok", "Layla Hassan", "z1", "Stockroom"]
        else:
            assert list(body) == list(FIELDS)
            assert "Layla" not in line and "user_ok" not in line and "Stockroom" not in line


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
       st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_the_time_and_latency_survive_the_row_exactly(at: datetime, latency: float) -> None:
    p = _publisher()
    p._notes.append(DecisionNote(_decision(1), latency, at))
    [(_, payload, _, _)] = _decoded(p._take_notes())
    body = json.loads(payload)
    assert (body["at"], body["latencyMs"]) == (at.isoformat(timespec="milliseconds"), round(latency, 2))


def test_a_batch_line_that_is_not_ours_is_counted_not_published() -> None:
    good = json.loads(batch_line("t/decision", 0, [[T.timestamp(), "R1", None, "GRANT", None, "CARD", "cache", 1,
                                                     False, 1.5]]))["rows"][0]
    assert decode(batch_line("t/decision", 0, [good, [1, 2], [*good[:9], "slow"], good]))[1] == 2
    assert len(decode(batch_line("t/decision", 0, [good, [1, 2], good]))[0]) == 2
    for line in ("{not json\n", '{"topic":"t","qos":2,"rows":[]}\n', '{"topic":1,"qos":0,"rows":[]}\n',
                 '{"topic":"t","qos":true,"rows":[]}\n', '{"topic":"t","qos":0}\n', '{"topic":"t","qos":0,"rows":{}}\n'):
        assert decode(line) == ([], 1), line
    # A configured topic that starts with "{" is written in the JSON-list form, never as a batch.
    assert _line(Message("{odd", "x")).startswith("[") and decode(_line(Message("{odd", "x"))) == ([("{odd", "x", False, 1)], 0)


def _decoded(text: str) -> list[tuple[str, str, bool, int]]:
    out = []
    for line in text.splitlines(keepends=True):
        messages, unreadable = decode(line)
        assert unreadable == 0, line
        out.extend(messages)
    return out
