"""`plan_reload(old, new)`: what a SIGHUP applies at once, what waits for a restart, what status shows.

The daemon-level proofs (scans keep flowing, a broken file is refused, a rotated bundle key takes
effect) are in tests/integration/test_service_lifecycle.py and test_upstream_through_daemon.py;
these pin each rule of the plan on plain configurations.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Config, from_dict
from bridge.service.reload_plan import plan_reload


def _data(tmp_path: Path) -> dict[str, Any]:
    return {
        "bridge": {"id": "BRIDGE-1", "state_dir": str(tmp_path / "state"), "log_level": "info"},
        "gpio": {"pin_factory": "mock"},
        "doors": {"main": {"relay_pin": 17, "pulse_s": 3.0}, "side": {"relay_pin": 22}},
        "readers": [{"type": "console", "id": "qr1", "door": "main"}],
        "policy": {"replay_window_s": 2.0},
        "offline": {"max_age_s": 3600, "max_entries": 1000},
    }


def _pair(tmp_path: Path, change) -> tuple[Config, Config]:
    old = _data(tmp_path)
    new = copy.deepcopy(old)
    change(new)
    return from_dict(old), from_dict(new)


def test_an_unchanged_file_changes_nothing(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: None)
    plan = plan_reload(old, new)
    assert plan.restart == () and plan.pulses == {} and not plan.guards_changed
    assert plan.running == old


def test_a_pulse_length_applies_at_once_to_that_door_only(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: d["doors"]["main"].update(pulse_s=5.0))
    plan = plan_reload(old, new)
    assert plan.restart == ()
    assert list(plan.pulses) == ["main"] and plan.pulses["main"].pulse_s == 5.0
    assert plan.running.doors["main"].pulse_s == 5.0 and plan.running.doors["side"] == old.doors["side"]


def test_a_door_wired_differently_waits_for_a_restart_and_status_shows_the_running_one(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: d["doors"]["main"].update(relay_pin=27, pulse_s=5.0))
    plan = plan_reload(old, new)
    assert plan.restart == ("doors.main",)
    assert plan.pulses == {}
    assert plan.running.doors["main"] == old.doors["main"]


@pytest.mark.parametrize("change, section", [
    (lambda d: d["doors"].pop("side"), "doors.side"),
    (lambda d: d["doors"].update(back={"relay_pin": 23}), "doors.back"),
])
def test_a_door_added_or_removed_waits_for_a_restart(tmp_path: Path, change, section: str) -> None:
    old, new = _pair(tmp_path, change)
    plan = plan_reload(old, new)
    assert plan.restart == (section,)
    assert set(plan.running.doors) == set(old.doors)


@pytest.mark.parametrize("change, section", [
    (lambda d: d["readers"].append({"type": "console", "id": "qr2", "door": "side"}), "readers"),
    (lambda d: d["gpio"].update(pin_factory="lgpio"), "gpio"),
    (lambda d: d.update(audit={"max_events": 1000}), "audit"),
    (lambda d: d.update(site={"time_zone": "Europe/Berlin"}), "site"),
])
def test_sections_owning_hardware_connections_or_files_wait_for_a_restart(tmp_path: Path, change, section: str) -> None:
    old, new = _pair(tmp_path, change)
    plan = plan_reload(old, new)
    assert plan.restart == (section,)
    assert getattr(plan.running, section) == getattr(old, section)


def test_the_bridge_id_and_state_dir_wait_but_the_log_level_applies(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["bridge"].update(id="BRIDGE-2", state_dir=str(tmp_path / "elsewhere"), log_level="debug")

    old, new = _pair(tmp_path, change)
    plan = plan_reload(old, new)
    assert plan.restart == ("bridge",)
    assert (plan.running.bridge.id, plan.running.bridge.state_dir) == (old.bridge.id, old.bridge.state_dir)
    assert plan.running.bridge.log_level == "debug"


def test_offline_limits_apply_at_once_but_its_store_bound_waits(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: d["offline"].update(max_age_s=60, max_entries=5000))
    plan = plan_reload(old, new)
    assert plan.restart == ("offline",)
    assert plan.offline.max_age_s == 60 and plan.offline.max_entries == 1000
    assert plan.running.offline == plan.offline


def test_offline_limits_alone_need_no_restart(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: d["offline"].update(learn=False))
    plan = plan_reload(old, new)
    assert plan.restart == () and plan.offline.learn is False


@pytest.mark.parametrize("key, value", [("replay_window_s", 5.0), ("rate_limit_denies", 3),
                                        ("rate_limit_window_s", 30.0), ("rate_limit_cooldown_s", 10.0)])
def test_new_replay_or_rate_limits_start_their_memory_afresh(tmp_path: Path, key: str, value: float) -> None:
    old, new = _pair(tmp_path, lambda d: d["policy"].update({key: value}))
    plan = plan_reload(old, new)
    assert plan.guards_changed and plan.restart == ()
    assert getattr(plan.running.policy, key) == value


def test_staleness_and_jwt_settings_apply_without_touching_the_guards(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, lambda d: d.update(cache={"staleness": "warn", "jwt_leeway_s": 5.0}))
    plan = plan_reload(old, new)
    assert plan.restart == () and not plan.guards_changed
    assert plan.running.cache.staleness == "warn" and plan.running.cache.jwt_leeway_s == 5.0


def test_several_changes_are_all_named_in_a_stable_order(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["gpio"].update(pin_factory="lgpio")
        d["readers"][0].update(id="qr9")
        d["doors"]["side"].update(relay_pin=5)
        d["bridge"].update(id="X")

    old, new = _pair(tmp_path, change)
    assert plan_reload(old, new).restart == ("readers", "gpio", "bridge", "doors.side")
