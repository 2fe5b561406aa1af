"""`Verifier.decide` against a real SQLite cache: one test per reason, every GRANT path, replay."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.builders import (
    DAY,
    DEVICE_CARD,
    DEVICE_READER,
    FOREIGN_KEY,
    IC_CARD,
    INACTIVE_CARD,
    INVITE,
    NOW,
    PIN,
    READER,
    REVOKED_CARD,
    SIGNING_KEY,
    SHIFT_CARD,
    SHIFT_READER,
    USER_CARD,
    apply,
    fresh_cache,
    iso,
    loaded_cache,
    make_bundle,
    make_jwt,
    records,
    user_claims,
)
from verifier.bundle import apply_bundle
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Policy, Verifier
from verifier.timeutil import to_ms
from verifier.types import (
    AccessDecision,
    CardNumber,
    Decision,
    Reason,
    Source,
)

MS = timedelta(milliseconds=1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrantCache]:
    """The builders' small site, version 1, not_after NOW + 7 days. Read-only: tests share it."""
    cache = loaded_cache(tmp_path_factory.mktemp("site"))
    yield cache
    cache.close()


def decide(cache: GrantCache, scan: str, reader: str = READER, at: datetime = NOW, *, hint: str | None = None,
           source: Source = Source.CARD, policy: Policy | None = None) -> AccessDecision:
    """A fresh Verifier per call, so replay memory and rate limits of other calls never interfere."""
    return Verifier(cache, policy or Policy()).decide(parse(scan.encode(), hint=hint), reader, source, at)


def _window_site(tmp_path: Path, **window: str | int) -> GrantCache:
    tmp_path.mkdir(exist_ok=True)
    return loaded_cache(tmp_path, [
        {"type": "zone", "id": "z", "name": "Z", "readers": [READER]},
        {"type": "user", "id": "u", "name": "U"},
        {"type": "grant", "id": "g", "userId": "u", "zoneId": "z", **window},
        {"type": "card", "number": "AB12", "userId": "u"},
    ], not_after=NOW + 36500 * DAY)


# --- one test per reason -------------------------------------------------------------------------


def test_no_grant_for_an_unknown_card(site: GrantCache) -> None:
    d = decide(site, "FFFF0000AAAA")
    assert (d.decision, d.reason) == (Decision.DENY, Reason.NO_GRANT)
    assert d.user_id is None and d.zone_id is None


def test_no_grant_for_a_known_user_in_a_zone_they_have_no_grant_for(site: GrantCache) -> None:
    d = decide(site, USER_CARD, SHIFT_READER)
    assert (d.reason, d.user_id, d.user_name) == (Reason.NO_GRANT, "user_layla", "Layla Hassan")


def test_grant_revoked(site: GrantCache) -> None:
    d = decide(site, REVOKED_CARD)
    assert (d.decision, d.reason, d.user_id, d.zone_id) == (Decision.DENY, Reason.GRANT_REVOKED, "user_omar", "zone_stock")


def test_schedule_aware_zone_grants_only_during_a_shift(site: GrantCache) -> None:
    on = decide(site, SHIFT_CARD, SHIFT_READER, NOW)
    assert (on.decision, on.zone_id, on.zone_name) == (Decision.GRANT, "zone_kitchen", "Kitchen")
    shift_end = NOW + timedelta(hours=6)
    assert decide(site, SHIFT_CARD, SHIFT_READER, shift_end - MS).decision is Decision.GRANT
    off = decide(site, SHIFT_CARD, SHIFT_READER, shift_end)  # half-open: the shift's end is off shift
    assert (off.decision, off.reason, off.user_name, off.zone_name) == (
        Decision.DENY, Reason.OUT_OF_SHIFT_WINDOW, "Chef Karim", "Kitchen")
    before = decide(site, SHIFT_CARD, SHIFT_READER, NOW - timedelta(hours=2) - MS)
    assert before.reason is Reason.OUT_OF_SHIFT_WINDOW


def test_shift_without_a_zone_covers_every_schedule_aware_zone(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path, [
        {"type": "zone", "id": "zk", "name": "Kitchen", "readers": [SHIFT_READER], "scheduleAware": True},
        {"type": "user", "id": "u"},
        {"type": "grant", "id": "g", "userId": "u", "zoneId": "zk"},
        {"type": "card", "number": "AB12", "userId": "u"},
        {"type": "shift", "id": "s", "userId": "u", "startsAt": iso(NOW - DAY), "endsAt": iso(NOW + DAY)},
    ])
    assert decide(cache, "AB12", SHIFT_READER).decision is Decision.GRANT
    assert decide(cache, "AB12", SHIFT_READER, NOW + DAY).reason is Reason.OUT_OF_SHIFT_WINDOW


