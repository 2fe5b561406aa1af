"""door-bridge on a real Debian 12 guest: systemd PID 1, kernel GPIO lines, uinput, journald, power cuts.

One run boots the guest (tests/system/image.py, tests/system/qemu.py) POWER_CUTS + 2 times on one
set of disks: `main` (install.sh on plain Debian, GPIO through gpio-sim, evdev through uinput with
Debian's python3-evdev and then PyPI's newest, systemd checks), POWER_CUTS boots of `cut` that each
end with QEMU SIGKILLed mid-scanning, and `final` (audit after the last cut, uninstall.sh). What the
guest checks arrives on its second serial port; each test below asserts one part of it.

Stand-ins: the GPIO lines are the kernel's gpio-sim (a real gpiochip driven through lgpio); the
central is tests/support/fakes' FakeCentral inside the guest on loopback, made durable (guest/central.py).

Outside CI a missing QEMU/mmdebstrap skips with the packages to install; with CI=true it fails.
DOOR_BRIDGE_POWER_CUTS sets the number of cuts (bench/guest.py runs 50). DOOR_BRIDGE_GUEST_ARCH=arm64
boots the same scenarios on an arm64 guest (bench/guest.py --arch arm64; not in CI's default run).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.system import background
from tests.system import image as image_mod
from tests.system.background import POWER_CUTS
from tests.system.power_cuts import Run, audit_power_cuts, power_cut_figures

PULSE_S = 1.0

pytestmark = pytest.mark.timeout(3600)


def _require_tools() -> None:
    if background.switched_off():
        pytest.skip("DOOR_BRIDGE_GUEST=0: the guest suite is switched off here (never in CI)")
    message = background.unavailable()
    if message is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing tool is a failure, see .ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The guest run tests/conftest.py started with the session (tests/system/background.py), or
    one started here when nothing did; its tests below each assert one part of what it reported."""
    _require_tools()
    result = background.RUN.result(tmp_path_factory)
    _print_figures(result)
    return result


def _print_figures(run: Run) -> None:
    boots = run.boot_s
    print(f"\nguest: parts ready in {run.build_s} s (rootfs {'built in ' + str(run.rootfs_built_s) + ' s' if run.rootfs_built_s else 'cached'}),"
          f" boot to scenario {min(boots):.1f}-{max(boots):.1f} s over {len(boots)} boots, main scenario {run.main_s} s,"
          f" {len(run.cuts)} power cuts")


def _failed(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("kind") == "check" and not m.get("ok")]


# --- boot and systemd -----------------------------------------------------------------------------


def test_guest_runs_systemd_as_pid1_on_debians_own_kernel(run: Run) -> None:
    boot = next(m for m in run.main if m.get("kind") == "boot")
    assert boot["pid1"] == "systemd"
    assert boot["kernel"].endswith(f"-{image_mod.guest_arch().debian}"), boot["kernel"]
    assert boot["multi_user"] == "active", boot
    print(f"\nguest boot: uptime {boot['uptime_s']} s when the scenario started (multi-user.target active)")


def test_install_sh_on_plain_debian_12_and_its_second_run(run: Run) -> None:
    first = run.check("install_plain_debian")
    assert first["ok"] and first["lgpio_from_pypi"], first
    assert run.check("ready_after_install")["ok"], run.check("ready_after_install")
    assert run.check("install_second_run")["ok"], run.check("install_second_run")


def test_security_score_in_the_guest_is_at_most_2_5(run: Run) -> None:
    check = run.check("security_score")
    print(f"\nsystemd-analyze security door-bridge.service in the guest: {check['score']}")
    assert check["ok"], check


def test_api_key_arrives_by_load_credential_and_syncs_from_the_loopback_central(run: Run) -> None:
    check = run.check("api_key_by_load_credential")
    assert check["ok"] and check["key_mode"] == "0o600", check
    assert run.check("bundle_applied_by_a_niced_child")["ok"], run.check("bundle_applied_by_a_niced_child")


def test_reload_keeps_scanning_sigkill_and_watchdog_restart(run: Run) -> None:
    for name in ("reload_keeps_scanning", "restart_after_sigkill", "watchdog_restart"):
        assert run.check(name)["ok"], run.check(name)


def test_journal_priority_warning_shows_the_fault_and_drops_info_lines(run: Run) -> None:
    assert run.check("journal_priority_warning")["ok"], run.check("journal_priority_warning")


