"""bench/report.py's figures against their floors: the arithmetic and what it leaves out (the
figures themselves are the benches' job, printed, never asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _report():  # bench/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    return module


def test_a_decision_is_shown_as_a_multiple_of_the_prepared_statement_look_up() -> None:
    report = _report()
    found = report.against_floors("decide.py", {"p99_us_card": 91.0, "lookup_us_prepared": 7.0, "p99_us": 70.0})
    assert [(f.figure, round(r, 2)) for f, r in found] == [("p99_us_card", 13.0), ("p99_us", 10.0)]


def test_missing_or_zero_floors_are_left_out_not_shown_as_zero_or_infinity() -> None:
    report = _report()
    assert report.against_floors("load.py", {"p99_ms": 3.0, "outbox_append_ms": 0}) == []
    assert report.against_floors("sync.py", {"p99_us_during": 120.0}) == []
    assert report.against_floors("crash.py", {"p99_ms": 3.0}) == []


def test_the_report_renders_the_floor_table() -> None:
    report = _report()
    outcome = report.Outcome(report.Job("load.py", "load.py"), 1.0, {"p99_ms": 6.0, "outbox_append_ms": 2.0,
                                                                     "dropped": 0, "healthy": True})
    outcome.load = (1.5, 1.75)
    text = report.render([outcome], quick=True, plot_note="not drawn here", png=Path("x.png"))
    assert "| load.py | `(defaults)` | ok | 1 | 1.5 → 1.75 |" in text  # the shared machine's load beside each run
    assert "| p99_ms | 3.0× | outbox_append_ms = 2: one fsync'd audit append on the same file system |" in text


def test_a_cached_decision_is_also_shown_against_an_online_round_trip() -> None:
    """Cached vs online (issue 17): the loopback central's median round trip is the second floor
    of a decision, and a fraction is shown with its digits, not rounded to 0.0×."""
    report = _report()
    figures = {"p99_us_card": 90.0, "p99_us_jwt": 200.0, "lookup_us_prepared": 9.0, "online_p50_us": 3000.0}
    found = {(f.figure, f.floor): r for f, r in report.against_floors("decide.py", figures)}
    assert found[("p99_us_card", "online_p50_us")] == 0.03 and found[("p99_us_card", "lookup_us_prepared")] == 10.0
    outcome = report.Outcome(report.Job("decide.py", "decide.py"), 1.0, figures)
    text = report.render([outcome], quick=True, plot_note="not drawn here", png=Path("x.png"))
    assert "| p99_us_card | 0.03× | online_p50_us = 3,000: one online verify round trip" in text
    assert "| p99_us_jwt | 0.067× |" in text


def test_the_card_p99_is_also_set_against_the_look_ups_own_p99() -> None:
    """A p99 against a mean puts the VM's jitter on the decision: the card p99 is shown against
    the prepared look-up's mean and against its p99, both labelled."""
    report = _report()
    figures = {"p99_us_card": 90.0, "lookup_us_prepared": 9.0, "lookup_us_prepared_p99": 30.0}
    found = {(f.figure, f.floor): r for f, r in report.against_floors("decide.py", figures)}
    assert found[("p99_us_card", "lookup_us_prepared")] == 10.0
    assert found[("p99_us_card", "lookup_us_prepared_p99")] == 3.0
    outcome = report.Outcome(report.Job("decide.py", "decide.py"), 1.0, figures)
    text = report.render([outcome], quick=True, plot_note="not drawn here", png=Path("x.png"))
    assert "| p99_us_card | 3.0× | lookup_us_prepared_p99 = 30: one prepared-statement card look-up in the same cache (its p99) |" in text
