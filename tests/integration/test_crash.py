"""Prove it: SIGKILL a real daemon 20 times, mid-append, mid-pulse, mid-batch and at random, and lose nothing.

bench/crash.py's harness at CI size: a real `python -m bridge.cli run` process reading scans from a
pty at a steady pace and replicating its outbox (batches of 5, idle 50 ms) to a loopback central.
After every restart and at the end it compares the daemon's `decision` lines, the rows of audit.db
and what the central stored and answered (see `bench.crash.audit`). The last tests feed the auditor
tampered copies to show each of its checks can fail.

Stand-ins: systemd is played by the test (notify socket, SIGKILL, restart); GPIO is gpiozero's
MockFactory inside the daemon, observed through the daemon's status socket.
"""

from __future__ import annotations

import collections
import copy
import json
import re
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bench.crash import (
    KILL_KINDS,
    CentralView,
    CrashResult,
    CrashSettings,
    audit,
    logged_fingerprints,
    run_crash,
)

KILLS = 20


@pytest.fixture(scope="module")
def crash(tmp_path_factory: pytest.TempPathFactory) -> CrashResult:
    return run_crash(CrashSettings(kills=KILLS, seed=2024, work_dir=tmp_path_factory.mktemp("crash")))


def _problems(result: CrashResult, *kinds: str) -> list[str]:
    return [f"{kind}: {message}" for kind in kinds for message in result.problems[kind]]


