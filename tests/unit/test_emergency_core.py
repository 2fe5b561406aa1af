"""The pure cores of issue 16: precedence (verifier/emergency.py), signed commands, anti-passback,
two-person rule, interlock, duress — values in, values out, no daemon. A hypothesis state machine
drives inputs, commands and credentials and checks the precedence invariants after every step."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import hypothesis.strategies as st
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from verifier import commands
from verifier.antipassback import AntiPassback, ApbMode, Area, Presence
from verifier.door_mode import DoorModes, DoorPolicy, Mode
from verifier.duress import DuressRule
from verifier.emergency import Emergency, EmergencySettings, Layer, Trigger
from verifier.interlock import DoorState, Interlock
from verifier.schedule import Schedule, parse_slot
from verifier.two_person import TwoPerson
from verifier.types import AccessDecision, Decision, Reason, Source

T = 1_780_000_000_000  # ms
KEY = Ed25519PrivateKey.generate()  # the central's pinned key
FOREIGN = Ed25519PrivateKey.generate()
ROLES = {"guard": frozenset({"security"}), "boss": frozenset({"master"}), "layla": frozenset()}


def _modes(emergency: Emergency, schedule_mode: str = "card-only") -> DoorModes:
    """Two doors: `front` (egress) on a schedule that is always `schedule_mode`, `vault` fixed card-only."""
    sched = Schedule("s", (parse_slot({"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00",
                                        "end": "24:00", "mode": schedule_mode}, "s", frozenset(m.value for m in Mode)),),
                     "card-only")
    return DoorModes([DoorPolicy("front", None, schedule_id="s"), DoorPolicy("vault", None, mode=Mode.CARD_ONLY)],
                     {"s": sched}, ZoneInfo("UTC"), reader_door={"F": "front", "V": "vault"},
                     override_roles=frozenset({"master"}), roles_of=lambda u: ROLES.get(u, frozenset()),
                     precedence=emergency.apply)


def _emergency() -> Emergency:
    return Emergency(EmergencySettings(egress_doors=frozenset({"front"}), lockdown_override_roles=frozenset({"security"}),
                                       tamper_action="lockdown", admin_readers=frozenset({"V"}), admin_roles=frozenset({"security"})))


def _grant(reader: str, user: str | None) -> AccessDecision:
    return AccessDecision(Decision.GRANT, None, reader, Source.CARD, user_id=user, fingerprint=f"card:{user}")


def test_the_precedence_table_evacuation_over_lockdown_over_override_over_schedule() -> None:
    e = _emergency()
    modes = _modes(e, "unlocked")
    assert (modes.effective("F", T).mode, modes.effective("F", T).layer) == (Mode.UNLOCKED, "schedule")
    assert modes.effective("V", T).layer == "normal"
    e.set_override("front", Mode.LOCKED, T + 60_000, Trigger("command", "c1", T))
    assert (modes.effective("F", T).mode, modes.effective("F", T).layer) == (Mode.LOCKED, "override")
    e.set_lockdown(True, None, Trigger("input", "GPIO22", T))
    assert {(r, modes.effective(r, T).mode, modes.effective(r, T).layer) for r in "FV"} == {
        ("F", Mode.LOCKED, "lockdown"), ("V", Mode.LOCKED, "lockdown")}
    e.set_fire(True, "GPIO23", T)
    assert (modes.effective("F", T).mode, modes.effective("F", T).layer) == (Mode.UNLOCKED, "evacuation")
    assert modes.effective("V", T).layer == "lockdown", "a door that is not an egress door stays locked down"
    e.set_fire(False, "GPIO23", T + 1)
    e.set_lockdown(False, None, Trigger("input", "GPIO22", T + 2))
    assert modes.effective("F", T + 3).layer == "override"
    assert (modes.effective("F", T + 60_000).mode, modes.effective("F", T + 60_000).layer) == (Mode.UNLOCKED, "schedule")
    assert [ev.type for ev in e.take_events()] == ["DOOR_OVERRIDE", "LOCKDOWN", "FIRE_ALARM", "FIRE_ALARM_CLEARED", "LOCKDOWN_ENDED"]


def test_lockdown_admits_only_the_lockdown_override_role_not_the_locked_mode_master() -> None:
    e = _emergency()
    modes = _modes(e)
    e.set_lockdown(True, "vault", Trigger("command", "c2", T))
    assert modes.gate(_grant("V", "guard"), "card", None, T).decision.granted
    master = modes.gate(_grant("V", "boss"), "card", None, T).decision
    assert (master.decision, master.reason) == (Decision.DENY, Reason.LOCKDOWN)
    assert modes.gate(_grant("F", "layla"), "card", None, T).decision.granted, "a door lockdown is that door only"


def test_tamper_with_action_lockdown_locks_the_site_and_stays_until_released() -> None:
    e = _emergency()
    e.set_alarm("tamper", True, "GPIO24", T)
    assert e.locked_down("front") and e.locked_down("vault")
    e.set_alarm("tamper", False, "GPIO24", T + 5000)
    assert e.locked_down("front"), "a closed cabinet does not prove nobody is inside"
    assert [ev.type for ev in e.take_events()] == ["TAMPER", "LOCKDOWN", "TAMPER_CLEARED"]


def test_admin_credential_toggles_the_site_lockdown() -> None:
    e = _emergency()
    assert not e.admin_presented("F", "guard", ROLES["guard"], T), "only at an admin reader"
    assert not e.admin_presented("V", "layla", ROLES["layla"], T), "only an admin holder"
    assert e.admin_presented("V", "guard", ROLES["guard"], T) and e.locked_down("front")
    assert e.admin_presented("V", "guard", ROLES["guard"], T + 1) and not e.locked_down("front")


def test_lockdown_and_overrides_survive_a_snapshot_restore() -> None:
    e = _emergency()
    e.set_lockdown(True, None, Trigger("input", "GPIO22", T))
    e.set_override("vault", Mode.UNLOCKED, T + 10, Trigger("command", "c", T))
    again = _emergency()
    again.restore(e.snapshot())
    assert again.locked_down("front") and again.layer("vault", T) is Layer.LOCKDOWN
    again.set_lockdown(False, None, Trigger("input", "GPIO22", T))
    assert again.layer("vault", T) is Layer.OVERRIDE and again.layer("vault", T + 10) is None


# --- precedence invariants under random inputs, commands and credentials --------------------------

class Precedence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.e = _emergency()
        self.modes = _modes(self.e, "unlocked")
        self.now = T

    @rule(active=st.booleans())
    def fire(self, active: bool) -> None:
        self.e.set_fire(active, "GPIO23", self.now)

    @rule(on=st.booleans(), door=st.sampled_from([None, "front", "vault"]))
    def lockdown(self, on: bool, door: str | None) -> None:
        self.e.set_lockdown(on, door, Trigger("command", "c", self.now))

    @rule(door=st.sampled_from(["front", "vault"]), mode=st.sampled_from([Mode.UNLOCKED, Mode.LOCKED, None]),
          for_s=st.integers(1, 100))
    def override(self, door: str, mode: Mode | None, for_s: int) -> None:
        self.e.set_override(door, mode, self.now + for_s * 1000, Trigger("command", "c", self.now))

    @rule(kind=st.sampled_from(["lockdown_on", "lockdown_off", "hold_unlocked"]), foreign=st.booleans(),
          bridge=st.sampled_from(["BRIDGE-1", "BRIDGE-2"]), expired=st.booleans())
    def command(self, kind: str, foreign: bool, bridge: str, expired: bool) -> None:
        """A signed command: applied only if it is ours, addressed here and in time; else nothing changes."""
        import uuid

        from verifier.timeutil import from_ms, iso

        at = self.now - (600_000 if expired else 0)
        claims = {"id": "c", "command": kind, "bridge": bridge, "nonce": uuid.uuid4().hex, "issued_at": iso(from_ms(at)),
                  "expires_at": iso(from_ms(at + 300_000)),
                  **({"door": "front", "until": iso(from_ms(self.now + 60_000))} if kind == "hold_unlocked" else {})}
        before = self.e.snapshot()
        checked = commands.check(commands.sign(claims, FOREIGN if foreign else KEY), KEY.public_key(),
                                 bridge_id="BRIDGE-1", doors=frozenset({"front", "vault"}), now_ms=self.now,
                                 nonce_seen=lambda _n: False)
        c = checked.command
        if foreign or bridge != "BRIDGE-1" or expired:
            assert c is None and self.e.snapshot() == before
            return
        assert c is not None
        if c.kind is commands.CommandKind.HOLD_UNLOCKED:
            self.e.set_override("front", Mode.UNLOCKED, c.until_ms, Trigger("command", c.id, self.now))
        else:
            self.e.set_lockdown(c.kind is commands.CommandKind.LOCKDOWN_ON, None, Trigger("command", c.id, self.now))

    @rule(active=st.booleans())
    def tamper(self, active: bool) -> None:
        self.e.set_alarm("tamper", active, "GPIO24", self.now)

    @rule(s=st.integers(0, 120))
    def wait(self, s: int) -> None:
        self.now += s * 1000
        self.e.expire(self.now)

    @rule(reader=st.sampled_from(["F", "V"]), user=st.sampled_from(["guard", "boss", "layla"]))
    def present(self, reader: str, user: str) -> None:
        door = {"F": "front", "V": "vault"}[reader]
        d = self.modes.gate(_grant(reader, user), "card", None, self.now).decision
        fire_egress = self.e.fire_active and door == "front"
        if self.e.locked_down(door) and not fire_egress:
            assert d.granted == (user == "guard"), "nothing but a lockdown override passes during lockdown"

    @invariant()
    def egress_never_locked_while_fire(self) -> None:
        if self.e.fire_active:
            eff = self.modes.effective("F", self.now)
            assert (eff.mode, eff.layer) == (Mode.UNLOCKED, "evacuation")

    @invariant()
    def lockdown_locks_unless_evacuating(self) -> None:
        for reader, door in (("F", "front"), ("V", "vault")):
            eff = self.modes.effective(reader, self.now)
            if self.e.locked_down(door) and not (self.e.fire_active and door == "front"):
                assert (eff.mode, eff.layer) == (Mode.LOCKED, "lockdown")

    @invariant()
    def no_emergency_means_the_schedule(self) -> None:
        for reader, door in (("F", "front"), ("V", "vault")):
            if self.e.layer(door, self.now) is None:
                assert self.modes.effective(reader, self.now).layer in ("schedule", "normal")


TestPrecedence = Precedence.TestCase
TestPrecedence.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


# --- signed commands ----------------------------------------------------------------------------

def _claims(**kw: object) -> dict:
    return {"id": "cmd_1", "command": "hold_unlocked", "bridge": "BRIDGE-1", "door": "main",
            "until": "2026-06-01T12:00:00Z", "nonce": "n" * 20, "issued_at": "2026-06-01T10:00:00Z",
            "expires_at": "2026-06-01T10:05:00Z", **kw}


NOW_MS = 1_780_308_060_000  # 2026-06-01T10:01:00Z


def _check(token: str, seen: set[str] = frozenset(), trusted: bool = True) -> commands.Checked:  # type: ignore[assignment]
    return commands.check(token, KEY.public_key(), bridge_id="BRIDGE-1", doors=frozenset({"main"}), now_ms=NOW_MS,
                          nonce_seen=seen.__contains__, clock_trusted=trusted)


def test_a_valid_signed_command_is_accepted() -> None:
    c = _check(commands.sign(_claims(), KEY)).command
    assert c is not None and (c.kind, c.door, c.until_ms) == (commands.CommandKind.HOLD_UNLOCKED, "main", 1_780_315_200_000)


@pytest.mark.parametrize("token, refusal", [
    (commands.sign(_claims(), FOREIGN), "bad_signature"),
    ("eyJhbGciOiJub25lIn0.eyJjb21tYW5kIjoibG9jayJ9.", "bad_signature"),
    (commands.sign(_claims(bridge="BRIDGE-2"), KEY), "wrong_bridge"),
    (commands.sign(_claims(door="back"), KEY), "unknown_door"),
    (commands.sign(_claims(expires_at="2026-06-01T10:00:30Z"), KEY), "expired"),
    (commands.sign(_claims(issued_at="2026-06-01T11:00:00Z", expires_at="2026-06-01T11:05:00Z"), KEY), "not_yet_valid"),
    (commands.sign(_claims(expires_at="2026-06-03T10:00:00Z"), KEY), "lifetime_too_long"),
    (commands.sign(_claims(command="self_destruct"), KEY), "malformed"),
    (commands.sign(_claims(nonce="short"), KEY), "malformed"),
    (commands.sign(_claims(door=None), KEY), "malformed"),
])
def test_every_kind_of_bad_command_is_refused_with_its_reason(token: str, refusal: str) -> None:
    checked = _check(token)
    assert checked.command is None and checked.refusal == refusal


def test_a_replayed_nonce_and_an_untrusted_clock_are_refused() -> None:
    token = commands.sign(_claims(), KEY)
    assert _check(token, {"n" * 20}).refusal == "replayed"
    assert _check(token, trusted=False).refusal == "clock_untrusted"


# --- anti-passback, two-person, interlock, duress ----------------------------------------------

def _apb(mode: ApbMode, presence: list[Presence] | None = None) -> AntiPassback:
    return AntiPassback([Area("lab", frozenset({"IN"}), frozenset({"OUT"}), mode, reentry_s=300)], presence)


@pytest.mark.parametrize("mode, second_entry_allowed", [(ApbMode.SOFT, True), (ApbMode.HARD, False)])
def test_antipassback_soft_records_and_hard_denies_a_second_entry(mode: ApbMode, second_entry_allowed: bool) -> None:
    apb = _apb(mode)
    assert apb.check("u", "IN", T).allow
    apb.passed("u", "IN", T)
    v = apb.check("u", "IN", T + 1000)
    assert (v.allow, v.violation) == (second_entry_allowed, "already_inside")
    assert [e.type for e in apb.take_events()] == ["ANTIPASSBACK_VIOLATION"]
    assert apb.check("u", "OUT", T + 2000).allow
    apb.passed("u", "OUT", T + 2000)
    assert apb.check("u", "OUT", T + 3000).violation == "not_inside"


def test_antipassback_timed_refuses_reentry_at_the_same_reader_within_the_time() -> None:
    apb = _apb(ApbMode.TIMED)
    apb.passed("u", "IN", T)
    assert apb.check("u", "IN", T + 299_000).violation == "reentry_too_soon"
    assert apb.check("u", "IN", T + 300_000).allow


def test_antipassback_presence_is_restored_and_forgiven() -> None:
    apb = _apb(ApbMode.HARD)
    apb.passed("u", "IN", T)
    [change] = apb.take_changes()
    again = _apb(ApbMode.HARD, [change.presence])  # as the store gives it back after a restart
    assert not again.check("u", "IN", T + 1).allow
    assert again.forgive(None, None, "command cmd_9", T + 2) == 1
    assert again.check("u", "IN", T + 3).allow
    assert [c.presence for c in again.take_changes()] == [None]


def test_two_person_needs_two_distinct_holders_within_the_window() -> None:
    tp = TwoPerson({"vault": 10})
    assert not tp.present("vault", "a", T).opens
    assert not tp.present("vault", "a", T + 1000).opens, "the same holder twice is one person"
    assert tp.present("vault", "b", T + 5000).opens
    assert not tp.present("vault", "a", T + 20_000).opens
    assert not tp.present("vault", "b", T + 31_000).opens, "outside the window: a new first person"


def test_interlock_blocks_while_the_partner_is_open_or_unlocked() -> None:
    il = Interlock([("outer", "inner")])
    closed = DoorState(open=False, unlocked=False)
    assert il.blocking("outer", {"inner": closed}) is None
    assert il.blocking("outer", {"inner": DoorState(open=True, unlocked=False)}) == "inner"
    assert il.blocking("inner", {"outer": DoorState(open=False, unlocked=True)}) == "outer"


def test_duress_pin_is_the_last_digit_plus_the_offset() -> None:
    rule = DuressRule(1)
    assert (rule.duress_of("4711"), rule.duress_of("1239")) == ("4712", "1230")
    assert (rule.normal_of("4712"), rule.normal_of("1230"), rule.normal_of("")) == ("4711", "1239", None)