def test_out_of_date_window_is_half_open(tmp_path: Path) -> None:
    start, end = NOW - DAY, NOW + DAY
    cache = _window_site(tmp_path, startsAt=iso(start), endsAt=iso(end))
    assert decide(cache, "AB12", at=start - MS).reason is Reason.OUT_OF_DATE_WINDOW
    assert decide(cache, "AB12", at=start).decision is Decision.GRANT
    assert decide(cache, "AB12", at=end - MS).decision is Decision.GRANT
    at_end = decide(cache, "AB12", at=end)
    assert (at_end.decision, at_end.reason, at_end.user_id, at_end.zone_id) == (
        Decision.DENY, Reason.OUT_OF_DATE_WINDOW, "u", "z")


def _float_unfriendly_instants(count: int) -> list[datetime]:
    """Instants where `int(timestamp() * 1000)` lands one ms early: they cluster just above powers
    of two seconds, e.g. after 2**31 s (2038-01-19T03:14:08Z, a plausible grant end)."""
    found: list[datetime] = []
    at = datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC)
    for _ in range(100_000):
        if len(found) == count:
            return found
        at += timedelta(milliseconds=7)
        if int(at.timestamp() * 1000) != (at - datetime(1970, 1, 1, tzinfo=UTC)) // MS:
            found.append(at)
    raise AssertionError("no float-unfriendly instant found; the search start needs updating")


def test_window_boundaries_are_exact_to_the_millisecond(tmp_path: Path) -> None:
    start, end = _float_unfriendly_instants(2)
    assert end > start + MS
    cache = _window_site(tmp_path, startsAt=iso(start), endsAt=iso(end))
    assert decide(cache, "AB12", at=start - MS).reason is Reason.OUT_OF_DATE_WINDOW
    assert decide(cache, "AB12", at=start).decision is Decision.GRANT
    assert decide(cache, "AB12", at=end - MS).decision is Decision.GRANT
    assert decide(cache, "AB12", at=end).reason is Reason.OUT_OF_DATE_WINDOW
    epoch = _window_site(tmp_path / "epoch", startsAt=to_ms(start), endsAt=to_ms(end))  # Sifely-style integers
    assert decide(epoch, "AB12", at=start - MS).reason is Reason.OUT_OF_DATE_WINDOW
    assert decide(epoch, "AB12", at=end - MS).decision is Decision.GRANT


def test_naive_grant_times_are_utc(tmp_path: Path) -> None:
    cache = _window_site(tmp_path, startsAt="2026-06-01T12:00:00", endsAt="2026-06-01T22:00:00+09:00")  # 12:00Z–13:00Z
    utc = UTC
    assert decide(cache, "AB12", at=datetime(2026, 6, 1, 12, tzinfo=utc) - MS).reason is Reason.OUT_OF_DATE_WINDOW
    assert decide(cache, "AB12", at=datetime(2026, 6, 1, 12, tzinfo=utc)).decision is Decision.GRANT
    assert decide(cache, "AB12", at=datetime(2026, 6, 1, 13, tzinfo=utc) - MS).decision is Decision.GRANT
    assert decide(cache, "AB12", at=datetime(2026, 6, 1, 13, tzinfo=utc)).reason is Reason.OUT_OF_DATE_WINDOW
    # 12:30 on a clock in JST is 03:30Z: outside, although the wall-clock digits look inside
    jst = timezone(timedelta(hours=9))
    assert decide(cache, "AB12", at=datetime(2026, 6, 1, 12, 30, tzinfo=jst)).reason is Reason.OUT_OF_DATE_WINDOW


def test_sna_card_outside_its_dates_is_out_of_date_window(site: GrantCache) -> None:
    assert decide(site, DEVICE_CARD, DEVICE_READER, NOW + 6 * DAY).reason is Reason.OUT_OF_DATE_WINDOW  # end_at
    assert decide(site, IC_CARD, READER, NOW + DAY).reason is Reason.OUT_OF_DATE_WINDOW  # Sifely endDate (ms)
    assert decide(site, IC_CARD, READER, NOW + DAY - MS).decision is Decision.GRANT


