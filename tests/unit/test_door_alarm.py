"""The door's alarm rules as a pure state machine: plain numbers in, events and timer requests out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.door.alarm import CLOSED, FORCED_OPEN, HELD_OPEN, NOTHING, OPENED, AlarmTimes, DoorAlarm

TIMES = AlarmTimes(pulse_s=3.0, forced_open_grace_s=2.0, held_open_s=30.0)


def kinds(step) -> list[str]:
    return [kind for kind, _ in step.events]


def test_an_opening_soon_after_a_grant_is_authorised_and_arms_the_held_timer() -> None:
    alarm = DoorAlarm(TIMES)
    alarm.authorise("grant", now=100.0)
    step = alarm.position(True, now=104.9, relay_energised=False)  # 3 s pulse + 1.9 s of the 2 s grace
    assert step.events == ((OPENED, {"authorisedBy": "grant"}),)
    assert step.raised is None
    assert step.arm_held == 1


def test_an_opening_after_the_grace_is_forced_and_raises_one_alarm_instead_of_opened() -> None:
    alarm = DoorAlarm(TIMES)
    alarm.authorise("rex", now=100.0)
    step = alarm.position(True, now=105.1, relay_energised=False)
    assert kinds(step) == [FORCED_OPEN]
    assert step.raised == FORCED_OPEN
    assert alarm.active_alarms() == ["forced_open"]


def test_an_energised_relay_authorises_an_opening_with_no_recent_grant() -> None:
    alarm = DoorAlarm(TIMES)
    step = alarm.position(True, now=50.0, relay_energised=True)
    assert step.events == ((OPENED, {"authorisedBy": "relay"}),)


def test_a_reading_equal_to_the_known_position_is_no_event() -> None:
    alarm = DoorAlarm(TIMES)
    assert alarm.position(False, now=1.0, relay_energised=False) is NOTHING
    alarm.position(True, now=2.0, relay_energised=True)
    assert alarm.position(True, now=3.0, relay_energised=False) is NOTHING


def test_held_open_is_raised_once_by_its_own_opening_and_cleared_by_the_closing() -> None:
    alarm = DoorAlarm(TIMES)
    step = alarm.position(True, now=10.0, relay_energised=False)  # forced
    held = alarm.held_timer(step.arm_held, held_by_mode=False)
    assert held.events == ((HELD_OPEN, {"heldOpenS": 30.0}),)
    assert held.raised == HELD_OPEN
    assert alarm.active_alarms() == ["forced_open", "held_open"]
    closed = alarm.position(False, now=52.34, relay_energised=False)
    assert closed.events == ((CLOSED, {"openForS": 42.3, "alarmCleared": [FORCED_OPEN, HELD_OPEN]}),)
    assert closed.cleared == (FORCED_OPEN, HELD_OPEN)
    assert closed.cancel_held
    assert alarm.active_alarms() == []


def test_a_late_timer_for_an_earlier_opening_does_nothing() -> None:
    alarm = DoorAlarm(TIMES)
    first = alarm.position(True, now=0.0, relay_energised=True).arm_held
    alarm.position(False, now=1.0, relay_energised=False)
    alarm.position(True, now=2.0, relay_energised=True)
    assert alarm.held_timer(first, held_by_mode=False) is NOTHING
    assert alarm.active_alarms() == []


def test_a_door_held_unlocked_by_its_mode_is_looked_at_again_not_alarmed() -> None:
    alarm = DoorAlarm(TIMES)
    opening = alarm.position(True, now=0.0, relay_energised=True).arm_held
    again = alarm.held_timer(opening, held_by_mode=True)
    assert again.events == () and again.arm_held == opening
    assert kinds(alarm.held_timer(opening, held_by_mode=False)) == [HELD_OPEN]


def test_found_open_at_start_raises_no_forced_alarm_but_can_be_held_open() -> None:
    alarm = DoorAlarm(TIMES)
    step = alarm.open_at_start(now=0.0)
    assert step.events == () and step.arm_held == 1
    assert kinds(alarm.held_timer(1, held_by_mode=False)) == [HELD_OPEN]


_inputs = st.lists(
    st.one_of(
        st.tuples(st.just("authorise"), st.sampled_from(["grant", "rex"])),
        st.tuples(st.just("position"), st.booleans(), st.booleans()),
        st.tuples(st.just("timer"), st.integers(0, 6), st.booleans()),
        st.tuples(st.just("wait"), st.floats(0.0, 40.0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(_inputs)
def test_each_opening_yields_exactly_one_opening_event_and_each_closing_clears_all(script) -> None:
    alarm = DoorAlarm(TIMES)
    now = 0.0
    openings = closings = opening_events = 0
    raised: list[str] = []
    for step_input in script:
        op = step_input[0]
        if op == "wait":
            now += step_input[1]
            continue
        if op == "authorise":
            alarm.authorise(step_input[1], now)
            continue
        was_open = alarm.is_open
        if op == "position":
            step = alarm.position(step_input[1], now, relay_energised=step_input[2])
            if step_input[1] and not was_open:
                openings += 1
            if not step_input[1] and was_open:
                closings += 1
                assert step.cleared == tuple(raised)
                raised = []
        else:
            step = alarm.held_timer(step_input[1], held_by_mode=step_input[2])
            assert alarm.is_open == was_open  # a timer never moves the door
        opening_events += sum(k in (OPENED, FORCED_OPEN) for k in kinds(step))
        if step.raised is not None:
            assert step.raised not in raised  # an alarm is raised once per opening
            raised.append(step.raised)
        assert [FORCED_OPEN, HELD_OPEN].count(step.raised) <= 1
    assert opening_events == openings
    assert closings <= openings
