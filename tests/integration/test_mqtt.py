"""MQTT publishing against a real mosquitto on loopback: what arrives, on which topics, what is
retained, what happens when the broker dies, and that nothing on the broker can move a relay."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from structlog.testing import capture_logs

from bridge.config import ConfigError
from bridge.inputs.base import Scan
from tests.support.harness import (
    Site,
    SteppingClock,
    ever_high,
    make_config,
    relay_pulses,
    running,
    wait_for,
)
from tests.support.mqtt_broker import Broker, CertAuthority, Listener, publish_retained
from tests.support.mqtt_site import (
    BASE,
    READER,
    REVOKED,
    VALID,
    broker,  # noqa: F401  (fixture: a real mosquitto on loopback)
    config,
)
from verifier.types import Source


async def scan(daemon, raw: str):
    return await daemon.pipeline.handle(Scan(READER, Source.CARD, raw.encode()))


async def test_decisions_door_state_and_discovery_arrive_and_only_descriptions_are_retained(tmp_path, broker):
    heard = Listener(broker)
    try:
        async with running(config(tmp_path, broker.port), clock=SteppingClock()) as (daemon, factory):
            await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
            factory.pin(22).drive_low()  # door closed
            assert (await scan(daemon, VALID)).granted
            assert not (await scan(daemon, REVOKED)).granted
            await wait_for(lambda: len(heard.on(f"{BASE}/decision")) == 2, what="two decision summaries")
            await wait_for(lambda: "closed" in heard.on(f"{BASE}/door/main/position"), what="door closed")
            fingerprints = {e.body["credentialFingerprint"] for e in daemon.parts.outbox.recent(50) if e.type == "VERIFY"}
        await wait_for(lambda: heard.on(f"{BASE}/status")[-1:] == ["offline"], what="offline on clean stop")
    finally:
        heard.close()

    first, second = (json.loads(p) for p in heard.on(f"{BASE}/decision"))
    assert (first["reader"], first["door"], first["decision"], first["reason"], first["source"], first["mode"]) == (
        READER, "main", "GRANT", None, "CARD", "cache")
    assert (second["decision"], second["reason"]) == ("DENY", "GRANT_REVOKED")
    assert first["cacheVersion"] == 1 and first["latencyMs"] > 0
    everything = " ".join(p for _, p, _ in heard.messages)
    for secret in (VALID, REVOKED, "user_ok", "Layla Hassan", "Omar Said", "Stockroom", *fingerprints):
        assert secret not in everything, secret
    assert heard.on(f"{BASE}/status")[0] == "online"
    assert "none" in heard.on(f"{BASE}/door/main/alarm")
    discovery = {t: json.loads(p) for t, p, _ in heard.messages if t.startswith("homeassistant/")}
    door = discovery["homeassistant/binary_sensor/door_bridge_BRIDGE-T/main_position/config"]
    assert (door["device_class"], door["state_topic"], door["payload_on"], door["availability_topic"]) == (
        "door", f"{BASE}/door/main/position", "open", f"{BASE}/status")
    alarm = discovery["homeassistant/binary_sensor/door_bridge_BRIDGE-T/main_alarm/config"]
    assert alarm["device_class"] == "problem" and alarm["state_topic"] == f"{BASE}/door/main/alarm"
    # What a new subscriber gets from the broker now: availability and descriptions, never a state.
    late = Listener(broker)
    await asyncio.sleep(0.3)
    late.close()
    retained = {t for t, _, r in late.messages if r}
    assert retained == {f"{BASE}/status", *discovery}, retained
    assert late.on(f"{BASE}/status") == ["offline"]


async def test_door_events_and_alarms_are_published_as_they_happen(tmp_path, broker):
    heard = Listener(broker, f"{BASE}/#")
    try:
        async with running(config(tmp_path, broker.port), clock=SteppingClock()) as (daemon, factory):
            await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
            switch = factory.pin(22)
            switch.drive_low()
            await wait_for(lambda: "closed" in heard.on(f"{BASE}/door/main/position"), what="closed")
            switch.drive_high()  # forced open, then held open
            await wait_for(lambda: "forced_open" in heard.on(f"{BASE}/door/main/alarm"), what="forced-open alarm")
            await wait_for(lambda: any(json.loads(p)["type"] == "DOOR_HELD_OPEN" for p in heard.on(f"{BASE}/event")),
                           what="held-open event")
            assert heard.on(f"{BASE}/door/main/position")[-1] == "open"
            switch.drive_low()
            await wait_for(lambda: heard.on(f"{BASE}/door/main/alarm")[-1:] == ["none"], what="alarm cleared")
            await daemon.quiesce()
            audited = [e.type for e in daemon.parts.outbox.recent(50) if e.type.startswith("DOOR_")]
            # Summaries reach the publisher process at its next feed (FEED_INTERVAL_S): wait for
            # as many as were audited, then compare them one by one.
            await wait_for(lambda: len(heard.on(f"{BASE}/event")) >= len(audited), what="every audited event")
    finally:
        heard.close()
    published = [json.loads(p)["type"] for p in heard.on(f"{BASE}/event")]
    assert published == audited and {"DOOR_FORCED_OPEN", "DOOR_HELD_OPEN", "DOOR_CLOSED"} <= set(published)


@pytest.mark.parametrize("asked", [None, 1, 0])
async def test_summaries_go_at_qos_0_unless_the_site_asks_for_1_and_states_and_events_always_at_1(
        tmp_path, broker, asked):
    heard = Listener(broker, f"{BASE}/#")
    try:
        cfg = config(tmp_path, broker.port, **({} if asked is None else {"decision_qos": asked}))
        async with running(cfg, clock=SteppingClock()) as (daemon, factory):
            await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
            factory.pin(22).drive_high()  # opened without a grant: forced open
            await wait_for(lambda: heard.on(f"{BASE}/event"), what="the forced-open event")
            assert (await scan(daemon, VALID)).granted
            await wait_for(lambda: heard.on(f"{BASE}/decision"), what="the summary")
    finally:
        heard.close()
    assert heard.qos_on(f"{BASE}/decision") == {1 if asked == 1 else 0}
    for topic in ("status", "event", "door/main/position", "door/main/alarm"):
        assert heard.qos_on(f"{BASE}/{topic}") == {1}, topic


async def test_retained_commands_on_the_broker_never_reach_a_relay(tmp_path, broker):
    """esp-rfid's worst failure: a retained "open" firing at every reboot. door-bridge subscribes to nothing."""
    publish_retained(broker, {
        f"{BASE}/door/main/set": "open", f"{BASE}/command": '{"command":"unlock","door":"main"}',
        f"{BASE}/door/main/position/set": "ON", "door-bridge/BRIDGE-T/relay": "1",
        "homeassistant/status": "online", "homeassistant/lock/door_bridge_BRIDGE-T/main/set": "UNLOCK"})
    cfg = config(tmp_path, broker.port)
    for restart in range(2):
        with capture_logs() as logs:
            async with running(cfg, clock=SteppingClock()) as (daemon, factory):
                await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
                await asyncio.sleep(0.5)  # time for anything retained to be delivered, were it subscribed
                relay = factory.pin(17)
                assert not ever_high(relay), f"relay moved at start {restart}"
                assert daemon.outward.mqtt.ignored == 0
                assert (await scan(daemon, VALID)).granted  # the door still works as usual
                await wait_for(lambda: len(relay_pulses(relay)) == 1, what="the one pulse a grant gives")
                assert daemon.health.stats.decisions == 1
                await asyncio.sleep(0.3)  # the relay released before the next start
        assert not [e for e in logs if e["event"] == "mqtt_message_ignored"]
    log = broker.log_text()
    assert "Received SUBSCRIBE from door-bridge-BRIDGE-T" not in log
    assert log.count("New client connected") >= 3 and "as door-bridge-BRIDGE-T" in log