def test_credential_expired(site: GrantCache) -> None:
    token = make_jwt(user_claims(exp=int((NOW - timedelta(minutes=5)).timestamp())))
    d = decide(site, token, source=Source.PHONE_NFC)
    assert (d.decision, d.reason, d.user_id) == (Decision.DENY, Reason.CREDENTIAL_EXPIRED, "user_layla")


def test_signature_invalid(site: GrantCache) -> None:
    d = decide(site, make_jwt(user_claims(), key=FOREIGN_KEY), source=Source.PHONE_QR)
    assert (d.decision, d.reason, d.user_id) == (Decision.DENY, Reason.SIGNATURE_INVALID, None)


def test_unknown_reader(site: GrantCache) -> None:
    for scan in (USER_CARD, "FFFF0000AAAA", INVITE, make_jwt(user_claims())):
        d = decide(site, scan, "BRIDGE-not-in-any-bundle")
        assert (d.decision, d.reason, d.reader_id) == (Decision.DENY, Reason.UNKNOWN_READER, "BRIDGE-not-in-any-bundle")
    assert decide(site, PIN, "BRIDGE-not-in-any-bundle", hint="pin").reason is Reason.UNKNOWN_READER


def test_malformed_credential(site: GrantCache) -> None:
    for raw in (b"hello, door", b"", b"\xff\xfe", b"vis_short"):
        d = Verifier(site).decide(parse(raw), READER, Source.CARD, NOW)
        assert (d.decision, d.reason, d.credential_kind) == (Decision.DENY, Reason.MALFORMED_CREDENTIAL, "malformed")


def test_holder_inactive(site: GrantCache) -> None:
    d = decide(site, INACTIVE_CARD)
    assert (d.decision, d.reason, d.user_id, d.user_name) == (Decision.DENY, Reason.HOLDER_INACTIVE, "user_ex", "Former Employee")
    token = make_jwt({**user_claims(), "sub": "user_ex"})
    assert decide(site, token, source=Source.PHONE_NFC).reason is Reason.HOLDER_INACTIVE


def test_cache_stale_after_not_after_with_policy_deny(site: GrantCache) -> None:
    not_after = NOW + 7 * DAY
    d = decide(site, USER_CARD, at=not_after)
    assert (d.decision, d.reason, d.cache_version) == (Decision.DENY, Reason.CACHE_STALE, 1)
    assert decide(site, USER_CARD, at=not_after - MS).decision is Decision.GRANT
    assert Verifier(site).is_stale(not_after) and not Verifier(site).is_stale(not_after - MS)


def test_stale_cache_keeps_deciding_with_policy_warn(site: GrantCache) -> None:
    warn = Policy(staleness="warn")
    later = NOW + 8 * DAY
    assert decide(site, USER_CARD, at=later, policy=warn).decision is Decision.GRANT
    assert decide(site, REVOKED_CARD, at=later, policy=warn).reason is Reason.GRANT_REVOKED
    assert Verifier(site, warn).is_stale(later)  # still reported, so the daemon can warn


def test_empty_cache_is_stale_whatever_the_policy(tmp_path: Path) -> None:
    cache = fresh_cache(tmp_path)
    for policy in (Policy(), Policy(staleness="warn")):
        d = decide(cache, USER_CARD, policy=policy)
        assert (d.decision, d.reason, d.cache_version) == (Decision.DENY, Reason.CACHE_STALE, 0)
    assert Verifier(cache).is_stale(NOW)


def test_digital_id_token_offline_is_upstream_unavailable(site: GrantCache) -> None:
    d = decide(site, "https://id.example/verify.php?token=abc123XYZ", source=Source.PHONE_QR)
    assert (d.decision, d.reason, d.credential_kind) == (Decision.DENY, Reason.UPSTREAM_UNAVAILABLE, "digital_id")


# --- rate limiting -------------------------------------------------------------------------------


def _unknown_card(i: int) -> CardNumber:
    return CardNumber(f"FFFF{i:08X}")


