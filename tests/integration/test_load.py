"""bench/load.py's harness at CI size: a real daemon process, 8 serial readers on ptys, 100 scans/s.

Correctness only, no timing: every scan written is decided exactly once, lands in the audit DB
exactly once with the decision the grant cache implies, every GRANT pulsed its door's relay, and
the daemon still answers its status socket and stops cleanly afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.load import EXPECT, GRANT, LoadResult, LoadSettings, run_load

READERS = 8
RATE = 100.0
SECONDS = 5.0


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> LoadResult:
    work: Path = tmp_path_factory.mktemp("load")
    return run_load(LoadSettings(rate=RATE, seconds=SECONDS, readers=READERS, grants=2000, work_dir=work,
                                 drain_stall_s=30.0))


def test_every_scan_written_was_sent_to_every_reader(result: LoadResult) -> None:
    assert result.sent == int(RATE * SECONDS)
    assert {reader for reader, _ in result.sent_keys} == {f"LOAD-R{i}" for i in range(READERS)}
    # The mix reached the daemon: every kind of scan, so every decision path ran.
    assert set(result.expected.values()) == set(EXPECT.values())


def test_every_scan_decided_exactly_once(result: LoadResult) -> None:
    assert result.logged_keys == result.sent_keys, result.log_tail


def test_nothing_dropped_or_duplicated_in_the_audit_db(result: LoadResult) -> None:
    assert result.audited_keys == result.sent_keys
    assert result.dropped == 0 and result.duplicated == 0


def test_each_decision_is_the_one_the_grant_cache_implies(result: LoadResult) -> None:
    assert result.wrong_decisions == 0
    # Pools are large enough that only malformed scans (fingerprinted by kind of garbage) repeat
    # at a reader within the replay window.
    assert result.replays_not_malformed == 0


def test_every_grant_pulsed_its_relay(result: LoadResult) -> None:
    assert result.planned_grants > 0
    assert result.granted == result.planned_grants
    assert result.pulsed == result.planned_grants


def test_daemon_healthy_after_the_load(result: LoadResult) -> None:
    assert result.status is not None, result.status_error
    assert result.status["decisions"]["total"] == result.sent
    assert result.status["decisions"]["granted"] == sum(
        n for key, n in result.sent_keys.items() if result.expected[key] == GRANT)
    per_reader: dict[str, int] = {}
    for (reader, _), n in result.sent_keys.items():
        per_reader[reader] = per_reader.get(reader, 0) + n
    assert {rid: r["scans"] for rid, r in result.status["readers"].items()} == per_reader
    assert result.exit_code == 0, result.log_tail


def test_every_decision_carries_a_latency(result: LoadResult) -> None:
    assert len(result.latencies_ms) == result.sent
    assert all(v >= 0 for v in result.latencies_ms)
