"""Door I/O on gpiozero's MockFactory: the tests drive the real mock input pins and read the output
pins' `states` histories. Waits poll with deadlines; no test asserts that anything was fast.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from structlog.testing import capture_logs

from bridge.config import DoorSection
from bridge.door.relay import Relay
from bridge.door.monitor import DoorMonitor
from tests.support.harness import relay_pulses
from verifier.types import AccessDecision, Decision, Reason, Source

RELAY, SWITCH, REX, LED_PIN, BUZZER, AUX = 17, 5, 6, 13, 19, 26
ALL = {"door_switch_pin": SWITCH, "rex_pin": REX, "led_pin": LED_PIN, "buzzer_pin": BUZZER, "aux_relay_pin": AUX}


@dataclass
class Sink:
    """The daemon's side of `on_event`, noting where the relay was when each event arrived."""

    relay_pin: Any
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    relay_at_event: list[bool] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, kind: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.events.append((kind, body))
            self.relay_at_event.append(bool(self.relay_pin.state))

    def types(self) -> list[str]:
        with self.lock:
            return [k for k, _ in self.events]

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for k, b in self.events if k == kind]

    def clear(self) -> None:
        with self.lock:
            self.events.clear()
            self.relay_at_event.clear()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def active_spells(pin: Any, active_high: bool = True) -> list[float]:
    """Completed spells (s) at the active level, from the moment gpiozero made the pin an output."""
    states = pin.states[1:]  # states[0] is the mock pin before it was claimed
    return [states[i + 1].timestamp for i, s in enumerate(states[:-1])
            if bool(s.state) == active_high and bool(states[i + 1].state) != active_high]


def decision(d: Decision, reason: Reason | None = None) -> AccessDecision:
    return AccessDecision(decision=d, reason=reason, reader_id="R1", source=Source.CARD)