async def test_broker_killed_and_restarted_decisions_go_on_and_the_bridge_reconnects(tmp_path, broker):
    with capture_logs() as logs:
        async with running(config(tmp_path, broker.port), clock=SteppingClock()) as (daemon, factory):
            mqtt = daemon.outward.mqtt
            await wait_for(lambda: mqtt.connected, what="bridge connected")
            broker.kill()
            await wait_for(lambda: not mqtt.connected, what="bridge noticed the broker gone")
            shown = daemon.health.snapshot()["mqtt"]
            assert shown["connected"] is False and shown["last_error"], shown
            decided = []
            for raw in (VALID, REVOKED, VALID):
                decided.append(await scan(daemon, raw))  # every scan is decided and audited meanwhile
            assert [d.decision.value for d in decided] == ["GRANT", "DENY", "GRANT"]
            await daemon.quiesce()
            assert sum(e.type == "VERIFY" for e in daemon.parts.outbox.recent(50)) == 3
            before = len(broker.log_text())
            broker.start()  # same port
            await wait_for(lambda: mqtt.connected, timeout=20, what="bridge reconnected")

            def received(topic: str) -> int:
                # mosquitto's own log of every PUBLISH it took after the restart (a subscriber started
                # now could miss the first ones: the bridge may reconnect before it subscribes).
                return sum(1 for line in broker.log_text()[before:].splitlines()
                           if "Received PUBLISH from door-bridge-BRIDGE-T (d0" in line and f"'{topic}'" in line)

            await wait_for(lambda: received(f"{BASE}/decision") == 3, what="the three queued summaries")
            assert received(f"{BASE}/status") >= 1
            assert mqtt.dropped == 0
    events = [e["event"] for e in logs]
    assert events.count("mqtt_connected") == 2 and events.count("mqtt_disconnected") == 1, events