def test_rate_limited_after_n_denies_then_cooldown_then_recovers(site: GrantCache) -> None:
    v = Verifier(site, Policy(rate_limit_denies=3, rate_limit_window_s=60, rate_limit_cooldown_s=30))
    t = NOW
    for i in range(3):
        assert v.decide(_unknown_card(i), READER, Source.CARD, t).reason is Reason.NO_GRANT
        t += timedelta(seconds=1)
    locked = v.decide(CardNumber(USER_CARD), READER, Source.CARD, t)  # even a good card waits
    assert (locked.decision, locked.reason) == (Decision.DENY, Reason.RATE_LIMITED)
    # during the lock: other readers and the keypad bucket of this reader are unaffected
    assert v.decide(CardNumber(USER_CARD), SHIFT_READER, Source.CARD, t).reason is Reason.NO_GRANT
    assert v.decide(parse(PIN.encode(), hint="pin"), READER, Source.KEYPAD, t).decision is Decision.GRANT
    # RATE_LIMITED answers do not extend the lock
    for i in range(10):
        assert v.decide(_unknown_card(100 + i), READER, Source.CARD, t + timedelta(seconds=i)).reason is Reason.RATE_LIMITED
    lock_ends = NOW + timedelta(seconds=2 + 30)
    assert v.decide(_unknown_card(50), READER, Source.CARD, lock_ends - MS).reason is Reason.RATE_LIMITED
    assert v.decide(CardNumber(USER_CARD), READER, Source.CARD, lock_ends).decision is Decision.GRANT


def test_keypad_guessing_locks_the_keypad_not_the_cards(site: GrantCache) -> None:
    v = Verifier(site, Policy(rate_limit_denies=5))
    for i in range(5):
        assert v.decide(parse(f"{1000 + i}".encode(), hint="pin"), READER, Source.KEYPAD, NOW).reason is Reason.NO_GRANT
    assert v.decide(parse(PIN.encode(), hint="pin"), READER, Source.KEYPAD, NOW).reason is Reason.RATE_LIMITED
    assert v.limiter.locked_readers(to_ms(NOW)) == [READER]
    assert v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW).decision is Decision.GRANT


def test_denies_spread_beyond_the_window_do_not_lock(site: GrantCache) -> None:
    v = Verifier(site, Policy(rate_limit_denies=3, rate_limit_window_s=60))
    for i in range(10):
        d = v.decide(_unknown_card(i), READER, Source.CARD, NOW + timedelta(seconds=31 * i))
        assert d.reason is Reason.NO_GRANT


def test_system_reasons_do_not_count_as_guesses(tmp_path: Path) -> None:
    v = Verifier(fresh_cache(tmp_path), Policy(rate_limit_denies=2))
    for i in range(5):
        assert v.decide(_unknown_card(i), READER, Source.CARD, NOW).reason is Reason.CACHE_STALE


def test_replays_do_not_count_against_the_rate_limit(site: GrantCache) -> None:
    v = Verifier(site, Policy(rate_limit_denies=3))
    for i in range(10):  # a card left on the reader, read every 100 ms
        d = v.decide(_unknown_card(1), READER, Source.CARD, NOW + i * timedelta(milliseconds=100))
        assert d.reason is Reason.NO_GRANT and d.replay is (i > 0)
    assert v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW + timedelta(seconds=1)).decision is Decision.GRANT


# --- GRANT paths and decision fields -------------------------------------------------------------


def test_user_card_grant_fields(site: GrantCache) -> None:
    d = decide(site, "6b:06:c2:a2:5e:99:c6:8e:dc:be")
    assert d == AccessDecision(
        decision=Decision.GRANT, reason=None, reader_id=READER, source=Source.CARD, user_id="user_layla",
        user_name="Layla Hassan", zone_id="zone_stock", zone_name="Back of House — Stockroom", replay=False,
        cache_version=1, online=False, credential_kind="card", fingerprint=d.fingerprint)
    assert d.fingerprint.startswith("card:") and len(d.fingerprint) == len("card:") + 16
    assert d.granted
    wire = d.as_wire()
    assert (wire["userId"], wire["zoneName"], wire["readerId"], wire["reason"]) == (
        "user_layla", "Back of House — Stockroom", READER, None)
    assert USER_CARD not in str(wire)


def test_sna_device_bound_card(site: GrantCache) -> None:
    d = decide(site, DEVICE_CARD, DEVICE_READER)  # a reader in no zone, known from the card's devices
    assert (d.decision, d.user_name, d.zone_id, d.reader_id) == (Decision.GRANT, "Guest Card", None, DEVICE_READER)
    in_zone = decide(site, DEVICE_CARD, READER)
    assert (in_zone.decision, in_zone.zone_id) == (Decision.GRANT, "zone_stock")
    assert decide(site, DEVICE_CARD, SHIFT_READER).reason is Reason.NO_GRANT  # not one of its devices