def test_killed_20_times_at_every_kind_of_moment_and_audited_after_each_restart(crash: CrashResult) -> None:
    killed = [r for r in crash.runs if r.plan is not None]
    assert len(killed) == KILLS
    assert collections.Counter(r.kill_kind for r in killed) == {kind: KILLS // len(KILL_KINDS) for kind in KILL_KINDS}
    assert all(r.exit_code == -signal.SIGKILL for r in killed), _problems(crash, "exit")
    assert not [r.index for r in killed if r.killed_at_fallback], "a kill did not find the moment it aimed at"
    # mid-pulse kills landed while the status socket said the relay was energised
    assert all(r.pulse_witness is not None for r in killed if r.kill_kind == "mid-pulse")
    assert crash.audits == KILLS + 2  # after each of the KILLS restarts, after the final start, at the end
    figures = crash.figures()
    assert figures["grants_committed"] > 0 and figures["decisions_logged"] > KILLS


def test_no_decision_that_reached_the_log_or_the_relay_is_lost(crash: CrashResult) -> None:
    assert _problems(crash, "lost", "log", "skipped") == []
    figures = crash.figures()
    assert figures["lost"] == 0
    # Every scan is accounted for: decided and logged, committed by a run killed before its log
    # line, or never committed (killed before the append: the tail of its run).
    assert figures["scans_sent"] == (figures["decisions_logged"] + figures["committed_not_logged"]
                                     + figures["scans_absent"])


def test_nothing_stored_twice_centrally_and_every_resend_answered_as_duplicate(crash: CrashResult) -> None:
    assert _problems(crash, "stored_twice", "central") == []
    figures = crash.figures()
    assert figures["stored_twice"] == 0
    # A mid-batch kill with delay 0 dies after the central stored the batch and before it answered:
    # the batch must come again after the restart, and be answered as duplicates.
    assert any(r.plan is not None and r.plan.kind == "mid-batch" and r.plan.delay_s == 0 for r in crash.runs), \
        "the seed must plan at least one kill before the central answers"
    assert crash.central is not None and figures["resent_ids"] > 0
    assert figures["duplicates_central"] == sum(n - 1 for n in crash.central.posted.values())


def test_relay_released_right_after_every_restart(crash: CrashResult) -> None:
    assert _problems(crash, "relay") == []
    assert [r.ready_status["doors"]["main"]["relay"] for r in crash.runs] == ["released"] * (KILLS + 1)
    # read before any scan: the daemon had decided nothing yet
    assert [r.ready_status["decisions"]["total"] for r in crash.runs] == [0] * (KILLS + 1)


def test_every_boot_after_a_kill_reports_previous_exit_crash(crash: CrashResult) -> None:
    assert _problems(crash, "boot") == []
    boots = [json.loads(b)["previousExit"]["reason"] for b in _column(crash, "SELECT body FROM events WHERE type = 'BOOT' ORDER BY seq")]
    assert boots == ["first-start"] + ["crash"] * KILLS


def test_after_the_drain_the_central_holds_every_local_event_once_in_order(crash: CrashResult) -> None:
    assert crash.drained and crash.exit_code == 0
    assert crash.central is not None
    local = _column(crash, "SELECT id FROM events ORDER BY seq")
    assert list(crash.central.events) == local
    assert crash.figures()["pending_after_stop"] == 0


# --- the auditor can fail ------------------------------------------------------------------------


def _column(result: CrashResult, sql: str) -> list[str]:
    assert result.settings.work_dir is not None
    with closing(sqlite3.connect(result.settings.work_dir / "state" / "audit.db")) as conn:
        return [row[0] for row in conn.execute(sql)]


def _tampered_copy(result: CrashResult, tmp_path: Path, *statements: str) -> Path:
    assert result.settings.work_dir is not None
    state = tmp_path / "state"
    state.mkdir()
    with closing(sqlite3.connect(result.settings.work_dir / "state" / "audit.db")) as src, \
            closing(sqlite3.connect(state / "audit.db")) as dst:
        src.backup(dst)
        for sql in statements:
            dst.execute(sql)
        dst.commit()
    return state


def _reaudit(result: CrashResult, state: Path, central: CentralView) -> CrashResult:
    fresh = CrashResult(result.settings, runs=copy.deepcopy(result.runs), sent=result.sent)
    audit(fresh, state, lambda: central, fresh.runs, final=True)
    return fresh


def test_the_audit_notices_a_lost_row_a_wrong_boot_and_an_energised_relay(crash: CrashResult, tmp_path: Path) -> None:
    assert crash.central is not None
    first_verify = "(SELECT min(seq) FROM events WHERE type = 'VERIFY')"
    second_boot = "(SELECT seq FROM events WHERE type = 'BOOT' ORDER BY seq LIMIT 1 OFFSET 1)"
    state = _tampered_copy(crash, tmp_path, f"DELETE FROM events WHERE seq = {first_verify}",
                           "UPDATE events SET body = json_set(body, '$.previousExit.reason', 'clean') "
                           f"WHERE seq = {second_boot}")
    assert crash.settings.work_dir is not None
    untouched = _reaudit(crash, crash.settings.work_dir / "state", crash.central)
    assert sum(len(v) for v in untouched.problems.values()) == 0
    crash_copy = copy.deepcopy(crash)
    crash_copy.runs[2].ready_status["doors"]["main"]["relay"] = "energised"
    found = _reaudit(crash_copy, state, crash.central)
    assert any(m.startswith("run 0: decision cred=") for m in found.problems["lost"]), found.problems
    assert found.problems["central"], "the central holds an event the outbox no longer has"
    assert found.problems["boot"] == ["run 1: BOOT previousExit.reason='clean', expected 'crash'"]
    assert found.problems["relay"] == ["run 2: status right after READY says relay='energised'"]


def test_the_audit_notices_an_event_stored_twice_and_an_acked_event_the_central_lacks(crash: CrashResult) -> None:
    assert crash.central is not None and crash.settings.work_dir is not None
    victim = next(iter(crash.central.events))
    events = {k: v for k, v in crash.central.events.items() if k != victim}
    stored = crash.central.stored.copy()
    stored[victim] += 1
    found = _reaudit(crash, crash.settings.work_dir / "state",
                     CentralView(events, stored, crash.central.answered_duplicate, crash.central.posted))
    assert any(victim in m and "stored 2 times" in m for m in found.problems["stored_twice"]), found.problems
    assert any("acked but the central does not hold it" in m for m in found.problems["lost"]), found.problems


def test_the_audit_lets_only_the_rows_of_the_last_commit_go_without_a_line(crash: CrashResult, tmp_path: Path) -> None:
    """A kill after a batch's commit and before its lines leaves that batch unlogged (its rows
    share one `at`); rows committed apart and never logged mean lines were lost."""
    k, run = next((k, r) for k, r in enumerate(crash.runs)
                  if r.kill_kind is not None and len(logged_fingerprints(r.log_path)) >= 4)
    lines = run.log_path.read_text(errors="replace").splitlines(keepends=True)
    decisions = [i for i, line in enumerate(lines) if re.match(r"<\d>decision ", line)]
    cut = tmp_path / "cut.log"
    cut.write_text("".join(lines[:decisions[-3]]))  # the run's last three decision lines are gone
    boots = [int(s) for s in _column(crash, "SELECT seq FROM events WHERE type = 'BOOT' ORDER BY seq")]
    end = boots[k + 1] if k + 1 < len(boots) else 1 << 62
    verify = [int(s) for s in _column(crash, f"SELECT seq FROM events WHERE type = 'VERIFY' AND seq > {boots[k]} "
                                             f"AND seq < {end} ORDER BY seq")]
    tail = verify[len(logged_fingerprints(run.log_path)) - 3:]  # the three, and a row in flight if there was one
    runs = copy.deepcopy(crash)
    runs.runs[k].log_path = cut
    assert crash.central is not None

    def reaudit(name: str, at: str) -> list[str]:
        statements = [f"UPDATE events SET at = {at} WHERE seq = {seq}" for seq in tail]
        state = _tampered_copy(crash, tmp_path / name, *statements)
        return _reaudit(runs, state, crash.central).problems["log"]

    (tmp_path / "apart").mkdir()
    (tmp_path / "together").mkdir()
    assert reaudit("together", "'2026-12-03T17:00:00.000Z'") == []
    apart = reaudit("apart", "strftime('%Y-%m-%dT%H:%M:%fZ', at, '+' || (seq * 0.04) || ' seconds')")
    assert apart == [f"run {k}: {len(tail)} audit rows without a decision line (at most 1, the rows of the last "
                     "commit, may be in flight)"]