def test_journal_fields_filter_decisions_by_reason_and_reader_warnings_under_the_real_journald(run: Run) -> None:
    """Issue 18: the native protocol's fields as systemd-journald stores them for the unit."""
    for name in ("journal_fields_on_decisions", "journal_reason_filter", "journal_cat_is_the_readable_line",
                 "journal_reader_warning_filter"):
        assert run.check(name)["ok"], run.check(name)
    reasons = run.check("journal_reason_filter")["reasons"]
    print(f"\njournald in the guest: {run.check('journal_fields_on_decisions')['decisions']} decision entries, all with their fields;"
          f" REASON= filters {({k: v['got'] for k, v in reasons.items()})} exact; READER_ID=qr1 -p warning:"
          f" {run.check('journal_reader_warning_filter')['want']} entries")


def test_uninstall_removes_the_service_and_keeps_the_audit_trail(run: Run) -> None:
    assert run.check("uninstall")["ok"], run.check("uninstall")


# --- GPIO -----------------------------------------------------------------------------------------


def test_relay_line_is_released_from_the_start_and_pulses_only_for_grants_and_rex(run: Run) -> None:
    for name in ("gpio_sim_chip", "relay_inactive_at_start", "relay_pulse_distribution", "relay_pulse_pypi",
                 "relay_only_for_grants_and_rex"):
        assert run.check(name)["ok"], run.check(name)
    audit = run.check("relay_only_for_grants_and_rex")
    print(f"\nrelay line (kernel trace): {audit['relay']['sets']} values driven, {len(audit['relay']['pulses'])} pulses "
          f"{audit['relay']['pulses']} for {audit['pulse_events']} GRANT/REX rows, active now: {audit['relay']['active_now']}")


def test_an_active_low_relay_line_is_claimed_at_its_inactive_level(run: Run) -> None:
    """The stock gpiozero lgpio pin, on a spare line beside ours, shows the LOW blip this avoids."""
    check = run.check("output_claimed_at_inactive_level")
    assert check["ok"], check


def test_door_switch_and_rex_from_the_sim_side_are_audited(run: Run) -> None:
    assert run.check("door_switch_and_rex_audited")["ok"], run.check("door_switch_and_rex_audited")


# --- evdev ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["distribution", "pypi"])
def test_uinput_wedge_scanner_decides_grabs_exclusively_and_recovers(run: Run, label: str) -> None:
    skipped = [m for m in run.main if m.get("kind") == "skipped" and m.get("name") == f"evdev_{label}"]
    if skipped and image_mod.guest_arch() is not image_mod.X86_64:
        pytest.skip(f"{image_mod.guest_arch().name}: {skipped[0]['why']}: {skipped[0]['no_wheel']}")
    for part in ("grant", "deny", "exclusive_grab", "recreated"):
        assert run.check(f"evdev_{label}_{part}")["ok"], run.check(f"evdev_{label}_{part}")
    assert run.check(f"status_healthy_{label}")["ok"], run.check(f"status_healthy_{label}")
    version = run.check(f"evdev_{label}_grant")["evdev"]
    assert version.startswith("1.6") if label == "distribution" else int(version.split(".")[0]) >= 2, version
    print(f"\nevdev {label}: python-evdev {version}: grant, deny, EBUSY on a second grab, re-created device recovered")


def test_every_guest_check_passed(run: Run) -> None:
    assert _failed(run.main + run.final) == []


# --- power cuts -----------------------------------------------------------------------------------


def test_power_cuts_lose_no_acknowledged_decision_duplicate_nothing_and_never_energise_the_relay(run: Run) -> None:
    assert len(run.cuts) == POWER_CUTS
    audits, problems = audit_power_cuts(run)
    figures = power_cut_figures(run, audits, problems)
    if target := os.environ.get("DOOR_BRIDGE_GUEST_FIGURES"):
        Path(target).write_text(json.dumps(figures, indent=1) + "\n")
    print(f"\npower cuts: {POWER_CUTS}, acknowledged decisions {figures['acked_total']}, found after the next boot "
          f"{figures['found_total']}, VERIFY rows after the last boot {figures['verify_rows_after_last_boot']},"
          f" central holds {figures['central_events_after_last_boot']} events (stored twice: {figures['central_duplicates']});"
          f" BOOT reasons {figures['boot_reasons_after_last_boot']}")
    assert figures["acked_total"] >= 3 * POWER_CUTS
    assert problems == []
