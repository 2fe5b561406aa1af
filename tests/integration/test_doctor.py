"""`door-bridge doctor` against this machine (no GPIO, no scanners) and real device nodes.

Real parts: the doctor runs against this machine's own /dev, /sys and groups; a serial reader is
pointed at a real pseudo-terminal (`os.openpty`); state databases are real SQLite files. The one
fake is a sysfs USB tree in a temporary directory for the NFC frontend tests: no real stand-in
exists for a plugged-in Sony RC-S380 on a machine without USB.
"""

from __future__ import annotations

import glob
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli import doctor
from bridge.config import ConfigError, from_dict
from bridge.cli.doctor import (
    Identity,
    Report,
    access_problem,
    check_node,
    check_reader,
    run,
)

ROOT = Path(__file__).resolve().parents[2]
NO_GPIO = not glob.glob("/dev/gpiochip*")
# Someone who is neither the owner of a temp file nor in any of its groups.
STRANGER = Identity("stranger", os.geteuid() + 4242, frozenset({os.getegid() + 4242}))


def doctor_output(config_path: str | None) -> tuple[int, str]:
    out = io.StringIO()
    code = run(config_path, out)
    return code, out.getvalue()


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("== ")]


def findings(text: str, level: str) -> list[str]:
    return [line for line in lines(text) if line.startswith(f"{level} ")]


def write_config(tmp_path: Path, body: str, pin_factory: str = "mock") -> str:
    path = tmp_path / "door.toml"
    path.write_text(
        f'[bridge]\nstate_dir = "{tmp_path / "state"}"\n[gpio]\npin_factory = "{pin_factory}"\n'
        f"[doors.main]\nrelay_pin = 17\n{body}"
    )
    return str(path)


@pytest.fixture(autouse=True)
def no_factory_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)


@pytest.fixture
def pty_path() -> Iterator[str]:
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


# --- the whole report --------------------------------------------------------------------------------


def test_without_config_reports_every_section_with_prefixed_lines_and_exits_0() -> None:
    code, text = doctor_output(None)
    assert code == 0, text
    for section in ("configuration", "machine", "groups", "GPIO", "input devices (evdev)", "serial ports",
                    "NFC frontends", "state", "installation"):
        assert f"== {section} ==" in text
    body = lines(text)
    assert body[-1].endswith("warning(s)") and body[-1].startswith("0 failure(s)")
    assert all(line.split(" ", 1)[0] in ("ok", "warn", "fail") for line in body[:-1]), text
    assert any("no configuration given" in line for line in findings(text, "warn"))
    assert not findings(text, "fail")


@pytest.mark.skipif(not NO_GPIO, reason="this machine has GPIO")
def test_a_machine_without_gpio_says_so_as_a_warning() -> None:
    code, text = doctor_output(None)
    assert code == 0
    assert any("no /dev/gpiochip*" in line for line in findings(text, "warn"))


def test_runs_as_a_separate_process_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from bridge.cli.doctor import run; sys.exit(run(None, sys.stdout))"],
        check=False, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "== serial ports ==" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_the_cli_subcommand_finds_a_pty_reader_and_exits_0(tmp_path: Path, pty_path: str) -> None:
    config = write_config(tmp_path, f'[[readers]]\ntype = "serial"\nid = "QR-1"\nport = "{pty_path}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("DOOR_BRIDGE_CONFIG", "GPIOZERO_PIN_FACTORY")}
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "doctor", "--config", config],
                          check=False, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ok    reader QR-1 (serial): {pty_path} found" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_the_example_config_checks_out_with_simulated_pins() -> None:
    code, text = doctor_output(str(ROOT / "config.example.toml"))
    assert "ok    door main relay_pin BCM 17: simulated" in text
    assert any('pin_factory = "mock"' in line for line in findings(text, "warn"))
    assert any("reader BRIDGE-1 (console)" in line for line in findings(text, "warn"))
    assert code == (1 if findings(text, "fail") else 0)