def test_sifely_ic_card(site: GrantCache) -> None:
    d = decide(site, IC_CARD)
    assert (d.decision, d.user_name, d.zone_name) == (Decision.GRANT, "Room 7 card", "Back of House — Stockroom")
    assert decide(site, IC_CARD, at=NOW - DAY - MS).reason is Reason.OUT_OF_DATE_WINDOW


def test_visitor_invite_code(site: GrantCache) -> None:
    d = decide(site, f"https://app.frontelio.com/visitor/{INVITE}", source=Source.VISITOR)
    assert (d.decision, d.user_name, d.zone_id, d.source, d.credential_kind) == (
        Decision.GRANT, "ACME Pest Control — Ahmed", "zone_stock", Source.VISITOR, "invite")
    assert decide(site, INVITE, SHIFT_READER).reason is Reason.NO_GRANT  # not one of the visitor's zones
    assert decide(site, INVITE, at=NOW + timedelta(hours=3)).reason is Reason.OUT_OF_DATE_WINDOW  # validUntil
    assert decide(site, "vis_SomeoneElsesCode12345678").reason is Reason.NO_GRANT


def test_passcode_pin(site: GrantCache) -> None:
    for scan, hint in ((PIN, "pin"), (PIN + "#", None)):
        d = decide(site, scan, hint=hint, source=Source.KEYPAD)
        assert (d.decision, d.user_name, d.zone_id, d.source, d.credential_kind) == (
            Decision.GRANT, "Guest 101", "zone_stock", Source.KEYPAD, "pin")
    assert decide(site, PIN, hint="pin", at=NOW + 2 * DAY).reason is Reason.OUT_OF_DATE_WINDOW
    assert decide(site, PIN, SHIFT_READER, hint="pin").reason is Reason.NO_GRANT  # bound to READER only
    assert decide(site, "90817264", hint="pin").reason is Reason.NO_GRANT


def test_user_jwt(site: GrantCache) -> None:
    d = decide(site, make_jwt(user_claims()), source=Source.PHONE_NFC)
    assert (d.decision, d.user_id, d.user_name, d.zone_name, d.source, d.credential_kind) == (
        Decision.GRANT, "user_layla", "Layla Hassan", "Back of House — Stockroom", Source.PHONE_NFC, "jwt")


def test_visitor_jwt_with_zone_ids(site: GrantCache) -> None:
    exp = int((NOW + timedelta(hours=2)).timestamp())
    visitor = {"sub": "v_ahmed", "name": "ACME Pest Control — Ahmed", "zoneIds": ["zone_stock"], "exp": exp}
    d = decide(site, make_jwt(visitor), source=Source.VISITOR)
    assert (d.decision, d.user_id, d.zone_id) == (Decision.GRANT, "v_ahmed", "zone_stock")
    assert decide(site, make_jwt(visitor), SHIFT_READER).reason is Reason.NO_GRANT
    assert decide(site, make_jwt({**visitor, "zoneIds": "zone_stock"})).reason is Reason.MALFORMED_CREDENTIAL
    early = {**visitor, "nbf": int((NOW + timedelta(hours=1)).timestamp())}  # validFrom not reached
    assert decide(site, make_jwt(early)).reason is Reason.OUT_OF_DATE_WINDOW


def test_jwt_without_subject_or_zones_is_malformed(site: GrantCache) -> None:
    assert decide(site, make_jwt({"exp": int(NOW.timestamp()) + 60})).reason is Reason.MALFORMED_CREDENTIAL


def test_best_reason_when_several_grants_deny(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path, [
        {"type": "zone", "id": "z", "readers": [READER]},
        {"type": "user", "id": "u"},
        {"type": "grant", "id": "g1", "userId": "u", "zoneId": "z", "revoked": True},
        {"type": "grant", "id": "g2", "userId": "u", "zoneId": "z", "endsAt": iso(NOW - DAY)},
        {"type": "card", "number": "AB12", "userId": "u"},
    ])
    assert decide(cache, "AB12").reason is Reason.OUT_OF_DATE_WINDOW
    apply(cache, make_bundle([{"type": "grant", "id": "g3", "userId": "u", "zoneId": "z"}],
                             version=2, kind="delta", base_version=1))
    d = decide(cache, "AB12")
    assert (d.decision, d.cache_version) == (Decision.GRANT, 2)