class Rig:
    def __init__(self, factory: MockFactory, clock: Callable[[], float] = time.monotonic,
                 settle_s: float = 0.05, closed: bool = True, **door: Any) -> None:
        self.factory = factory
        self.cfg = DoorSection(relay_pin=RELAY, pulse_s=door.pop("pulse_s", 0.2), **door)
        self.door = Relay("main", self.cfg, factory)
        self.relay = factory.pin(RELAY)
        self.sink = Sink(self.relay)
        self.io = DoorMonitor(self.door, self.cfg, factory, self.sink, clock=clock, settle_s=settle_s)
        if closed and self.cfg.door_switch_pin is not None:
            self.close_door()
            wait_until(lambda: self.io.state()["position"] == "closed", "door to settle closed")
            self.sink.clear()

    @property
    def switch(self) -> Any:
        return self.factory.pin(SWITCH)

    def open_door(self) -> None:
        (self.switch.drive_high if self.cfg.door_closed_level == "low" else self.switch.drive_low)()

    def close_door(self) -> None:
        (self.switch.drive_low if self.cfg.door_closed_level == "low" else self.switch.drive_high)()

    def press_rex(self) -> None:
        self.factory.pin(REX).drive_low()
        self.factory.pin(REX).drive_high()

    def shut(self) -> None:
        self.io.close()
        self.door.close()


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def rigs(factory: MockFactory) -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        rig = Rig(factory, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.shut()


# --- start and shutdown ----------------------------------------------------------------------------


def test_nothing_is_energised_at_start(rigs):
    rig = rigs(**ALL, aux_relay_mode="alarm")
    for pin in (RELAY, AUX, LED_PIN, BUZZER):
        assert not any(s.state for s in rig.factory.pin(pin).states), f"GPIO{pin} went active at start"
    assert rig.io.state() == {"relay": "released", "position": "closed", "alarm": None}


def test_active_low_aux_relay_idles_high_from_the_first_moment(rigs):
    rig = rigs(aux_relay_pin=AUX, aux_relay_active_high=False)
    aux = rig.factory.pin(AUX)
    assert aux.state is True and all(s.state for s in aux.states[1:])


def test_close_releases_both_relays_and_silences_the_reader(rigs):
    rig = rigs(**ALL, pulse_s=5.0, aux_relay_mode="grant")
    rig.door.pulse()
    rig.io.authorised("grant")
    rig.io.set_offline(True)
    rig.io.feedback(decision(Decision.DENY, Reason.NO_GRANT))
    assert rig.relay.state and rig.factory.pin(AUX).state
    rig.io.close()
    for pin in (RELAY, AUX, LED_PIN, BUZZER):
        assert not rig.factory.pin(pin).state, f"GPIO{pin} still active after close"
    assert rig.io.state()["relay"] == "released"


# --- request to exit -----------------------------------------------------------------------------


def test_rex_records_an_event_then_pulses_the_relay_once(rigs):
    rig = rigs(rex_pin=REX, pulse_s=0.2)
    rig.press_rex()
    wait_until(lambda: len(rig.relay.states) >= 3 and not rig.relay.state, "the REX pulse to end")
    (pulse,) = relay_pulses(rig.relay)
    assert pulse >= 0.2
    assert rig.sink.events == [("REX", {"door": "main"})]
    assert rig.sink.relay_at_event == [False], "REX must be recorded before the relay moves"


def test_door_opened_after_rex_is_authorised(rigs):
    rig = rigs(rex_pin=REX, door_switch_pin=SWITCH)
    rig.press_rex()
    rig.open_door()
    wait_until(lambda: len(rig.sink.events) >= 2, "the opening")
    assert rig.sink.events == [("REX", {"door": "main"}), ("DOOR_OPENED", {"door": "main", "authorisedBy": "rex"})]


# --- forced open ---------------------------------------------------------------------------------


def test_grant_then_opening_is_no_alarm(rigs):
    rig = rigs(door_switch_pin=SWITCH, held_open_s=30.0)
    with capture_logs() as logs:
        rig.door.pulse()
        rig.io.authorised("grant")
        rig.open_door()
        wait_until(lambda: rig.sink.events, "the opening")
        rig.close_door()
        wait_until(lambda: len(rig.sink.events) >= 2, "the closing")
    assert rig.sink.types() == ["DOOR_OPENED", "DOOR_CLOSED"]
    assert rig.sink.events[0][1] == {"door": "main", "authorisedBy": "grant"}
    assert rig.sink.events[1][1]["alarmCleared"] == []
    assert not [entry for entry in logs if entry["log_level"] == "warning"]
    assert rig.io.state()["alarm"] is None


def test_opening_with_no_grant_raises_one_forced_open_alarm_and_one_warning(rigs):
    rig = rigs(door_switch_pin=SWITCH, aux_relay_pin=AUX, aux_relay_mode="alarm", held_open_s=30.0)
    aux = rig.factory.pin(AUX)
    with capture_logs() as logs:
        rig.open_door()
        wait_until(lambda: rig.sink.events, "the forced-open alarm")
        assert rig.io.state() == {"relay": "released", "position": "open", "alarm": "forced_open"}
        assert aux.state, "aux relay in alarm mode must energise while the alarm is active"
        rig.close_door()
        wait_until(lambda: len(rig.sink.events) >= 2, "the closing")
    assert rig.sink.events[0] == ("DOOR_FORCED_OPEN", {"door": "main"})
    closed = rig.sink.events[1]
    assert closed[0] == "DOOR_CLOSED" and closed[1]["alarmCleared"] == ["DOOR_FORCED_OPEN"]
    assert len(rig.sink.events) == 2
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "door_forced_open" and warnings[0]["door"] == "main"
    assert "door-bridge events tail" in warnings[0]["check"]
    assert not aux.state and rig.io.state()["alarm"] is None
    assert not relay_pulses(rig.relay), "an alarm must never move the main relay"


def test_opening_within_the_grace_after_the_pulse_is_authorised_and_after_it_is_forced(rigs):
    now = [1000.0]
    rig = rigs(door_switch_pin=SWITCH, pulse_s=0.1, forced_open_grace_s=1.0, held_open_s=30.0,
               clock=lambda: now[0])
    rig.door.pulse()
    rig.io.authorised("grant")
    wait_until(lambda: len(rig.relay.states) >= 3 and not rig.relay.state, "the pulse to end")
    now[0] += 0.1 + 0.9  # released, but inside the grace
    rig.open_door()
    wait_until(lambda: rig.sink.events, "the first opening")
    rig.close_door()
    wait_until(lambda: len(rig.sink.events) >= 2, "the first closing")
    now[0] += 0.2  # now 1.1 s after the pulse ended: outside the grace
    rig.open_door()
    wait_until(lambda: len(rig.sink.events) >= 3, "the second opening")
    assert rig.sink.types() == ["DOOR_OPENED", "DOOR_CLOSED", "DOOR_FORCED_OPEN"]


def test_opening_while_the_relay_is_energised_is_authorised_by_the_relay(rigs):
    rig = rigs(door_switch_pin=SWITCH, pulse_s=5.0)
    rig.door.pulse()  # e.g. a pulse the daemon did not announce through authorised()
    rig.open_door()
    wait_until(lambda: rig.sink.events, "the opening")
    assert rig.sink.events == [("DOOR_OPENED", {"door": "main", "authorisedBy": "relay"})]


def test_closed_level_high_uses_the_opposite_sense(rigs):
    rig = rigs(door_switch_pin=SWITCH, door_closed_level="high", held_open_s=30.0)
    assert rig.switch.state is True  # settled closed in Rig()
    rig.open_door()
    wait_until(lambda: rig.sink.events, "the forced-open alarm")
    assert rig.sink.types() == ["DOOR_FORCED_OPEN"]


# --- held open -----------------------------------------------------------------------------------


def test_held_open_raises_one_alarm_and_one_warning_then_close_clears_it(rigs):
    rig = rigs(door_switch_pin=SWITCH, held_open_s=0.2, aux_relay_pin=AUX, aux_relay_mode="alarm")
    with capture_logs() as logs:
        rig.door.pulse()
        rig.io.authorised("grant")
        rig.open_door()
        wait_until(lambda: "DOOR_HELD_OPEN" in rig.sink.types(), "the held-open alarm")
        assert rig.io.state()["alarm"] == "held_open" and rig.factory.pin(AUX).state
        time.sleep(0.5)  # well past another held_open_s: the timer must not repeat
        assert rig.sink.types() == ["DOOR_OPENED", "DOOR_HELD_OPEN"]
        rig.close_door()
        wait_until(lambda: "DOOR_CLOSED" in rig.sink.types(), "the closing")
    assert rig.sink.of("DOOR_HELD_OPEN") == [{"door": "main", "heldOpenS": 0.2}]
    assert rig.sink.of("DOOR_CLOSED")[0]["alarmCleared"] == ["DOOR_HELD_OPEN"]
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == ["door_held_open"]
    assert "door closer" in warnings[0]["check"]
    assert rig.io.state()["alarm"] is None and not rig.factory.pin(AUX).state


def test_closing_in_time_cancels_the_held_open_timer(rigs):
    rig = rigs(door_switch_pin=SWITCH, held_open_s=0.3, rex_pin=REX)
    rig.press_rex()
    rig.open_door()
    wait_until(lambda: "DOOR_OPENED" in rig.sink.types(), "the opening")
    rig.close_door()
    wait_until(lambda: "DOOR_CLOSED" in rig.sink.types(), "the closing")
    time.sleep(0.6)
    assert rig.sink.types() == ["REX", "DOOR_OPENED", "DOOR_CLOSED"]


def test_forced_door_left_open_also_reports_held_open_once(rigs):
    rig = rigs(door_switch_pin=SWITCH, held_open_s=0.2)
    rig.open_door()
    wait_until(lambda: "DOOR_HELD_OPEN" in rig.sink.types(), "the held-open alarm")
    rig.close_door()
    wait_until(lambda: "DOOR_CLOSED" in rig.sink.types(), "the closing")
    assert rig.sink.types() == ["DOOR_FORCED_OPEN", "DOOR_HELD_OPEN", "DOOR_CLOSED"]
    assert rig.sink.of("DOOR_CLOSED")[0]["alarmCleared"] == ["DOOR_FORCED_OPEN", "DOOR_HELD_OPEN"]


def test_door_found_open_at_start_is_not_forced_but_is_reported_held_open(rigs):
    rig = rigs(door_switch_pin=SWITCH, held_open_s=0.2, closed=False)  # pull-up: the contact reads open
    assert rig.io.state()["position"] == "open"
    wait_until(lambda: rig.sink.events, "the held-open alarm")
    assert rig.sink.types() == ["DOOR_HELD_OPEN"]


# --- switch bounce -------------------------------------------------------------------------------


def test_contact_bounce_gives_one_event_per_real_change_and_a_knock_gives_none(rigs):
    # A wide settle time keeps this test independent of scheduling on a loaded machine: each burst
    # below is driven in microseconds, far inside it.
    rig = rigs(door_switch_pin=SWITCH, held_open_s=30.0, settle_s=0.3)
    for _ in range(5):
        rig.open_door()
        rig.close_door()
    rig.open_door()
    wait_until(lambda: rig.sink.events, "the opening")
    for _ in range(5):
        rig.close_door()
        rig.open_door()
    rig.close_door()
    wait_until(lambda: len(rig.sink.events) >= 2, "the closing")
    rig.open_door()  # a knock: open and closed again within the settle time
    rig.close_door()
    time.sleep(0.6)
    assert rig.sink.types() == ["DOOR_FORCED_OPEN", "DOOR_CLOSED"]
    assert rig.io.state()["position"] == "closed"


# --- LED and buzzer ------------------------------------------------------------------------------


def _finished(pin: Any, spells: int, active_high: bool = True) -> Callable[[], bool]:
    return lambda: len(active_spells(pin, active_high)) >= spells and bool(pin.state) != active_high


def test_grant_lights_the_led_for_the_pulse_and_beeps_once(rigs):
    rig = rigs(led_pin=LED_PIN, buzzer_pin=BUZZER, pulse_s=0.2)
    led, buzzer = rig.factory.pin(LED_PIN), rig.factory.pin(BUZZER)
    rig.io.feedback(decision(Decision.GRANT))
    wait_until(_finished(led, 1), "the LED to go out")
    wait_until(_finished(buzzer, 1), "the beep")
    (lit,) = active_spells(led)
    assert lit >= 0.2
    assert len(active_spells(buzzer)) == 1


def test_deny_blinks_three_times_and_beeps_twice(rigs):
    rig = rigs(led_pin=LED_PIN, buzzer_pin=BUZZER)
    led, buzzer = rig.factory.pin(LED_PIN), rig.factory.pin(BUZZER)
    rig.io.feedback(decision(Decision.DENY, Reason.OUT_OF_DATE_WINDOW))
    wait_until(_finished(led, 3), "three blinks")
    wait_until(_finished(buzzer, 2), "two beeps")
    time.sleep(0.2)
    assert len(active_spells(led)) == 3 and len(active_spells(buzzer)) == 2


def test_rate_limited_is_one_long_beep(rigs):
    rig = rigs(led_pin=LED_PIN, buzzer_pin=BUZZER)
    buzzer = rig.factory.pin(BUZZER)
    rig.io.feedback(decision(Decision.DENY, Reason.RATE_LIMITED))
    wait_until(_finished(buzzer, 1), "the long beep")
    (beep,) = active_spells(buzzer)
    assert beep >= 1.0


def test_active_low_led_and_buzzer_idle_high_and_pulse_low(rigs):
    rig = rigs(led_pin=LED_PIN, buzzer_pin=BUZZER, led_active_high=False, buzzer_active_high=False)
    led, buzzer = rig.factory.pin(LED_PIN), rig.factory.pin(BUZZER)
    assert all(s.state for s in led.states[1:]) and all(s.state for s in buzzer.states[1:])
    rig.io.feedback(decision(Decision.DENY, Reason.NO_GRANT))
    wait_until(_finished(led, 3, active_high=False), "three low blinks")
    wait_until(_finished(buzzer, 2, active_high=False), "two low beeps")
    assert len(active_spells(led, active_high=False)) == 3
    assert led.state is True and buzzer.state is True


def test_offline_winks_between_decisions_and_stops_when_back_online(rigs):
    rig = rigs(led_pin=LED_PIN)
    led = rig.factory.pin(LED_PIN)
    rig.io.set_offline(True)
    wait_until(_finished(led, 1), "the first idle wink")
    rig.io.feedback(decision(Decision.DENY, Reason.NO_GRANT))
    wait_until(_finished(led, 4), "the deny pattern")
    wait_until(_finished(led, 5), "the idle wink to resume after the pattern")
    rig.io.set_offline(False)
    settled = len(led.states)
    time.sleep(0.3)
    assert led.state is False and len(led.states) <= settled + 1


# --- aux relay, absent parts, failures -----------------------------------------------------------


def test_aux_relay_in_grant_mode_pulses_with_the_main_relay(rigs):
    rig = rigs(aux_relay_pin=AUX, rex_pin=REX, pulse_s=0.2)
    aux = rig.factory.pin(AUX)
    rig.door.pulse()
    rig.io.authorised("grant")
    wait_until(lambda: len(relay_pulses(aux)) == 1 and not aux.state, "the aux pulse")
    rig.press_rex()
    wait_until(lambda: len(relay_pulses(aux)) == 2 and not aux.state, "the aux pulse for REX")
    assert all(p >= 0.2 for p in relay_pulses(aux))


def test_aux_relay_in_alarm_mode_ignores_grants(rigs):
    rig = rigs(aux_relay_pin=AUX, aux_relay_mode="alarm")
    rig.io.authorised("grant")
    assert not any(s.state for s in rig.factory.pin(AUX).states)


def test_a_door_with_only_a_relay_accepts_every_call(rigs):
    rig = rigs()
    rig.io.authorised("grant")
    rig.io.feedback(decision(Decision.GRANT))
    rig.io.set_offline(True)
    assert rig.io.state() == {"relay": "released", "position": "unknown", "alarm": None}
    assert rig.sink.events == []


def test_a_failing_event_sink_does_not_stop_request_to_exit(factory):
    cfg = DoorSection(relay_pin=RELAY, pulse_s=0.2, rex_pin=REX)
    door = Relay("main", cfg, factory)

    def disk_full(kind: str, body: dict[str, Any]) -> None:
        raise OSError("database or disk is full")

    io = DoorMonitor(door, cfg, factory, disk_full)
    try:
        with capture_logs() as logs:
            factory.pin(REX).drive_low()
            factory.pin(REX).drive_high()
        relay = factory.pin(RELAY)
        wait_until(lambda: len(relay.states) >= 3 and not relay.state, "the REX pulse")
        assert len(relay_pulses(relay)) == 1
        (error,) = [entry for entry in logs if entry["log_level"] == "error"]
        assert error["event"] == "door_event_not_recorded" and error["type"] == "REX"
    finally:
        io.close()
        door.close()


def test_after_close_inputs_are_ignored(rigs):
    rig = rigs(door_switch_pin=SWITCH, rex_pin=REX)
    rig.io.close()
    rig.press_rex()
    time.sleep(0.2)
    assert rig.sink.events == [] and not relay_pulses(rig.relay)


def test_feedback_and_aux_pulses_start_no_thread_on_the_deciding_thread(rigs, monkeypatch):
    """feedback() and authorised() run on the decision worker inside a batch: gpiozero's blink()/beep()
    and a threading.Timer per pattern would start (and join) threads there for every scan."""
    rig = rigs(led_pin=LED_PIN, buzzer_pin=BUZZER, aux_relay_pin=AUX, aux_relay_mode="grant", pulse_s=0.05)
    led = rig.factory.pin(LED_PIN)
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self)
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    for _ in range(5):
        rig.io.authorised("grant")
        rig.io.feedback(decision(Decision.GRANT))
        rig.io.feedback(decision(Decision.DENY, Reason.NO_GRANT))
    wait_until(_finished(led, 3), "the last pattern's three blinks")
    assert started == [], f"{len(started)} threads started for 15 feedback/aux calls"
    assert len(relay_pulses(rig.factory.pin(AUX))) >= 1


def test_a_door_held_unlocked_by_its_schedule_is_not_held_open_until_the_hold_ends(rigs):
    """An `unlocked` slot holds the relay and people leave the door open: that is the point, not
    an alarm. Once the hold ends, a door still open is held open again after held_open_s."""
    rig = rigs(door_switch_pin=SWITCH, held_open_s=0.2)
    rig.door.hold()
    rig.open_door()
    wait_until(lambda: "DOOR_OPENED" in rig.sink.types(), "the opening")
    time.sleep(0.6)  # three times held_open_s, while held
    assert "DOOR_HELD_OPEN" not in rig.sink.types()
    rig.door.release_hold()
    wait_until(lambda: "DOOR_HELD_OPEN" in rig.sink.types(), "the held-open alarm after the hold ended")
