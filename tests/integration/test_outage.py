"""A day of WAN outage on an accelerated clock (bench/outage.py's harness at CI size).

An in-process daemon (real SQLite cache and fsync'd outbox, MockFactory relay, local-first) with
the loopback central (its own process) and Frontelio fakes: both go down, 20,000 scans spread over
24 simulated hours go through `Daemon.handle` with the injected clock moved to each scan's
instant, the bundle's `not_after` falls at +12 h; then both come back. bench/outage.py runs the
same at 100,000 scans and prints the drain rate; here only correctness is asserted, never speed.

Intervals: `heartbeat_interval_s` is set to 0.2 s after validation (the config refuses < 10 s);
retry, breaker, poll and replication intervals are shortened within validation (see the bench's
docstring for the values).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.outage import OutageResult, OutageSettings, run_outage

EVENTS = 20_000  # CI size; the bench's default is 100,000
WARN_EVENTS = 2_000


def _run(tmp_path_factory: pytest.TempPathFactory, **kw) -> OutageResult:
    import asyncio

    work: Path = tmp_path_factory.mktemp("outage")
    return asyncio.run(run_outage(OutageSettings(work_dir=work, drain_within_s=120.0, **kw)))


@pytest.fixture(scope="module")
def deny_day(tmp_path_factory: pytest.TempPathFactory) -> OutageResult:
    return _run(tmp_path_factory, events=EVENTS, staleness="deny")


@pytest.fixture(scope="module")
def warn_day(tmp_path_factory: pytest.TempPathFactory) -> OutageResult:
    return _run(tmp_path_factory, events=WARN_EVENTS, staleness="warn")


def _count(r: OutageResult, phase: str, decision: str | None = None, reason: str | None = None) -> int:
    return sum(n for (p, d, why), n in r.outcomes.items()
               if p == phase and decision in (None, d) and reason in (None, why))


def test_doors_decide_from_the_cache_while_the_wan_is_down(deny_day: OutageResult) -> None:
    r = deny_day
    assert (r.online_before, r.online_during) == (True, False), "online before, offline before the first outage scan"
    assert r.scans == EVENTS
    assert r.wrong_count == 0, r.wrong
    assert _count(r, "fresh", "GRANT") > 0 and _count(r, "fresh", "DENY", "GRANT_REVOKED") > 0
    assert _count(r, "fresh", "DENY", "NO_GRANT") > 0
    assert r.online_decisions == 0
    outage_lines = {key: n for key, n in r.decision_logs.items() if key[0] == "outage"}
    assert outage_lines == {("outage", "cache", "offline"): EVENTS}, "one line per scan: decided=cache upstream=offline"


def test_deny_policy_refuses_every_scan_from_not_after_on(deny_day: OutageResult) -> None:
    r = deny_day
    assert r.scan_at_not_after, "one scan fell exactly on not_after (windows are half-open)"
    stale = {key: n for key, n in r.outcomes.items() if key[0] == "stale"}
    assert stale == {("stale", "DENY", "CACHE_STALE"): EVENTS // 2}
    assert r.stale_in_status is True


def test_the_relay_moved_for_every_fresh_grant_and_never_on_a_stale_cache(deny_day: OutageResult) -> None:
    r = deny_day
    assert r.pulses_before_stale == _count(r, "fresh", "GRANT")
    assert r.pulses_after_outage == r.pulses_before_stale, "no pulse once the cache was stale"
    assert r.relay_energised_after is False


def test_the_backlog_drains_in_order_nothing_lost_nothing_stored_twice(deny_day: OutageResult) -> None:
    r = deny_day
    assert r.backlog == EVENTS, "one audit event per scan waited for the central"
    assert r.drain_s is not None, "the outbox emptied"
    assert r.central_ids == r.local_ids, "every event stored once, in the bridge's order"
    assert len(set(r.central_ids)) == len(r.central_ids)
    assert r.ingest_requests >= EVENTS // 500


def test_heartbeats_resume_and_the_upstream_is_marked_online(deny_day: OutageResult) -> None:
    r = deny_day
    assert r.heartbeats_after >= 1
    assert r.online_after is True
    lost = [w for w in r.warnings if w["event"] == "upstream_lost"]
    assert len(lost) == 1, "the outage was logged once, not once per scan"


def test_a_fresh_bundle_after_the_outage_lets_valid_cards_in_again(deny_day: OutageResult) -> None:
    r = deny_day
    assert r.fresh is not None and r.fresh.granted and r.fresh.cache_version == r.fresh_version == 2
    assert not r.fresh.online
    assert r.decision_logs[("after", "cache", "online")] == 1


def test_warn_policy_keeps_deciding_past_not_after(warn_day: OutageResult) -> None:
    r = warn_day
    assert r.wrong_count == 0, r.wrong
    assert _count(r, "stale", "DENY", "CACHE_STALE") == 0
    assert _count(r, "stale", "GRANT") > 0 and _count(r, "stale", "DENY", "GRANT_REVOKED") > 0
    assert r.pulses_after_outage - (r.pulses_before_stale or 0) == _count(r, "stale", "GRANT")
    assert r.stale_in_status is True, "door-bridge status says the cache is stale"
    assert r.central_ids == r.local_ids


def test_warn_policy_says_so_in_the_journal_once_the_cache_goes_stale(warn_day: OutageResult) -> None:
    during = [w for w in warn_day.warnings if w["phase"] == "outage" and "stale" in w["event"]]
    assert during, "a warning when the clock passes not_after"