# --- replay --------------------------------------------------------------------------------------


def test_same_credential_same_reader_within_2s_is_a_replay_of_the_original(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    v = Verifier(cache)
    first = v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW)
    # the grant is revoked meanwhile: the replay still answers with the ORIGINAL decision
    apply(cache, make_bundle([{"type": "grant", "id": "g_layla", "userId": "user_layla", "zoneId": "zone_stock",
                               "revoked": True}], version=2, kind="delta", base_version=1))
    again = v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW + 2 * 1000 * MS - MS)
    assert again.replay is True and first.replay is False
    assert again == AccessDecision(**{**_fields(first), "replay": True})
    fresh = v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW + timedelta(seconds=2))
    assert (fresh.replay, fresh.reason, fresh.cache_version) == (False, Reason.GRANT_REVOKED, 2)


def test_replay_of_a_deny_is_the_deny(site: GrantCache) -> None:
    v = Verifier(site)
    first = v.decide(CardNumber(REVOKED_CARD), READER, Source.CARD, NOW)
    again = v.decide(CardNumber(REVOKED_CARD), READER, Source.CARD, NOW + timedelta(seconds=1))
    assert (again.replay, again.decision, again.reason) == (True, Decision.DENY, first.reason)


def test_other_reader_or_other_credential_is_not_a_replay(site: GrantCache) -> None:
    v = Verifier(site)
    v.decide(CardNumber(DEVICE_CARD), READER, Source.CARD, NOW)
    other_reader = v.decide(CardNumber(DEVICE_CARD), DEVICE_READER, Source.CARD, NOW)
    assert other_reader.replay is False and other_reader.reader_id == DEVICE_READER
    assert v.decide(CardNumber(USER_CARD), READER, Source.CARD, NOW).replay is False


# --- the window property -------------------------------------------------------------------------

_T0 = to_ms(NOW - 400 * DAY)
_T1 = to_ms(NOW + 400 * DAY)
_instant = st.integers(_T0, _T1)


@st.composite
def _window_and_now(draw: st.DrawFn) -> tuple[int | None, int | None, bool, int]:
    start = draw(st.none() | _instant)
    end = draw(st.none() | st.integers(max(_T0, (start or _T0) + 1), _T1 + 1))
    near = [x for x in (start, end) if x is not None]
    now = draw(_instant | (st.sampled_from(near).flatmap(lambda b: st.integers(b - 2, b + 2)) if near else _instant))
    return start, end, draw(st.booleans()), now


@pytest.fixture(scope="module")
def window_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrantCache]:
    cache = fresh_cache(tmp_path_factory.mktemp("prop"))
    apply(cache, make_bundle([{"type": "zone", "id": "z", "readers": [READER]},
                              {"type": "card", "number": "AB12", "userId": "u"}],
                             not_after=NOW + 4000 * DAY))
    yield cache
    cache.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_window_and_now(), as_epoch_ms=st.booleans())
def test_grant_iff_start_le_now_lt_end_and_not_revoked(window_cache: GrantCache, case, as_epoch_ms: bool) -> None:
    start, end, revoked, now_ms = case
    version = window_cache.meta.version + 1
    fmt = (lambda ms: ms) if as_epoch_ms else (lambda ms: iso(datetime.fromtimestamp(ms / 1000, tz=UTC)))
    grant = {"type": "grant", "id": "g", "userId": "u", "zoneId": "z", "revoked": revoked}
    if start is not None:
        grant["startsAt"] = fmt(start)
    if end is not None:
        grant["endsAt"] = fmt(end)
    apply(window_cache, make_bundle([grant], version=version, kind="delta", base_version=version - 1,
                                           not_after=NOW + 4000 * DAY))
    now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=now_ms)
    d = Verifier(window_cache).decide(CardNumber("AB12"), READER, Source.CARD, now)
    inside = (start is None or start <= now_ms) and (end is None or now_ms < end)
    assert d.granted is (inside and not revoked)
    if not d.granted:
        assert d.reason is (Reason.GRANT_REVOKED if revoked else Reason.OUT_OF_DATE_WINDOW)