async def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path, broker):
    async with running(config(tmp_path, broker.port, queue_size=10), clock=SteppingClock()) as (daemon, _):
        mqtt = daemon.outward.mqtt
        await wait_for(lambda: mqtt.connected, what="bridge connected")
        broker.kill()
        await wait_for(lambda: not mqtt.connected, what="broker gone")
        for _ in range(25):
            await scan(daemon, REVOKED)
        await daemon.quiesce()
        assert daemon.health.stats.decisions == 25
        # 25 summaries into a queue of 10 (door states may take places too); the publisher process
        # counts what it drops and tells the daemon within COUNTS_EVERY_S.
        await wait_for(lambda: mqtt.dropped >= 15, timeout=5, what="drops counted")


async def test_tls_with_a_test_ca_and_credentials_from_a_file(tmp_path):
    ca = CertAuthority(tmp_path / "pki")
    broker = Broker(tmp_path / "broker", tls=ca, users={"door-lobby": "s3cret-mqtt-pass"}).start()
    password = tmp_path / "mqtt-password"
    password.write_text("s3cret-mqtt-pass\n")
    os.chmod(password, 0o600)
    heard = Listener(broker, f"{BASE}/#", tls=ca, auth=("door-lobby", "s3cret-mqtt-pass"))
    try:
        cfg = config(tmp_path, broker.port, tls=True, ca_file=str(ca.ca_file), username="door-lobby",
                     password_file=str(password))
        with capture_logs() as logs:
            async with running(cfg, clock=SteppingClock()) as (daemon, _):
                await wait_for(lambda: daemon.outward.mqtt.connected, what="TLS connection")
                await scan(daemon, VALID)
                await wait_for(lambda: len(heard.on(f"{BASE}/decision")) == 1, what="summary over TLS")
        assert "s3cret-mqtt-pass" not in repr(logs)
        # A broker whose certificate this CA did not sign: no connection, a clear log line, decisions go on.
        other = CertAuthority(tmp_path / "other")
        cfg = config(tmp_path / "second", broker.port, tls=True, ca_file=str(other.ca_file), username="door-lobby",
                     password_file=str(password))
        with capture_logs() as logs:
            async with running(cfg, clock=SteppingClock()) as (daemon, _):
                await wait_for(lambda: any(e["event"] == "mqtt_disconnected" for e in logs), what="TLS refusal logged")
                assert not daemon.outward.mqtt.connected
                assert (await scan(daemon, VALID)).granted
        refusal = next(e for e in logs if e["event"] == "mqtt_disconnected")
        assert "CERTIFICATE_VERIFY_FAILED" in refusal["error"] or "certificate verify failed" in refusal["error"]
    finally:
        heard.close()
        broker.kill()


def test_mqtt_settings_that_cannot_work_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="mqtt: a password needs a username"):
        make_config(tmp_path, Site(), [], mqtt={"enabled": True, "password_file": "/etc/x"})
    with pytest.raises(ConfigError, match="mqtt: ca_file/cert_file given but tls = false"):
        make_config(tmp_path, Site(), [], mqtt={"enabled": True, "ca_file": "/etc/x"})
    with pytest.raises(ConfigError, match="mqtt.topic_prefix"):
        make_config(tmp_path, Site(), [], mqtt={"enabled": True, "topic_prefix": "a/#"})
    for qos in (2, True, "1"):
        with pytest.raises(ConfigError, match="mqtt.decision_qos"):
            make_config(tmp_path, Site(), [], mqtt={"enabled": True, "decision_qos": qos})


async def test_an_unreadable_password_file_stops_the_start_with_its_key(tmp_path):
    loose = tmp_path / "pw"
    loose.write_text("x\n")
    os.chmod(loose, 0o644)
    cfg = config(tmp_path, 1883, username="u", password_file=str(loose))
    with pytest.raises(ConfigError, match=r"^mqtt.password_file: "):
        async with running(cfg):
            pass
