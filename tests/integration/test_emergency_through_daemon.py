"""Emergencies through the daemon (issue 16): real signed bundles, real SQLite (grants, audit,
emergency.db), gpiozero MockFactory pins driven by the test, a loopback central speaking the
bridge protocol for signed commands and replication, an injected wall clock. Scans go through
`Daemon.handle`; input edges through the real pins; relays are read off the real pin objects.

Doors: `main` (relay 17, egress, schedule: unlocked Mon-Fri 08:00-18:00 UTC, else card-only),
`vault` (relay 18, card-only), `back` (relay 19, egress, no reader). Monday 10:00 UTC unless said.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from gpiozero.pins.mock import MockFactory
from structlog.testing import capture_logs

from bridge.service.daemon import Daemon
from bridge.inputs.base import Scan
from tests.support.fakes.central import FakeCentral
from tests.support.fakes.fixtures import CENTRAL_API_KEY, key_file
from tests.support.harness import SetClock, Site, iso, make_config, wait_for
from verifier import commands
from verifier.hashing import PinHashing, hash_pin
from verifier.types import Decision, Reason, Source

MON_1000 = datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)
MON_2000 = MON_1000 + timedelta(hours=10)
FIRE, LOCKDOWN, TAMPER, POWER, ALARM_OUT = 23, 22, 24, 25, 26
SWITCH_MAIN, SWITCH_VAULT = 5, 6
RELAY = {"main": 17, "vault": 18, "back": 19}
CARDS = {"layla": "6B06C2A25E99C68EDCBE", "guard": "04A22C1A7B3F80", "boss": "0A1B2C3D4E5F",
         "admin": "0B0B0B0B0B0B", "omar": "0C0C0C0C0C0C"}
LAYLA_PIN = "4711"
PIN_HASHING = PinHashing(os.urandom(16), n=2**10)
READERS = ["MAIN-IN", "MAIN-OUT", "KEY", "VAULT", "DESK"]


def records(schedule: bool = True) -> list[dict[str, Any]]:
    far = {"startsAt": iso(MON_1000 - timedelta(days=30)), "endsAt": iso(MON_1000 + timedelta(days=30))}
    out: list[dict[str, Any]] = [
        {"type": "zone", "id": "z", "name": "Site", "readers": READERS},
        {"type": "role", "id": "security", "name": "Security"},
        {"type": "role", "id": "master", "name": "Master key", "override": True},
        {"type": "role", "id": "admin", "name": "Site admin"},
        {"type": "user", "id": "layla", "name": "Layla Hassan"},
        {"type": "user", "id": "omar", "name": "Omar Said"},
        {"type": "user", "id": "guard", "name": "Guard", "roles": ["security"]},
        {"type": "user", "id": "boss", "name": "Boss", "roles": ["master"]},
        {"type": "user", "id": "admin", "name": "Admin", "roles": ["admin"]},
        *({"type": "grant", "id": f"g_{u}", "userId": u, "zoneId": "z", **far} for u in CARDS),
        *({"type": "card", "number": n, "userId": u} for u, n in CARDS.items()),
        {"type": "passcode", "id": "pin_layla", "keyboardPwdHash": hash_pin(LAYLA_PIN, PIN_HASHING), "userId": "layla",
         "devices": ["KEY"], "startDate": far["startsAt"], "endDate": far["endsAt"]},
        {"type": "door_mode", "id": "vault", "mode": "card-only"},
    ]
    if schedule:
        out += [{"type": "schedule", "id": "office", "default": "card-only", "slots": [
                    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "mode": "unlocked"}]},
                {"type": "door_mode", "id": "main", "schedule": "office"}]
    return out


def _config(tmp_path: Path, site: Site, central: FakeCentral | None = None, **emergency: Any):
    readers = [{"type": "console", "id": r, "door": "vault" if r in ("VAULT", "DESK") else "main",
                **({"accept_pins": True} if r == "KEY" else {})} for r in READERS]
    sections: dict[str, Any] = {
        "doors": {"main": {"relay_pin": RELAY["main"], "pulse_s": 0.3, "door_switch_pin": SWITCH_MAIN},
                  "vault": {"relay_pin": RELAY["vault"], "pulse_s": 0.3, "door_switch_pin": SWITCH_VAULT},
                  "back": {"relay_pin": RELAY["back"], "pulse_s": 0.3}},
        "emergency": {"egress_doors": ["main", "back"], "fire_pin": FIRE, "fire_contact": "no",
                      "lockdown_pin": LOCKDOWN, "lockdown_override_roles": ["security"], "command_poll_s": 0.2,
                      **emergency},
    }
    if central is not None:
        key = tmp_path / "central.key"
        if not key.exists():
            key_file(key, CENTRAL_API_KEY)
        sections["upstream"] = {"http": {"retry_max_wait_s": 0.2, "retry_deadline_s": 1.0, "breaker_cooldown_s": 0.2},
                                "central": {"base_url": central.url, "api_key_file": str(key), "apply_in": "thread",
                                            "replicate_idle_s": 0.1, "batch_size": 3}}
    return make_config(tmp_path, site, readers, **sections)


class Rig:
    """A running daemon, its pins, and the test's hands on the inputs."""

    def __init__(self, daemon: Daemon, factory: MockFactory) -> None:
        self.daemon = daemon
        self.factory = factory

    def relay(self, door: str) -> bool:
        return bool(self.factory.pin(RELAY[door]).state)

    def held(self, door: str) -> bool:
        return self.daemon.doors[door].held

    async def contact(self, pin: int, closed: bool) -> None:
        """A normally-open contact closes (alarm) or opens; waits until the worker has taken it."""
        p = self.factory.pin(pin)
        p.drive_low() if closed else p.drive_high()
        await asyncio.sleep(0.15)  # the settle time (50 ms), then the worker
        await asyncio.wrap_future(self.daemon.worker.submit(lambda: None))
        await self.daemon.apply_modes()

    async def scan(self, reader: str, card: str | None = None, pin: str | None = None):
        raw, hint = (card, "card") if card is not None else (pin, "pin")
        return await self.daemon.pipeline.handle(Scan(reader, Source.KEYPAD if pin else Source.CARD, raw.encode(), hint))

    def events(self, kind: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [(e.type, e.body) for e in self.daemon.parts.outbox.recent(1000) if kind is None or e.type == kind]

    def mode(self, reader: str) -> dict[str, Any]:
        return self.daemon.health.snapshot()["doors"][self.daemon.parts.reader_door[reader]]["readers"][reader]


async def _start(config, clock: SetClock) -> tuple[Daemon, MockFactory]:
    factory = MockFactory()
    daemon = Daemon(config, pin_factory=factory, clock=clock)
    await daemon.start()
    await asyncio.wrap_future(daemon.worker.submit(lambda: None))  # read_inputs has run
    await daemon.apply_modes()
    return daemon, factory


class _Running:
    def __init__(self, config, clock: SetClock) -> None:
        self.config, self.clock = config, clock
        self.rig: Rig | None = None

    async def __aenter__(self) -> Rig:
        self.rig = Rig(*await _start(self.config, self.clock))
        return self.rig

    async def __aexit__(self, *exc: object) -> None:
        assert self.rig is not None
        await self.rig.daemon.stop()
        self.rig.factory.reset()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site()
    s.install(tmp_path, records(), now=MON_1000 - timedelta(hours=1), pin_hashing=PIN_HASHING)
    return s


@pytest.fixture
def central(site: Site) -> Iterator[FakeCentral]:
    fake = FakeCentral(bridge_id="BRIDGE-T", signing_key=site.key, pin_hashing=PIN_HASHING)
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


def _cmd(site: Site, command: str, *, key: Any = None, at: datetime = MON_1000, life_s: int = 300, **claims: Any) -> str:
    body = {"id": f"cmd_{uuid.uuid4().hex[:8]}", "command": command, "bridge": "BRIDGE-T", "nonce": uuid.uuid4().hex,
            "issued_at": iso(at), "expires_at": iso(at + timedelta(seconds=life_s)), **claims}
    return commands.sign({k: v for k, v in body.items() if v is not None}, key or site.key)


# --- fire / evacuation, lockdown, precedence ------------------------------------------------------

async def test_fire_releases_egress_doors_while_active_and_lockdown_ends_back_to_the_schedule(tmp_path: Path, site: Site) -> None:
    clock = SetClock(MON_1000)
    async with _Running(_config(tmp_path, site), clock) as rig:
        assert rig.held("main") and not rig.held("back") and not rig.relay("vault"), "the schedule holds main"
        await rig.contact(LOCKDOWN, closed=True)
        assert not rig.held("main") and not rig.relay("main"), "lockdown locks a door its schedule held open"
        assert rig.mode("MAIN-IN")["layer"] == "lockdown"
        layla = await rig.scan("VAULT", CARDS["layla"])
        assert (layla.decision, layla.reason) == (Decision.DENY, Reason.LOCKDOWN)
        boss = await rig.scan("VAULT", CARDS["boss"])
        assert (boss.decision, boss.reason) == (Decision.DENY, Reason.LOCKDOWN), "a locked-mode master role is no lockdown override"
        guard = await rig.scan("VAULT", CARDS["guard"])
        assert guard.granted, "the lockdown-override role passes"

        with capture_logs() as logs:
            await rig.contact(FIRE, closed=True)  # fire during lockdown
        [line] = [e for e in logs if e["event"] == "fire_alarm"]
        assert line["log_level"] == "warning" and line["input"] == f"GPIO{FIRE}" and "check" in line
        assert line["egressDoors"] == "back,main"
        assert rig.held("main") and rig.relay("main") and rig.held("back") and rig.relay("back")
        assert not rig.held("vault"), "a door that is not an egress door stays locked down"
        assert rig.mode("MAIN-IN")["layer"] == "evacuation"
        clock.t += timedelta(seconds=30)
        await rig.daemon.apply_modes()
        assert rig.held("main") and rig.held("back"), "held while the input is active"
        status = rig.daemon.health.snapshot()["emergency"]
        assert status["fire_active"] and status["lockdown"] == {"site": {"source": "input", "by": f"GPIO{LOCKDOWN}"}}
        assert rig.daemon.health.status_line().startswith("EVACUATION (fire input active); LOCKDOWN (site); ")
        from bridge.service.status_socket import format_status

        assert f"EMERGENCY  EVACUATION (fire input active); LOCKDOWN site (by input GPIO{LOCKDOWN})" in \
            format_status(rig.daemon.health.snapshot())

        await rig.contact(FIRE, closed=False)
        assert not rig.held("main") and not rig.held("back"), "fire over, lockdown again"
        await rig.contact(LOCKDOWN, closed=False)
        assert rig.held("main") and rig.mode("MAIN-IN")["layer"] == "schedule", "lockdown over: back to the schedule's mode"
        assert not rig.held("back")
        kinds = [k for k, _ in rig.events() if k in ("FIRE_ALARM", "FIRE_ALARM_CLEARED", "LOCKDOWN", "LOCKDOWN_ENDED")]
        assert kinds == ["LOCKDOWN", "FIRE_ALARM", "FIRE_ALARM_CLEARED", "LOCKDOWN_ENDED"]
        fire = rig.events("FIRE_ALARM")[0][1]
        assert fire["egressDoors"] == ["back", "main"] and fire["bridgeId"] == "BRIDGE-T"
        changed = [b for _, b in rig.events("DOOR_MODE_CHANGED") if b["readerId"] == "MAIN-IN"]
        assert [b["layer"] for b in changed][-4:] == ["lockdown", "evacuation", "lockdown", "schedule"]


async def test_a_normally_closed_fire_contact_with_a_cut_wire_is_an_alarm(tmp_path: Path, site: Site) -> None:
    # MockFactory's pull-up leaves an unconnected line HIGH: a normally-closed contact reads open.
    async with _Running(_config(tmp_path, site, fire_contact="nc"), SetClock(MON_2000)) as rig:
        assert rig.held("back") and rig.relay("back")
        assert [k for k, _ in rig.events("FIRE_ALARM")] == ["FIRE_ALARM"]
        await rig.contact(FIRE, closed=True)  # the contact closed again: all well
        assert not rig.held("back") and rig.events("FIRE_ALARM_CLEARED")


async def test_restart_in_lockdown_comes_back_in_lockdown(tmp_path: Path, site: Site) -> None:
    clock = SetClock(MON_1000)
    config = _config(tmp_path, site, admin_readers=["DESK"], admin_roles=["admin"])
    async with _Running(config, clock) as rig:
        await rig.scan("DESK", CARDS["admin"])  # the designated admin credential: lockdown on
        assert rig.daemon.health.snapshot()["emergency"]["lockdown"]["site"]["source"] == "credential"
        assert not rig.held("main")
    clock.t += timedelta(minutes=5)
    async with _Running(config, clock) as rig:  # a new daemon on the same state dir
        assert not rig.held("main") and not rig.relay("main")
        assert rig.mode("MAIN-IN")["layer"] == "lockdown"
        layla = await rig.scan("VAULT", CARDS["layla"])
        assert layla.reason is Reason.LOCKDOWN
        clock.t += timedelta(seconds=5)
        again = await rig.scan("DESK", CARDS["admin"])  # the admin credential again: lockdown off
        assert again.granted, "the lockdown ends before the admin's own presentation is judged"
        await rig.daemon.apply_modes()
        assert rig.held("main") and rig.mode("MAIN-IN")["layer"] == "schedule"
        assert [k for k, _ in rig.events() if k.startswith("LOCKDOWN")][-2:] == ["LOCKDOWN", "LOCKDOWN_ENDED"]


async def test_tamper_sounds_the_alarm_output_and_power_fault_locks_down(tmp_path: Path, site: Site) -> None:
    config = _config(tmp_path, site, tamper_pin=TAMPER, tamper_contact="no", tamper_action="alarm_output",
                     power_fault_pin=POWER, power_fault_contact="no", power_fault_action="lockdown",
                     alarm_output_pin=ALARM_OUT)
    async with _Running(config, SetClock(MON_1000)) as rig:
        siren = rig.factory.pin(ALARM_OUT)
        # (The console readers have no terminal under pytest and report failed; the tamper line is what is asserted.)
        assert not siren.state and "tamper input in alarm" not in rig.daemon.health.report()["problems"]
        await rig.contact(TAMPER, closed=True)
        assert siren.state and rig.events("TAMPER")
        assert rig.daemon.health.report()["state"] == "degraded" and "tamper input in alarm" in rig.daemon.health.report()["problems"]
        assert "ALARM TAMPER" in rig.daemon.health.status_line()
        await rig.contact(TAMPER, closed=False)
        assert not siren.state and rig.events("TAMPER_CLEARED")
        await rig.contact(POWER, closed=True)
        assert rig.events("POWER_FAULT") and not rig.held("main") and rig.mode("MAIN-IN")["layer"] == "lockdown"
        assert rig.events("LOCKDOWN")[-1][1]["source"] == "power_fault"


# --- duress ---------------------------------------------------------------------------------------

async def test_duress_pin_grants_as_the_normal_pin_and_its_alarm_replicates_first(tmp_path: Path, site: Site,
                                                                                 central: FakeCentral) -> None:
    site.install(tmp_path, records(schedule=False), now=MON_1000 - timedelta(minutes=30), pin_hashing=PIN_HASHING)
    clock = SetClock(MON_1000)
    central.server.fail_with(503)  # the central is away: a backlog builds up
    async with _Running(_config(tmp_path, site, central, duress_offset=1), clock) as rig:
        for _ in range(6):
            clock.t += timedelta(seconds=3)
            await rig.scan("VAULT", CARDS["omar"])
        clock.t += timedelta(seconds=3)
        normal = await rig.scan("KEY", pin=LAYLA_PIN)
        await wait_for(lambda: not rig.relay("main"), what="the first pulse ended")
        clock.t += timedelta(seconds=5)
        duress = await rig.scan("KEY", pin="4712")  # 4711 with its last digit + 1
        assert (normal.decision, normal.user_id) == (duress.decision, duress.user_id) == (Decision.GRANT, "layla")
        assert rig.daemon.doors["main"].pulses == 2, "the door opened for the duress PIN as for the normal one"
        assert normal.as_wire().keys() == duress.as_wire().keys() and "duress" not in duress.as_wire()
        [(_, alarm)] = rig.events("DURESS")
        assert alarm["userId"] == "layla" and alarm["readerId"] == "KEY" and "4712" not in str(alarm)
        wrong = await rig.scan("KEY", pin="4719")  # neither the PIN nor its duress form
        assert wrong.reason is Reason.NO_GRANT and len(rig.events("DURESS")) == 1
        assert rig.daemon.parts.outbox.depth() > 8
        # A batch already being retried when the alarm was written finishes its round (retry_deadline_s);
        # the next round reads the pending events afresh, and the alarm leads it.
        await asyncio.sleep(1.5)
        central.server.heal()
        await wait_for(lambda: len(central.events) >= 3, what="the first batch replicated")
        first = next(iter(central.events.values()))
        assert first["type"] == "DURESS", "the duress alarm leads the backlog"


# --- signed commands through the central ----------------------------------------------------------

async def test_signed_commands_lock_hold_unlock_once_and_lockdown(tmp_path: Path, site: Site, central: FakeCentral) -> None:
    clock = SetClock(MON_2000)  # after hours: main is card-only, relays idle
    async with _Running(_config(tmp_path, site, central), clock) as rig:
        assert not rig.held("main")
        central.publish_command(_cmd(site, "hold_unlocked", at=clock.t, door="main", until=iso(clock.t + timedelta(minutes=30))))
        await wait_for(lambda: rig.held("main") and rig.mode("MAIN-IN")["layer"] == "override", what="hold_unlocked applied")
        central.publish_command(_cmd(site, "lockdown_on", at=clock.t))
        await wait_for(lambda: not rig.held("main") and rig.mode("MAIN-IN")["layer"] == "lockdown", what="lockdown over the override")
        central.publish_command(_cmd(site, "unlock_once", at=clock.t, door="vault"))
        await wait_for(lambda: rig.events("COMMAND_REFUSED"), what="unlock_once refused in lockdown")
        assert rig.events("COMMAND_REFUSED")[-1][1]["refusal"] == "lockdown_in_force" and not rig.relay("vault")
        central.publish_command(_cmd(site, "lockdown_off", at=clock.t))
        await wait_for(lambda: rig.held("main"), what="back to the override after lockdown")
        central.publish_command(_cmd(site, "resume", at=clock.t, door="main"))
        await wait_for(lambda: not rig.held("main"), what="resume: back to the schedule (card-only)")
        central.publish_command(_cmd(site, "unlock_once", at=clock.t, door="vault"))
        await wait_for(lambda: rig.daemon.doors["vault"].pulses == 1, what="unlock_once pulsed")
        central.publish_command(_cmd(site, "lock", at=clock.t, door="vault"))
        await wait_for(lambda: rig.mode("VAULT")["mode"] == "locked", what="lock")
        assert (await rig.scan("VAULT", CARDS["layla"])).reason is Reason.DOOR_LOCKED
        central.publish_command(_cmd(site, "lockdown_on", at=clock.t, door="main"))  # one door only
        await wait_for(lambda: rig.mode("MAIN-IN")["layer"] == "lockdown", what="door lockdown")
        assert rig.mode("VAULT")["layer"] == "override" and rig.events("LOCKDOWN")[-1][1]["scope"] == "door"
        central.publish_command(_cmd(site, "lockdown_off", at=clock.t, door="main"))
        await wait_for(lambda: rig.mode("MAIN-IN")["layer"] == "schedule", what="door lockdown off")
        applied = [b["command"] for _, b in rig.events("COMMAND_APPLIED")]
        assert applied == ["hold_unlocked", "lockdown_on", "lockdown_off", "resume", "unlock_once", "lock",
                           "lockdown_on", "lockdown_off"]


async def test_every_bad_command_is_refused_and_audited_and_changes_nothing(tmp_path: Path, site: Site,
                                                                            central: FakeCentral) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    clock = SetClock(MON_2000)
    async with _Running(_config(tmp_path, site, central), clock) as rig:
        good = _cmd(site, "lockdown_on", at=clock.t)
        bad = {
            "bad_signature": _cmd(site, "lockdown_on", key=Ed25519PrivateKey.generate(), at=clock.t),  # foreign central
            "expired": _cmd(site, "lockdown_on", at=clock.t - timedelta(minutes=10)),
            "wrong_bridge": _cmd(site, "lockdown_on", at=clock.t, bridge="BRIDGE-OTHER"),
            "unknown_door": _cmd(site, "hold_unlocked", at=clock.t, door="garage", until=iso(clock.t + timedelta(hours=1))),
            "malformed": _cmd(site, "open_all_doors", at=clock.t),
            "not_yet_valid": _cmd(site, "lockdown_on", at=clock.t + timedelta(minutes=10)),
            "lifetime_too_long": _cmd(site, "lockdown_on", at=clock.t, life_s=2 * 86_400),
        }
        for token in bad.values():
            central.publish_command(token)
        central.publish_command("eyJhbGciOiJub25lIn0.eyJjb21tYW5kIjoibG9ja2Rvd25fb24ifQ.")  # unsigned
        await wait_for(lambda: len(rig.events("COMMAND_REFUSED")) == 8, what="eight refusals")
        assert not rig.daemon.parts.emergency.emergency.lockdowns
        central.publish_command(good)
        await wait_for(lambda: rig.events("COMMAND_APPLIED"), what="the good one")
        central.publish_command(good)  # the same signed command again: a replay
        await wait_for(lambda: len(rig.events("COMMAND_REFUSED")) == 9, what="the replay refused")
        refusals = [b["refusal"] for _, b in rig.events("COMMAND_REFUSED")]
        assert refusals == [*bad, "bad_signature", "replayed"]
        assert rig.events("COMMAND_REFUSED")[0][1]["claims"]["command"] == "lockdown_on"
    # A restart does not forget the nonce: the replay is still refused.
    async with _Running(_config(tmp_path, site, central), clock) as rig:
        central.publish_command(good)
        await wait_for(lambda: rig.events("COMMAND_REFUSED") and rig.events("COMMAND_REFUSED")[-1][1]["seq"] == 11,
                       what="the replay after restart refused")
        assert rig.events("COMMAND_REFUSED")[-1][1]["refusal"] == "replayed"


# --- anti-passback, two-person, interlock ---------------------------------------------------------

@pytest.mark.parametrize("mode", ["soft", "hard", "timed"])
async def test_antipassback_modes_through_the_daemon_and_across_a_restart(tmp_path: Path, site: Site, mode: str) -> None:
    site.install(tmp_path, records(schedule=False), now=MON_1000 - timedelta(minutes=30), pin_hashing=PIN_HASHING)
    clock = SetClock(MON_1000)
    config = _config(tmp_path, site, antipassback={"lobby": {"entry_readers": ["MAIN-IN"], "exit_readers": ["MAIN-OUT"],
                                                             "mode": mode, "reentry_s": 60, "forgive_at": "03:00"}})
    async with _Running(config, clock) as rig:
        assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted
    clock.t += timedelta(seconds=10)
    async with _Running(config, clock) as rig:  # presence survives the restart
        second = await rig.scan("MAIN-IN", CARDS["layla"])
        if mode == "soft":
            assert second.granted and rig.events("ANTIPASSBACK_VIOLATION")[-1][1]["violation"] == "already_inside"
        elif mode == "hard":
            assert (second.decision, second.reason) == (Decision.DENY, Reason.ANTIPASSBACK)
            assert rig.events("ANTIPASSBACK_VIOLATION")[-1][1]["granted"] is False
        else:
            assert second.reason is Reason.ANTIPASSBACK
            assert rig.events("ANTIPASSBACK_VIOLATION")[-1][1]["violation"] == "reentry_too_soon"
            clock.t += timedelta(seconds=61)
            assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted, "after reentry_s the same reader admits again"
        if mode != "timed":
            clock.t += timedelta(seconds=5)
            assert (await rig.scan("MAIN-OUT", CARDS["layla"])).granted
            clock.t += timedelta(seconds=5)
            assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted, "out, then in again"
            clock.t += timedelta(seconds=5)
            assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted == (mode == "soft")
        # Forgiven at 03:00 local: the next night.
        clock.t = MON_1000.replace(hour=2, minute=59) + timedelta(days=1)
        await asyncio.wrap_future(rig.daemon.worker.submit(rig.daemon.parts.emergency.tick))
        clock.t += timedelta(minutes=2)
        await asyncio.wrap_future(rig.daemon.worker.submit(rig.daemon.parts.emergency.tick))
        assert rig.events("ANTIPASSBACK_FORGIVEN")[-1][1]["forgiven"] == 1
        assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted


async def test_antipassback_forgiven_by_a_signed_command(tmp_path: Path, site: Site, central: FakeCentral) -> None:
    site.install(tmp_path, records(schedule=False), now=MON_1000 - timedelta(minutes=30), pin_hashing=PIN_HASHING)
    clock = SetClock(MON_1000)
    config = _config(tmp_path, site, central, antipassback={"lobby": {"entry_readers": ["MAIN-IN"],
                                                                      "exit_readers": ["MAIN-OUT"], "mode": "hard"}})
    async with _Running(config, clock) as rig:
        assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted
        clock.t += timedelta(seconds=5)
        assert (await rig.scan("MAIN-IN", CARDS["layla"])).reason is Reason.ANTIPASSBACK
        central.publish_command(_cmd(site, "antipassback_forgive", at=clock.t, area="lobby"))
        await wait_for(lambda: rig.events("ANTIPASSBACK_FORGIVEN"), what="forgiven")
        clock.t += timedelta(seconds=5)
        assert (await rig.scan("MAIN-IN", CARDS["layla"])).granted


async def test_two_person_rule_within_and_outside_the_window(tmp_path: Path, site: Site) -> None:
    clock = SetClock(MON_1000)
    async with _Running(_config(tmp_path, site, two_person={"vault": 10}), clock) as rig:
        first = await rig.scan("VAULT", CARDS["layla"])
        assert (first.decision, first.reason) == (Decision.DENY, Reason.TWO_PERSON_PENDING)
        clock.t += timedelta(seconds=4)
        second = await rig.scan("VAULT", CARDS["omar"])
        assert second.granted and rig.daemon.doors["vault"].pulses == 1
        clock.t += timedelta(seconds=30)
        assert (await rig.scan("VAULT", CARDS["layla"])).reason is Reason.TWO_PERSON_PENDING
        clock.t += timedelta(seconds=11)  # outside the window
        late = await rig.scan("VAULT", CARDS["omar"])
        assert late.reason is Reason.TWO_PERSON_PENDING and rig.daemon.doors["vault"].pulses == 1


async def test_interlock_blocks_one_door_while_the_other_is_open(tmp_path: Path, site: Site) -> None:
    site.install(tmp_path, records(schedule=False), now=MON_1000 - timedelta(minutes=30), pin_hashing=PIN_HASHING)
    clock = SetClock(MON_1000)
    async with _Running(_config(tmp_path, site, interlock=[["main", "vault"]]), clock) as rig:
        for switch in (SWITCH_MAIN, SWITCH_VAULT):
            rig.factory.pin(switch).drive_low()  # both doors closed (the contact to GND)
        await asyncio.sleep(0.2)
        opened = await rig.scan("VAULT", CARDS["layla"])
        assert opened.granted
        await wait_for(lambda: not rig.relay("vault"), what="the vault's pulse ended")
        rig.factory.pin(SWITCH_VAULT).drive_high()  # the vault door stands open
        await wait_for(lambda: rig.daemon.parts.door_monitors["vault"].state()["position"] == "open", what="vault open")
        clock.t += timedelta(seconds=5)
        blocked = await rig.scan("MAIN-IN", CARDS["omar"])
        assert (blocked.decision, blocked.reason) == (Decision.DENY, Reason.INTERLOCK) and not rig.relay("main")
        rig.factory.pin(SWITCH_VAULT).drive_low()
        await wait_for(lambda: rig.daemon.parts.door_monitors["vault"].state()["position"] == "closed", what="vault closed")
        clock.t += timedelta(seconds=5)
        assert (await rig.scan("MAIN-IN", CARDS["omar"])).granted


@pytest.mark.parametrize("emergency, message", [
    ({"fire_pin": 17, "egress_doors": ["main"]}, "emergency.fire_pin: GPIO 17 is also doors.main.relay_pin"),
    ({"fire_pin": 3, "egress_doors": ["garage"]}, "emergency.egress_doors.0: no door 'garage'"),
    ({"egress_doors": ["main"]}, "emergency: egress_doors needs fire_pin"),
    ({"tamper_pin": 3}, "emergency: an action of alarm_output needs alarm_output_pin"),
    ({"antipassback": {"lobby": {"entry_readers": ["NOPE"], "exit_readers": ["R"]}}}, "emergency.antipassback.lobby: no reader 'NOPE'"),
    ({"antipassback": {"lobby": {"entry_readers": ["R"], "mode": "hard"}}}, "need exit_readers"),
    ({"admin_readers": ["R"]}, "admin_readers needs admin_roles"),
    ({"interlock": [["main", "main"]]}, "an interlock pairs two different doors"),
])
def test_emergency_config_errors_name_the_key(emergency: dict, message: str) -> None:
    from bridge.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="^<config>: .*" + message.replace("(", r"\(")):
        from_dict({"doors": {"main": {"relay_pin": 17}}, "readers": [{"type": "console", "id": "R"}], "emergency": emergency})


