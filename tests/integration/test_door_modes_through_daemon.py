"""Door modes through the daemon: real signed bundles, real SQLite, MockFactory relay pins, an
injected clock moved by the test. Scans go through `Daemon.handle` (parse → decide → gate → audit
→ relay), slot starts and ends through `Daemon.apply_modes` (what the daemon's 1 s timer runs).

Site zone Europe/Berlin. The door `main` has a card reader and a keypad; its schedule:
  weekdays 08:00-18:00  unlocked (first person in: a holder with role `staff`)
  weekdays 18:00-22:00  card-and-pin
  holidays 10:00-14:00  card-only  (weekday slots do not apply on a holiday)
  default               card-only
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.inputs.base import Scan
from bridge.config.site import SiteSection
from tests.support.harness import SetClock, Site, iso, make_config, relay_pulses, running
from verifier.hashing import PinHashing, hash_pin
from verifier.types import Decision, Reason, Source

CARD_R, KEYPAD_R = "MAIN-CARD", "MAIN-KEYPAD"
LAYLA_CARD, OMAR_CARD, VISITOR_CARD = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80", "0A1B2C3D4E5F"
LAYLA_PIN, OMAR_PIN = "4711", "8080"
PIN_HASHING = PinHashing(os.urandom(16), n=2**10)
# Monday 2026-06-01 in Berlin (CEST, UTC+2); 2026-06-04 is made a holiday.
MON_0700 = datetime(2026, 6, 1, 5, 0, tzinfo=timezone.utc)
HOLIDAY_0900 = datetime(2026, 6, 4, 7, 0, tzinfo=timezone.utc)


def records(*, role_grant_revoked: bool = False, omar_roles: tuple[str, ...] = ("staff",)) -> list[dict]:
    far = {"startsAt": iso(MON_0700 - timedelta(days=30)), "endsAt": iso(MON_0700 + timedelta(days=30))}
    passcode = {"startDate": iso(MON_0700 - timedelta(days=30)), "endDate": iso(MON_0700 + timedelta(days=30))}
    return [
        {"type": "zone", "id": "zone_main", "name": "Main entrance", "readers": [CARD_R, KEYPAD_R]},
        {"type": "role", "id": "staff", "name": "Staff"},
        {"type": "user", "id": "u_layla", "name": "Layla Hassan"},
        {"type": "user", "id": "u_omar", "name": "Omar Said", "roles": list(omar_roles)},
        # Layla has her own grant; Omar only the one of his role.
        {"type": "grant", "id": "g_layla", "userId": "u_layla", "zoneId": "zone_main", **far},
        {"type": "grant", "id": "g_staff", "roleId": "staff", "zoneId": "zone_main", "revoked": role_grant_revoked, **far},
        {"type": "card", "number": LAYLA_CARD, "userId": "u_layla"},
        {"type": "card", "number": OMAR_CARD, "userId": "u_omar"},
        {"type": "passcode", "id": "pin_layla", "keyboardPwdHash": hash_pin(LAYLA_PIN, PIN_HASHING),
         "userId": "u_layla", "devices": [KEYPAD_R], **passcode},
        {"type": "passcode", "id": "pin_omar", "keyboardPwdHash": hash_pin(OMAR_PIN, PIN_HASHING),
         "userId": "u_omar", "devices": [KEYPAD_R], **passcode},
        {"type": "schedule", "id": "main_hours", "default": "card-only", "slots": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "mode": "unlocked"},
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "18:00", "end": "22:00", "mode": "card-and-pin"},
            {"days": ["holiday"], "start": "10:00", "end": "14:00", "mode": "card-only"},
        ]},
        {"type": "holiday", "id": "h_0604", "date": "2026-06-04", "name": "Corpus Christi"},
        {"type": "door_mode", "id": "main", "schedule": "main_hours", "pinTimeoutS": 10, "firstPersonIn": ["staff"]},
    ]


def _config(tmp_path: Path, site: Site):
    config = make_config(tmp_path, site, [])
    return config.model_copy(update={"site": SiteSection(time_zone="Europe/Berlin", default_mode="card-only")})


def _wire(daemon) -> None:
    """Both readers of door `main`, as `[[readers]]` entries would map them (scans are handed to
    `Daemon.handle` directly instead of through a console input)."""
    daemon.parts.reader_door.update({CARD_R: "main", KEYPAD_R: "main"})


async def _scan(daemon, reader: str, text: str):
    hint = "pin" if reader == KEYPAD_R else "card"
    if not daemon.parts.reader_door:
        _wire(daemon)
    return await daemon.pipeline.handle(Scan(reader, Source.KEYPAD if hint == "pin" else Source.CARD, text.encode(), hint))


def _events(daemon, kind: str) -> list[dict]:
    return [e.body for e in daemon.parts.outbox.recent(500) if e.type == kind]


@pytest.fixture
def site() -> Site:
    return Site()


async def test_card_and_pin_grants_only_with_the_holders_own_pin_in_time(tmp_path: Path, site: Site) -> None:
    site.install(tmp_path, records(), now=MON_0700, pin_hashing=PIN_HASHING)
    clock = SetClock(MON_0700 + timedelta(hours=14))  # Monday 21:00 Berlin: card-and-pin
    async with running(_config(tmp_path, site), clock=clock) as (daemon, factory):
        relay = factory.pin(17)
        card = await _scan(daemon, CARD_R, LAYLA_CARD)
        assert (card.decision, card.reason, card.door_mode) == (Decision.DENY, Reason.PIN_REQUIRED, "card-and-pin")
        other = await _scan(daemon, KEYPAD_R, OMAR_PIN)  # a valid PIN, but Omar's
        assert (other.decision, other.reason, other.user_id) == (Decision.DENY, Reason.PIN_MISMATCH, "u_layla")
        clock.t += timedelta(seconds=3)
        own = await _scan(daemon, KEYPAD_R, LAYLA_PIN )
        assert (own.decision, own.user_id, own.zone_id) == (Decision.GRANT, "u_layla", "zone_main")
        assert daemon.doors["main"].pulses == 1  # the PIN pulsed; the card and the wrong PIN did not
        assert relay.states[-1].state or relay_pulses(relay)
        # The pairing is used up: the same PIN again without a card is CARD_REQUIRED.
        clock.t += timedelta(seconds=5)
        again = await _scan(daemon, KEYPAD_R, LAYLA_PIN )
        assert again.reason is Reason.CARD_REQUIRED
        # Too late: the PIN 11 s after the card (window 10 s).
        clock.t += timedelta(seconds=5)
        await _scan(daemon, CARD_R, LAYLA_CARD)
        clock.t += timedelta(seconds=11)
        late = await _scan(daemon, KEYPAD_R, LAYLA_PIN )
        assert late.reason is Reason.PIN_TIMEOUT
        pulses = [d for d in _events(daemon, "VERIFY") if d["decision"] == "GRANT"]
        assert [p["readerId"] for p in pulses] == [KEYPAD_R]
        assert all(d["doorMode"] == "card-and-pin" for d in _events(daemon, "VERIFY"))


async def test_unlocked_slot_holds_only_after_the_first_valid_badge_and_releases_at_its_end(tmp_path: Path, site: Site) -> None:
    site.install(tmp_path, records(), now=MON_0700, pin_hashing=PIN_HASHING)
    clock = SetClock(MON_0700 + timedelta(minutes=30))  # 07:30: card-only, before the slot
    async with running(_config(tmp_path, site), clock=clock) as (daemon, factory):
        _wire(daemon)
        relay = factory.pin(17)
        await daemon.apply_modes()
        assert not relay.state and not daemon.doors["main"].held
        clock.t = MON_0700 + timedelta(hours=1, minutes=5)  # 08:05: the unlocked slot, nobody in yet
        await daemon.apply_modes()
        assert not relay.state, "first-person-in: the slot alone does not unlock"
        status = daemon.health.snapshot()["doors"]["main"]["readers"][CARD_R]
        assert status["mode"] == "card-only" and status["first_person_in_pending"] and "pending" in status["why"]
        # Layla is admitted but has no `staff` role: she may enter, she does not start the slot.
        first = await _scan(daemon, CARD_R, LAYLA_CARD)
        assert first.granted and not daemon.doors["main"].held
        clock.t += timedelta(seconds=30)
        starter = await _scan(daemon, CARD_R, OMAR_CARD)  # staff: the first person in
        assert starter.granted
        assert daemon.doors["main"].held and relay.state
        view = daemon.health.snapshot()["doors"]["main"]
        assert view["relay_held"] and view["readers"][CARD_R]["mode"] == "unlocked"
        assert view["readers"][CARD_R]["next_change"] == "2026-06-01T16:00:00.000Z"  # 18:00 Berlin
        from bridge.service.status_socket import format_status

        text = format_status(daemon.health.snapshot())
        assert f"{CARD_R}: mode unlocked (slot mon,tue,wed,thu,fri 08:00-18:00; first person in: u_omar; " \
               f"next card-and-pin at 2026-06-01T16:00:00.000Z)" in text, text
        # While held, a GRANT does not pulse (a pulse would end the hold when its timer ran out).
        await _scan(daemon, CARD_R, LAYLA_CARD)
        assert daemon.doors["main"].held and relay.state
        clock.t = MON_0700 + timedelta(hours=11)  # 18:00: the slot ends, card-and-pin begins
        await daemon.apply_modes()
        assert not relay.state and not daemon.doors["main"].held
        changes = [(c["readerId"], c["from"], c["to"]) for c in _events(daemon, "DOOR_MODE_CHANGED")]
        assert (CARD_R, "card-only", "unlocked") in changes and (CARD_R, "unlocked", "card-and-pin") in changes
        held = [c for c in _events(daemon, "DOOR_MODE_CHANGED") if c["to"] == "unlocked"]
        assert held[0]["relay"] == "held" and "first person in: u_omar" in held[0]["why"]


async def test_the_relay_is_not_held_at_start_nor_on_an_untrusted_clock(tmp_path: Path, site: Site) -> None:
    recs = [r if r.get("type") != "door_mode" else {**r, "firstPersonIn": False} for r in records()]
    site.install(tmp_path, recs, now=MON_0700, pin_hashing=PIN_HASHING)
    clock = SetClock(MON_0700 + timedelta(hours=2))  # 09:00: inside the unlocked slot, no first-person-in
    trusted = {"ok": False}
    from bridge.service.daemon import Daemon
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    daemon = Daemon(_config(tmp_path, site), pin_factory=factory, clock=clock, clock_trusted=lambda: trusted["ok"])
    await daemon.start()
    try:
        _wire(daemon)
        relay = factory.pin(17)
        await daemon.apply_modes()
        assert not any(s.state for s in relay.states), "never energised at start, and not on an untrusted clock"
        assert "clock not trusted" in daemon.health.snapshot()["doors"]["main"]["readers"][CARD_R]["why"]
        trusted["ok"] = True
        await daemon.apply_modes()
        assert relay.state and daemon.doors["main"].held
    finally:
        await daemon.stop()
    assert not relay.state


async def test_a_holiday_overrides_the_weekly_slot(tmp_path: Path, site: Site) -> None:
    site.install(tmp_path, records(), now=MON_0700, pin_hashing=PIN_HASHING)
    clock = SetClock(HOLIDAY_0900)  # Thursday 09:00, but a holiday: the weekday unlocked slot does not apply
    async with running(_config(tmp_path, site), clock=clock) as (daemon, factory):
        starter = await _scan(daemon, CARD_R, OMAR_CARD)
        assert starter.granted and starter.door_mode == "card-only"
        assert daemon.doors["main"].pulses == 1 and not daemon.doors["main"].held  # pulsed, not held open
        view = daemon.health.snapshot()["doors"]["main"]["readers"][CARD_R]
        assert view["mode"] == "card-only" and "Corpus Christi" in view["why"]
        pin = await _scan(daemon, KEYPAD_R, LAYLA_PIN )
        assert pin.reason is Reason.CARD_REQUIRED  # card-only: a PIN alone is not enough
        assert not daemon.doors["main"].held


async def test_a_role_grant_admits_and_its_revocation_or_removing_the_role_denies(tmp_path: Path, site: Site) -> None:
    site.install(tmp_path, records(), now=MON_0700, pin_hashing=PIN_HASHING)
    clock = SetClock(MON_0700)  # 07:00: card-only
    async with running(_config(tmp_path, site), clock=clock) as (daemon, _factory):
        assert (await _scan(daemon, CARD_R, OMAR_CARD)).granted
        site.install(tmp_path, records(role_grant_revoked=True), now=MON_0700, pin_hashing=PIN_HASHING)
        clock.t += timedelta(seconds=5)  # past the replay window
        revoked = await _scan(daemon, CARD_R, OMAR_CARD)
        assert (revoked.decision, revoked.reason) == (Decision.DENY, Reason.GRANT_REVOKED)
        site.install(tmp_path, records(omar_roles=()), now=MON_0700, pin_hashing=PIN_HASHING)
        clock.t += timedelta(seconds=5)
        removed = await _scan(daemon, CARD_R, OMAR_CARD)
        assert (removed.decision, removed.reason) == (Decision.DENY, Reason.NO_GRANT)
        assert (await _scan(daemon, CARD_R, LAYLA_CARD)).granted  # her own grant is untouched
