"""The learned offline cache's parts: the pure rules, the sealed SQLite store, its key, the export.

Daemon-level behaviour (online → offline → expiry, restart, edits, webhook) is in
test_learned_through_daemon.py; these pin the rules that test cannot reach cheaply.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.config import ConfigError, from_dict
from bridge.state.export import export_events, is_offline_decision, parse_since, SinceError
from bridge.state.learned import LearnedCache, LearnedKeyError, load_secret
from bridge.config.offline import OfflineSection
from bridge.state.outbox import Outbox
from verifier.learned import LearnedEntry, Lifetime, expiry, jwt_expiry_ms, recall, signed_cache_silent
from verifier.types import AccessDecision, CardNumber, CredentialJwt, Decision, OnlineTerms, Reason, Source

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR = 3600_000
CARD = "6B06C2A25E99C68EDCBE"


def grant(reader: str = "R1", terms: OnlineTerms | None = None) -> AccessDecision:
    return AccessDecision(Decision.GRANT, None, reader, Source.CARD, user_id="u1", user_name="Layla Hassan",
                          zone_name="Stockroom", online=True, credential_kind="card", terms=terms)


def deny(reason: Reason, reader: str = "R1") -> AccessDecision:
    return AccessDecision(Decision.DENY, reason, reader, Source.CARD, online=True, credential_kind="card")


def cache_at(tmp_path: Path, **section) -> LearnedCache:
    return LearnedCache(tmp_path, OfflineSection(**section), secret=b"k" * 32,
                        identities={"sna": frozenset({"SN-0042"})})


# --- the pure rules --------------------------------------------------------------------------


def test_expiry_is_the_earliest_limit_with_its_own_reason():
    base = Lifetime(NOW_MS, max_age_ms=4 * HOUR)
    assert expiry(base) == expiry(Lifetime(NOW_MS, 4 * HOUR, window_ends_ms=NOW_MS + 5 * HOUR))
    assert expiry(base).reason is Reason.CACHE_STALE and expiry(base).at_ms == NOW_MS + 4 * HOUR
    assert expiry(Lifetime(NOW_MS, 4 * HOUR, credential_expires_ms=NOW_MS + HOUR)).reason is Reason.CREDENTIAL_EXPIRED
    assert expiry(Lifetime(NOW_MS, 4 * HOUR, window_ends_ms=NOW_MS + HOUR)).reason is Reason.OUT_OF_DATE_WINDOW
    assert expiry(Lifetime(NOW_MS, 4 * HOUR, ttl_ms=HOUR)).at_ms == NOW_MS + HOUR
    same = Lifetime(NOW_MS, HOUR, credential_expires_ms=NOW_MS + HOUR, window_ends_ms=NOW_MS + HOUR)
    assert expiry(same).reason is Reason.CREDENTIAL_EXPIRED


def _entry(**kw) -> LearnedEntry:
    base = dict(upstream="sna", reader_id="R1", credential_kind="card", user_id=None, user_name="Guest", zone_name=None,
                learned_ms=NOW_MS, expires_ms=NOW_MS + 2 * HOUR, expires_reason=Reason.OUT_OF_DATE_WINDOW,
                starts_ms=None, devices=("SN-0042",))
    return LearnedEntry(**{**base, **kw})


def test_recall_follows_the_device_binding_and_the_window_like_sna_online():
    me = frozenset({"SN-0042"})
    assert recall(_entry(), NOW_MS + HOUR, me, 4 * HOUR).reason is None
    assert recall(_entry(), NOW_MS + HOUR, frozenset({"SN-9999"}), 4 * HOUR).reason is Reason.NO_GRANT
    assert recall(_entry(starts_ms=NOW_MS + HOUR), NOW_MS + 1, me, 4 * HOUR).reason is Reason.OUT_OF_DATE_WINDOW
    assert recall(_entry(), NOW_MS + 2 * HOUR, me, 4 * HOUR).reason is Reason.OUT_OF_DATE_WINDOW
    # max_age as configured NOW (lowered on reload) applies to entries learned before.
    assert recall(_entry(), NOW_MS + HOUR, me, HOUR // 2).reason is Reason.CACHE_STALE


def test_a_clock_earlier_than_the_learning_moment_does_not_make_an_answer_forever_young():
    assert recall(_entry(), NOW_MS - HOUR, frozenset({"SN-0042"}), 4 * HOUR).reason is Reason.CACHE_STALE
    assert recall(_entry(), NOW_MS - 1000, frozenset({"SN-0042"}), 4 * HOUR).reason is None  # small slack


def test_jwt_expiry_takes_the_earlier_of_exp_and_valid_until():
    exp = (NOW_MS + 2 * HOUR) / 1000
    assert jwt_expiry_ms({"exp": exp}) == NOW_MS + 2 * HOUR
    assert jwt_expiry_ms({"exp": exp, "validUntil": "2026-06-01T13:00:00"}) == NOW_MS + HOUR  # no offset = UTC
    assert jwt_expiry_ms({"validUntil": "tomorrow-ish"}) == 0
    assert jwt_expiry_ms({"exp": float("inf")}) is None and jwt_expiry_ms({}) is None


@pytest.mark.parametrize("decision,silent", [
    (deny(Reason.CACHE_STALE), True),
    (deny(Reason.UNKNOWN_READER), True),
    (deny(Reason.NO_GRANT), True),
    (AccessDecision(Decision.DENY, Reason.NO_GRANT, "R1", Source.CARD, user_id="u1"), False),  # a known holder
    (deny(Reason.GRANT_REVOKED), False),
    (deny(Reason.OUT_OF_DATE_WINDOW), False),
    (deny(Reason.HOLDER_INACTIVE), False),
    (grant(), False),
])
def test_the_signed_cache_is_silent_only_when_it_has_no_verdict(decision, silent):
    assert signed_cache_silent(CardNumber(CARD), decision, lambda t: False) is silent


def test_a_jwt_signature_verdict_stands_only_when_the_cache_holds_its_key():
    bad = deny(Reason.SIGNATURE_INVALID)
    assert signed_cache_silent(CredentialJwt("a.b.c"), bad, lambda t: False) is True
    assert signed_cache_silent(CredentialJwt("a.b.c"), bad, lambda t: True) is False


# --- the store -------------------------------------------------------------------------------


def test_nothing_on_disk_reveals_the_credential(tmp_path):
    cache = cache_at(tmp_path)
    cache.observe("frontelio", CardNumber(CARD), grant(), ["R1"], NOW)
    cache.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("learned.db"))
    assert raw and CARD.encode() not in raw and CARD.lower().encode() not in raw


def test_an_entry_is_bound_to_its_reader_and_an_online_deny_forgets_it_everywhere(tmp_path):
    cache = cache_at(tmp_path)
    cache.observe("frontelio", CardNumber(CARD), grant("R1"), ["R1", "R2"], NOW)
    cache.observe("frontelio", CardNumber(CARD), grant("R2"), ["R1", "R2"], NOW)
    assert cache.recall(CardNumber(CARD), "R1", NOW).reason is None
    assert cache.recall(CardNumber(CARD), "R3", NOW) is None
    cache.observe("frontelio", CardNumber(CARD), deny(Reason.OUT_OF_SHIFT_WINDOW, "R2"), ["R1", "R2"], NOW)
    assert cache.recall(CardNumber(CARD), "R1", NOW) is None and cache.store.count() == 0


def test_bounded_in_number_least_recently_used_go_first(tmp_path):
    cache = cache_at(tmp_path, max_entries=3)
    for i in range(3):
        cache.observe("frontelio", CardNumber(f"AA{i:04X}"), grant(), ["R1"], NOW + timedelta(minutes=i))
    cache.recall(CardNumber("AA0000"), "R1", NOW + timedelta(minutes=5))  # used: now the most recent
    cache.observe("frontelio", CardNumber("BB0001"), grant(), ["R1"], NOW + timedelta(minutes=6))
    assert cache.store.count() == 3 and cache.evicted == 1
    assert cache.recall(CardNumber("AA0001"), "R1", NOW + timedelta(minutes=7)) is None  # the least recent
    assert cache.recall(CardNumber("AA0000"), "R1", NOW + timedelta(minutes=7)) is not None


def test_sna_window_and_devices_are_kept_and_a_grant_already_expired_is_not_learned(tmp_path):
    cache = cache_at(tmp_path)
    terms = OnlineTerms(NOW_MS - HOUR, NOW_MS + HOUR, ("SN-0042",))
    cache.observe("sna", CardNumber(CARD), grant(terms=terms), ["R1"], NOW)
    assert cache.recall(CardNumber(CARD), "R1", NOW + timedelta(minutes=59)).reason is None
    assert cache.recall(CardNumber(CARD), "R1", NOW + timedelta(hours=1)).reason is Reason.OUT_OF_DATE_WINDOW
    cache.observe("sna", CardNumber("CC01"), grant(terms=OnlineTerms(None, NOW_MS, None)), ["R1"], NOW)
    assert cache.recall(CardNumber("CC01"), "R1", NOW) is None


def test_learning_is_per_upstream_and_digital_id_never_learns(tmp_path):
    cache = cache_at(tmp_path, sna={"learn": False})
    cache.observe("sna", CardNumber(CARD), grant(), ["R1"], NOW)
    cache.observe("digital_id", CardNumber("DD01"), grant(), ["R1"], NOW)
    cache.observe("frontelio", CardNumber("EE01"), grant(), ["R1"], NOW)
    assert cache.store.count() == 1


def test_a_different_key_refuses_every_entry(tmp_path):
    cache = cache_at(tmp_path)
    cache.observe("frontelio", CardNumber(CARD), grant(), ["R1"], NOW)
    cache.close()
    other = LearnedCache(tmp_path, OfflineSection(), secret=b"x" * 32)
    with capture_logs() as logs:
        swept = other.sweep(NOW)
    assert swept.refused == 1 and other.store.count() == 0
    assert [e["event"] for e in logs] == ["learned_entry_refused"]


# --- the key -----------------------------------------------------------------------------------


def test_the_key_file_is_made_0600_whatever_the_umask_and_kept(tmp_path):
    old = os.umask(0)
    try:
        first = load_secret(tmp_path, OfflineSection())
    finally:
        os.umask(old)
    path = tmp_path / "learned.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(tmp_path, OfflineSection()) == first and len(first) == 32


def test_a_key_file_others_can_read_is_refused_without_quoting_it(tmp_path):
    path = tmp_path / "k"
    path.write_text("ab" * 32)
    path.chmod(0o644)
    with pytest.raises(LearnedKeyError) as e:
        load_secret(tmp_path, OfflineSection(key_file=path))
    assert "chmod 600" in str(e.value) and "ab" * 8 not in str(e.value)


def test_a_webhook_without_frontelio_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        from_dict({"offline": {"webhook": {"integration_id": "integ_abc", "secret_file": "/x"}}}, source="site.toml")
    assert str(e.value).startswith("site.toml: offline.webhook: ")


# --- the export ----------------------------------------------------------------------------------


def test_events_export_writes_ndjson_oldest_first_from_since(tmp_path):
    outbox = Outbox(tmp_path / "audit.db", clock=lambda: NOW)
    outbox.append("VERIFY", {"online": True, "decided": "online"}, at=NOW - timedelta(hours=3))
    outbox.append("VERIFY", {"online": False, "decided": "learned"}, at=NOW - timedelta(hours=1))
    outbox.append("BOOT", {}, at=NOW - timedelta(minutes=30))
    outbox.append("VERIFY", {"online": False, "decided": "cache"}, at=NOW)
    out = io.StringIO()
    assert export_events(outbox, parse_since("2h", NOW), out, keep=is_offline_decision, page=1) == 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["decided"] for line in lines] == ["learned", "cache"]
    with pytest.raises(SinceError):
        parse_since("yesterday", NOW)


def test_events_export_cli(tmp_path):
    outbox = Outbox(tmp_path / "audit.db")
    outbox.append("VERIFY", {"online": False, "decided": "learned", "readerId": "R1"})
    outbox.close()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[bridge]\nstate_dir = "{tmp_path}"\n')
    run = subprocess.run([sys.executable, "-m", "bridge.cli", "events", "export", "-c", str(cfg), "--since", "1h",
                          "--offline"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["readerId"] == "R1"
    bad = subprocess.run([sys.executable, "-m", "bridge.cli", "events", "export", "-c", str(cfg), "--since", "soon"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--since" in bad.stderr


# --- the webhook hand-back -----------------------------------------------------------------------


async def test_the_hand_back_resumes_from_its_cursor_none_lost_none_doubled(tmp_path):
    from bridge.central.handback import WebhookHandback
    from bridge.config.secret_files import ApiKey
    from bridge.config.upstream import HttpSettings
    from bridge.upstream.errors import UpstreamUnavailable
    from bridge.upstream.http import build_client
    from tests.support.fakes.frontelio import FakeFrontelio, add_webhook

    fake = FakeFrontelio()
    hook = add_webhook(fake, "integ_abc", "whsec_abc")
    fake.server.start()
    outbox = Outbox(tmp_path / "audit.db", clock=lambda: NOW)
    ids = []
    for i in range(6):
        kind, source = ("pin", "KEYPAD") if i == 4 else ("card", "CARD")
        e = outbox.append("VERIFY", {"online": i == 2, "decided": "learned", "source": source, "credentialKind": kind})
        if i not in (2, 4):
            ids.append(e.id)

    def handback() -> WebhookHandback:
        return WebhookHandback(build_client(fake.server.url, HttpSettings()), "/access/webhooks/integ_abc",
                               ApiKey("whsec_abc"), outbox, tmp_path / "handback.cursor", HttpSettings(),
                               idle_s=0.05, clock=lambda: NOW)

    try:
        first = handback()
        fake.server.drop_connections()
        with pytest.raises(UpstreamUnavailable):
            await first.deliver_pending()
        assert first.state.cursor_seq == 0
        fake.server.heal()
        assert await first.deliver_pending() == 4
        await first.aclose()
        again = handback()  # a restart: the fsync'd cursor says everything went
        assert await again.deliver_pending() == 0
        await again.aclose()
    finally:
        fake.server.stop()
    assert [e["id"] for e in hook.events] == ids
    assert hook.duplicates == 0 and hook.bad_signatures == 0


def test_a_frontelio_card_is_capped_by_card_ttl_and_a_jwt_by_its_own_exp(tmp_path):
    import jwt as pyjwt

    cache = cache_at(tmp_path, card_ttl_s=600.0)
    cache.observe("frontelio", CardNumber(CARD), grant(), ["R1"], NOW)
    assert cache.recall(CardNumber(CARD), "R1", NOW + timedelta(minutes=9)).reason is None
    assert cache.recall(CardNumber(CARD), "R1", NOW + timedelta(minutes=10)).reason is Reason.CACHE_STALE
    token = pyjwt.encode({"sub": "u1", "exp": int(NOW.timestamp()) + 7200}, "s" * 32, algorithm="HS256")
    cache.observe("frontelio", CredentialJwt(token), grant(), ["R1"], NOW)  # the TTL is for cards only
    assert cache.recall(CredentialJwt(token), "R1", NOW + timedelta(minutes=30)).reason is None
    assert cache.recall(CredentialJwt(token), "R1", NOW + timedelta(hours=2)).reason is Reason.CREDENTIAL_EXPIRED