async def test_unlock_once_is_refused_at_a_mantrap_door_while_its_partner_is_open(tmp_path: Path, site: Site,
                                                                                 central: FakeCentral) -> None:
    site.install(tmp_path, records(schedule=False), now=MON_1000 - timedelta(minutes=30), pin_hashing=PIN_HASHING)
    clock = SetClock(MON_1000)
    async with _Running(_config(tmp_path, site, central, interlock=[["main", "vault"]]), clock) as rig:
        rig.factory.pin(SWITCH_MAIN).drive_low()
        rig.factory.pin(SWITCH_VAULT).drive_high()  # the vault stands open
        await wait_for(lambda: rig.daemon.parts.door_monitors["vault"].state()["position"] == "open", what="vault open")
        central.publish_command(_cmd(site, "unlock_once", at=clock.t, door="main"))
        await wait_for(lambda: rig.events("COMMAND_REFUSED"), what="refused")
        assert rig.events("COMMAND_REFUSED")[-1][1]["refusal"] == "interlocked" and rig.daemon.doors["main"].pulses == 0
        rig.factory.pin(SWITCH_VAULT).drive_low()
        await wait_for(lambda: rig.daemon.parts.door_monitors["vault"].state()["position"] == "closed", what="vault closed")
        central.publish_command(_cmd(site, "unlock_once", at=clock.t, door="main"))
        await wait_for(lambda: rig.daemon.doors["main"].pulses == 1, what="unlock_once once the vault is shut")


async def test_a_full_emergency_db_is_loud_and_the_lockdown_still_holds(tmp_path: Path, site: Site) -> None:
    async with _Running(_config(tmp_path, site), SetClock(MON_1000)) as rig:
        conn = rig.daemon.parts.emergency.store.conn
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own SQLITE_FULL from here on
        for size in (200, 40, 1):  # fill what room the last page has left, down to the smallest row
            with pytest.raises(sqlite3.OperationalError, match="full"):
                for i in range(10_000):
                    conn.execute("INSERT INTO state VALUES (?, ?)", (f"filler-{size}-{i:05d}", "x" * size))
        with capture_logs() as logs:
            await rig.contact(LOCKDOWN, closed=True)
        assert not rig.held("main") and rig.mode("MAIN-IN")["layer"] == "lockdown" and rig.events("LOCKDOWN")
        assert [e["log_level"] for e in logs if e["event"] == "emergency_state_not_saved"] == ["error"]