def _fields(d: AccessDecision) -> dict:
    return {name: getattr(d, name) for name in AccessDecision.__slots__}


# --- what a decision costs the cache ----------------------------------------------------------------


def _statements(cache: GrantCache, scan: str, reader: str = READER) -> list[str]:
    verifier = Verifier(cache, Policy())
    verifier.decide(parse(b"FFFF0000AAAA"), reader, Source.CARD, NOW - DAY)  # memoise the reader's zones
    seen: list[str] = []
    cache.conn.set_trace_callback(seen.append)
    try:
        verifier.decide(parse(scan.encode()), reader, Source.CARD, NOW)
    finally:
        cache.conn.set_trace_callback(None)
    return seen


def test_a_card_decision_reads_the_cache_in_three_statements(site: GrantCache) -> None:
    """Each statement has a fixed price that dominates a point look-up at a million grants: the
    data version, the card with its holder, the holder's own and role grants in the zone. (It read
    the holder twice and the role grants apart: five, before.)"""
    seen = _statements(site, USER_CARD)
    assert len(seen) == 3, seen
    assert seen[0] == "PRAGMA data_version"


def test_a_jwt_decision_reads_the_holder_once(site: GrantCache) -> None:
    seen = _statements(site, make_jwt(user_claims()))
    assert sum("FROM users" in s for s in seen) == 1, seen
    assert sum("grants" in s for s in seen) == 1, seen


def _role_site(tmp_path: Path, **grant: str | bool) -> GrantCache:
    return loaded_cache(tmp_path, [
        {"type": "zone", "id": "z", "name": "Z", "readers": [READER]},
        {"type": "role", "id": "staff", "name": "Staff"},
        {"type": "user", "id": "u", "name": "U", "roles": ["staff"]},
        {"type": "grant", "id": "g_own", "userId": "u", "zoneId": "z", "revoked": True},
        {"type": "grant", "id": "g_staff", "roleId": "staff", "zoneId": "z", **grant},
        {"type": "card", "number": "AB12", "userId": "u"},
    ], not_after=NOW + 36500 * DAY)


def test_a_role_grant_admits_when_the_holders_own_grant_does_not(tmp_path: Path) -> None:
    d = decide(_role_site(tmp_path), "AB12")
    assert (d.decision, d.user_id, d.zone_id) == (Decision.GRANT, "u", "z")


def test_a_revoked_role_grant_and_a_revoked_own_grant_deny_as_revoked(tmp_path: Path) -> None:
    d = decide(_role_site(tmp_path, revoked=True), "AB12")
    assert (d.decision, d.reason) == (Decision.DENY, Reason.GRANT_REVOKED)


def test_a_batch_of_decisions_looks_for_a_new_cache_version_once(site: GrantCache) -> None:
    """The decision worker decides a batch inside `one_version()`: one `stat` and one data version
    for the batch, not one per decision."""
    verifier = Verifier(site, Policy())
    verifier.decide(parse(b"FFFF0000AAAA"), READER, Source.CARD, NOW - DAY)  # memoise the reader's zones
    seen: list[str] = []
    site.conn.set_trace_callback(seen.append)
    try:
        with site.one_version():
            for i in range(5):
                verifier.decide(parse(USER_CARD.encode()), READER, Source.CARD, NOW + i * DAY / 10)
    finally:
        site.conn.set_trace_callback(None)
    assert sum(s == "PRAGMA data_version" for s in seen) == 1, seen
    assert len(seen) == 1 + 5 * 2


def test_a_bundle_committed_during_a_batch_is_seen_by_the_next(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    verifier = Verifier(cache, Policy())
    with cache.one_version():
        assert verifier.decide(parse(USER_CARD.encode()), READER, Source.CARD, NOW).decision is Decision.GRANT
        applier = GrantCache(cache.path)  # the sync's own connection
        apply_bundle(applier.conn, io.BytesIO(make_bundle([r for r in records() if r.get("number") != USER_CARD],
                                                          version=2)), SIGNING_KEY.public_key())
        applier.close()
        inside = verifier.decide(parse(USER_CARD.encode()), READER, Source.CARD, NOW + DAY / 10)
        assert inside.cache_version == 1, "inside the batch: the version it started with"
    later = verifier.decide(parse(USER_CARD.encode()), READER, Source.CARD, NOW + DAY / 5)
    assert (later.decision, later.cache_version) == (Decision.DENY, 2)
    cache.close()
