"""The guest run overlaps the host tests (tests/system/background.py): its tests come last, so
they find its report ready, and a session that ends first leaves no QEMU behind."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.system.background import GuestRun
from tests.system.qemu import Boot

ROOT = Path(__file__).resolve().parents[2]


def test_the_guest_tests_are_collected_after_every_host_test(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'pytest'}",
                          "tests/system", "tests/unit/test_bundle_json.py", "tests/integration/test_scan_pipeline.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    ids = [line for line in out.splitlines() if "::" in line]
    layers = [line.split("/")[1] for line in ids]
    assert {"system", "unit", "integration"} <= set(layers), out[-2000:]
    first_system = layers.index("system")
    assert set(layers[first_system:]) == {"system"}, "a host test is ordered after the guest's tests"


def test_stopping_a_run_still_in_progress_kills_its_qemu(tmp_path: Path) -> None:
    run = GuestRun()
    stand_in = subprocess.Popen(["sleep", "300"])  # a process where QEMU would be: the kill is real
    run._boot = Boot(stand_in, tmp_path / "console.log", tmp_path / "results.log", time.monotonic())
    run.stop()
    assert stand_in.poll() is not None, "the boot in progress outlived the session"