def test_invalid_config_exits_2_naming_key_and_still_lists_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "door.toml"
    path.write_text("[doors.main]\nrelay_pin = 17\npulse_secs = 3\n")
    code, text = doctor_output(str(path))
    assert code == 2
    assert f"fail  {path}: doors.main.pulse_secs: unknown key" in text
    assert any("door-bridge check-config" in line for line in findings(text, "fail"))
    assert "== serial ports ==" in text and "configured pins" not in text


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    code, text = doctor_output(str(tmp_path / "nope.toml"))
    assert code == 2
    assert "file not found" in text


# --- configured readers -----------------------------------------------------------------------------


def test_a_serial_reader_on_a_missing_port_fails_with_what_to_do(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[[readers]]\ntype = "serial"\nid = "QR-1"\nport = "/dev/ttyUSB97"\n')
    code, text = doctor_output(config)
    assert code == 1
    [line] = [f for f in findings(text, "fail") if "reader QR-1" in f]
    assert "reader QR-1 (serial): /dev/ttyUSB97 missing" in line
    assert "ls -l /dev/serial/by-id/" in line and "door-bridge doctor" in line
    assert any("numbered in plug-in order" in f for f in findings(text, "warn"))


def test_a_serial_reader_on_a_real_pty_is_found(tmp_path: Path, pty_path: str) -> None:
    config = write_config(tmp_path, f'[[readers]]\ntype = "serial"\nid = "QR-1"\nport = "{pty_path}"\n')
    code, text = doctor_output(config)
    assert f"ok    reader QR-1 (serial): {pty_path} found" in text
    assert not findings(text, "fail"), text
    assert code == 0


def test_a_device_the_service_user_cannot_open_names_group_rule_and_ls(pty_path: str) -> None:
    os.chmod(pty_path, 0o600)
    finding = check_node("reader QR-1 (serial)", pty_path, "serial", STRANGER)
    assert finding.level == "fail"
    assert "no permission" in finding.text
    assert "usermod -aG dialout stranger" in finding.text
    assert "hardware/udev/99-door-bridge.rules" in finding.text and 'SUBSYSTEM=="tty"' in finding.text
    assert f"ls -l {pty_path}" in finding.text


def test_a_regular_file_is_not_taken_for_a_device(tmp_path: Path) -> None:
    path = tmp_path / "ttyUSB0"
    path.write_text("")
    finding = check_node("reader QR-1 (serial)", str(path), "serial", STRANGER)
    assert finding.level == "fail" and "not a character device" in finding.text


def test_a_missing_evdev_device_fails_by_path_and_by_name() -> None:
    evdev_scanner = pytest.importorskip("bridge.inputs.evdev_scanner")
    me = doctor.current_identity()
    by_path = evdev_scanner.EvdevScannerConfig(type="evdev", id="QR-2", device="/dev/input/by-id/usb-Gone-event-kbd")
    [finding, *_] = check_reader(by_path, me)
    assert finding.level == "fail" and "/dev/input/by-id/usb-Gone-event-kbd missing" in finding.text
    by_name = evdev_scanner.EvdevScannerConfig(type="evdev", id="QR-2", device="No Such Scanner")
    [finding] = check_reader(by_name, me)
    assert finding.level == "fail" and "no input device matches 'No Such Scanner'" in finding.text
    assert "group input" in finding.text


def test_a_missing_evdev_device_in_a_config_file(tmp_path: Path) -> None:
    reader = '[[readers]]\ntype = "evdev"\nid = "QR-2"\ndevice = "/dev/input/by-id/usb-Gone-event-kbd"\n'
    try:
        from_dict({"doors": {"main": {"relay_pin": 17}},
                   "readers": [{"type": "evdev", "id": "QR-2", "device": "/dev/input/x"}]})
    except ConfigError:
        pytest.skip("bridge.config does not accept evdev readers yet")
    code, text = doctor_output(write_config(tmp_path, reader))
    assert code == 1
    assert any("reader QR-2 (evdev)" in f and "missing" in f for f in findings(text, "fail"))


# --- GPIO pins --------------------------------------------------------------------------------------


@pytest.mark.skipif(not NO_GPIO, reason="this machine has GPIO")
def test_configured_pins_on_a_machine_without_gpio_fail_one_line_each(tmp_path: Path) -> None:
    config = write_config(tmp_path, "door_switch_pin = 27\nrex_pin = 22\n", pin_factory="auto")
    code, text = doctor_output(config)
    assert code == 1
    pin_failures = [f for f in findings(text, "fail") if "no GPIO on this machine" in f]
    assert [f.split(":")[0] for f in pin_failures] == [
        "fail  door main relay_pin BCM 17", "fail  door main door_switch_pin BCM 27", "fail  door main rex_pin BCM 22"]
    assert all('pin_factory = "mock"' in f for f in pin_failures)


def test_an_active_low_relay_on_a_pin_pulled_low_at_boot_is_warned_but_not_an_led(tmp_path: Path) -> None:
    config = write_config(tmp_path, "relay_active_high = false\nled_pin = 24\nled_active_high = false\n"
                                    "aux_relay_pin = 5\naux_relay_active_high = false\n")
    code, text = doctor_output(config)
    warned = [f for f in findings(text, "warn") if "pulled LOW at boot" in f]
    assert len(warned) == 1 and "relay_pin BCM 17" in warned[0] and "gpio=17=op,dh" in warned[0]
    assert code == 0, text


def test_wiegand_lines_are_checked_with_the_door_pins() -> None:
    wiegand = pytest.importorskip("bridge.inputs.wiegand")
    reader = wiegand.WiegandReaderConfig(type="wiegand", id="W-1", d0_pin=17, d1_pin=1)
    uses = [doctor.PinUse("door main relay_pin", 17), doctor.PinUse("reader W-1 d0_pin", reader.d0_pin),
            doctor.PinUse("reader W-1 d1_pin", reader.d1_pin)]
    result = list(doctor.check_pins(uses, "mock", doctor.current_identity()))
    assert [f.text for f in result if f.level == "fail"] == [
        "reader W-1 d0_pin BCM 17: also used by door main relay_pin: give each function its own pin (hardware/pinmap.md)"]
    assert any(f.level == "warn" and "BCM 1: not a general-purpose header pin" in f.text for f in result)
    assert check_reader(reader, doctor.current_identity())[0].level == "ok"


# --- NFC frontends (fake sysfs tree) -----------------------------------------------------------------


def usb_device(sys_usb: Path, name: str, ids: str, bus: int, dev: int, driver: str | None = None) -> None:
    entry = sys_usb / name
    entry.mkdir(parents=True)
    vendor, product = ids.split(":")
    for attr, value in (("idVendor", vendor), ("idProduct", product), ("busnum", str(bus)),
                        ("devnum", str(dev)), ("product", "RC-S380/P")):
        (entry / attr).write_text(value + "\n")
    interface = sys_usb / f"{name}:1.0"
    interface.mkdir()
    if driver:
        (sys_usb / driver).mkdir()
        (interface / "driver").symlink_to(sys_usb / driver)


def test_known_nfc_frontends_are_found_by_usb_id_and_kernel_drivers_flagged(tmp_path: Path) -> None:
    usb_device(tmp_path, "1-1", "054c:06c3", 1, 4, driver="port100")
    usb_device(tmp_path, "1-2", "046d:c52b", 1, 5)  # a mouse receiver: not an NFC reader
    usb_device(tmp_path, "1-3", "04e6:5591", 1, 6)
    result = list(doctor.probe_nfc(doctor.current_identity(), str(tmp_path)))
    assert len(result) == 2
    sony, scl = result
    assert sony.level == "warn" and 'Sony RC-S380 usb:054c:06c3' in sony.text and "port100" in sony.text
    assert "door-bridge-nfc-blacklist.conf" in sony.text
    assert 'SCM SCL3711 usb:04e6:5591 at /dev/bus/usb/001/006 (nfc device = "usb:04e6:5591")' in scl.text


def test_nfc_readers_in_config_are_matched_by_path(tmp_path: Path) -> None:
    nfc = pytest.importorskip("bridge.inputs.nfc")
    usb_device(tmp_path, "1-1", "054c:06c3", 1, 4)
    me = doctor.current_identity()

    def check(device: str) -> doctor.Finding:
        [finding] = check_reader(nfc.NfcReaderConfig(type="nfc", id="NFC-1", device=device), me, str(tmp_path))
        return finding

    assert "Sony RC-S380" in check("usb").text
    assert "Sony RC-S380" in check("usb:054c:06c3").text
    assert "Sony RC-S380" in check("usb:001:004").text
    acr = check("usb:072f:2200")
    assert acr.level == "fail" and "no NFC frontend matches 'usb:072f:2200'" in acr.text
    assert check("udp:127.0.0.1:54321").level == "warn"
    if not os.path.exists("/dev/ttyAMA7"):
        uart = check("tty:AMA7:pn532")
        assert uart.level == "fail" and "/dev/ttyAMA7 missing" in uart.text


def test_no_usb_bus_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    [finding] = doctor.probe_nfc(doctor.current_identity(), str(tmp_path / "absent"))
    assert finding.level == "warn"


# --- state, permissions, guards, secrets -----------------------------------------------------------


def test_state_dir_lists_the_databases_with_sizes(tmp_path: Path) -> None:
    for name in ("grants.db", "audit.db"):
        with sqlite3.connect(tmp_path / name) as db:
            db.execute("create table t (x)")
    result = list(doctor.probe_state_dir(tmp_path, doctor.current_identity(), configured=True))
    assert result[0] == doctor.ok(f"state dir {tmp_path} writable by {doctor.current_identity().name}")
    assert [f.text.split(":")[0] for f in result[1:]] == [str(tmp_path / "grants.db"), str(tmp_path / "audit.db")]
    assert all(f.level == "ok" and (f.text.endswith(" B") or f.text.endswith(" KiB")) for f in result[1:])


def test_a_state_dir_the_service_user_cannot_write_fails(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o750)
    [finding, *_] = doctor.probe_state_dir(tmp_path, STRANGER, configured=True)
    assert finding.level == "fail" and "not writable" in finding.text and f"ls -ld {tmp_path}" in finding.text


def test_permission_is_judged_from_mode_bits_for_the_service_user(tmp_path: Path) -> None:
    path = tmp_path / "node"
    path.write_text("")
    os.chmod(path, 0o660)
    st = os.stat(path)
    member = Identity("member", STRANGER.uid, frozenset({st.st_gid}))
    assert access_problem(st, member) is None
    assert "is not in group" in (access_problem(st, STRANGER) or "")
    assert access_problem(st, Identity("root", 0, frozenset())) is None
    os.chmod(path, 0o640)
    assert "not readable and writable by user member" in (access_problem(os.stat(path), member) or "")


def test_a_probe_that_breaks_becomes_a_warning() -> None:
    def broken() -> list[doctor.Finding]:
        raise RuntimeError("sysfs went away")

    report = Report()
    report.section("NFC frontends", broken)
    out = io.StringIO()
    report.write(out)
    assert "warn  could not check NFC frontends: RuntimeError: sysfs went away" in out.getvalue()


def test_the_api_key_is_checked_but_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "api-key"
    key.write_text("mk_live_0123456789abcdef\n")
    os.chmod(key, 0o644)
    monkeypatch.setattr(doctor, "INSTALLED_API_KEY", key)
    code, text = doctor_output(None)
    assert "mk_live" not in text
    assert any(str(key) in f and "chmod 600" in f for f in findings(text, "warn"))
    assert code == 0
