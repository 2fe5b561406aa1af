"""The service unit, its install scripts and udev rules, checked by the real tools where they exist.

`systemd-analyze verify` insists that ExecStart's binary exists, and /opt/door-bridge/venv does not
exist on a build machine. So verify runs on a temporary copy of the unit whose ExecStart points at a
stub executable in a temp dir; every other line is verified as shipped. (`--root=` would instead need
a whole OS tree, sysinit.target and /bin/kill included, under the temporary root.)
`systemd-analyze security --offline=yes` scores the unit file as shipped.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.checkout import checkout  # noqa: F401  (fixture: the files install.sh reads)

ROOT = Path(__file__).resolve().parents[2]

UNIT = ROOT / "systemd" / "door-bridge.service"
INSTALL = ROOT / "systemd" / "install.sh"
UNINSTALL = ROOT / "systemd" / "uninstall.sh"
UDEV_RULES = ROOT / "hardware" / "udev" / "99-door-bridge.rules"
SHIPPED_EXEC = "/opt/door-bridge/venv/bin/door-bridge"
SHIPPED_PYTHON = "/opt/door-bridge/venv/bin/python"
MAX_EXPOSURE = 2.5

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed here (apt-get install systemd)")


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → every value in order (systemd keys repeat; an empty value resets the list)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    logical = re.sub(r"\\\n", " ", text)
    for line in logical.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
            values.append("")
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(UNIT.read_text())["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= is not set"
    return values[-1]


# --- the real tools ---------------------------------------------------------------------------------


def _analyze_supports(*args: str) -> bool:
    assert ANALYZE
    done = subprocess.run([ANALYZE, *args, "--help"], capture_output=True, text=True, check=False, timeout=60)
    return "unrecognized option" not in done.stderr and "unknown option" not in done.stderr.lower()


@pytest.fixture
def verifiable_copy(tmp_path: Path) -> Path:
    stub = tmp_path / "door-bridge"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    copy = unit_dir / "door-bridge.service"
    text = UNIT.read_text()
    assert SHIPPED_EXEC in text
    copy.write_text(text.replace(SHIPPED_EXEC, str(stub)).replace(SHIPPED_PYTHON, str(stub)))
    return copy


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(verifiable_copy: Path) -> None:
    assert ANALYZE
    if not Path("/bin/kill").exists():
        pytest.skip("/bin/kill (ExecReload) is not installed here, so verify would reject it")
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(verifiable_copy)], capture_output=True, text=True, check=False, timeout=120)
    # Lines about the unit itself (unknown keys, bad values, missing binaries) are all failures.
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "door-bridge" in line]
    assert done.returncode == 0, done.stderr
    assert complaints == []


@needs_analyze
def test_verify_would_catch_a_misspelt_option(verifiable_copy: Path) -> None:
    """The check above can fail: the same command reports a typo in the unit."""
    assert ANALYZE
    verifiable_copy.write_text(verifiable_copy.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(verifiable_copy)], capture_output=True, text=True, check=False, timeout=120)
    assert "Unknown key 'ProtectHom'" in done.stderr


def exposure(unit: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    assert ANALYZE
    threshold = int(MAX_EXPOSURE * 10)  # --threshold is in tenths of the 0–10 scale, as shown ×10
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False, timeout=120,
    )
    match = re.search(r"Overall exposure level for door-bridge\.service: (\d+(?:\.\d+)?)", done.stdout)
    assert match, f"no exposure line in:\n{done.stdout}\n{done.stderr}"
    return float(match.group(1)), done


@needs_analyze
def test_security_exposure_is_at_most_2_5() -> None:
    if not _analyze_supports("security", "--offline=yes"):
        pytest.skip("this systemd-analyze has no 'security --offline' (needs systemd >= 250)")
    score, done = exposure(UNIT)
    assert score <= MAX_EXPOSURE, done.stdout
    assert done.returncode == 0, f"--threshold rejected the unit:\n{done.stdout}"


@needs_analyze
def test_security_score_reacts_to_losing_the_sandbox(tmp_path: Path) -> None:
    """The score is a real measurement: stripping the hardening pushes it over the limit."""
    if not _analyze_supports("security", "--offline=yes"):
        pytest.skip("this systemd-analyze has no 'security --offline' (needs systemd >= 250)")
    lines = UNIT.read_text().splitlines()
    keep = ("[", "Type=", "ExecStart=", "User=", "Group=", "Description=", "WantedBy=")
    bare = tmp_path / "door-bridge.service"
    bare.write_text("\n".join(line for line in lines if line.startswith(keep)) + "\n")
    score, done = exposure(bare)
    assert score > MAX_EXPOSURE
    assert done.returncode != 0


# --- what the unit must say (the contract with the daemon and the hardware) ---------------------------


def test_unit_is_notify_with_watchdog_and_restarts(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert one(service, "WatchdogSec") == "30s"
    assert one(service, "Restart") == "always"
    assert one(service, "RestartSec")
    assert one(service, "ExecStart") == f"{SHIPPED_EXEC} run --config /etc/door-bridge/config.toml"
    assert one(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "TimeoutStopSec") == "10s"
    assert one(service, "SyslogIdentifier") == "door-bridge"


def _stop_post_command(service: dict[str, list[str]]) -> list[str]:
    line = one(service, "ExecStopPost").lstrip("-")
    argv = line.split()
    assert argv[0] == SHIPPED_PYTHON, line
    return [sys.executable, *argv[1:]]


def test_exec_stop_post_records_a_watchdog_exit_without_the_configuration(service: dict[str, list[str]], tmp_path: Path) -> None:
    """ExecStopPost shares TimeoutStopSec; in a slow guest the full CLI (config, pydantic, httpx) overran
    it after a watchdog kill, the record was lost and the restart reported `crash` (seen in CI)."""
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "STATE_DIRECTORY": str(state), "SERVICE_RESULT": "watchdog", "EXIT_CODE": "killed",
           "EXIT_STATUS": "ABRT", "PYTHONPATH": str(ROOT), "DOOR_BRIDGE_CONFIG": str(tmp_path / "absent.toml")}
    done = subprocess.run([*_stop_post_command(service)[:1], "-X", "importtime", *_stop_post_command(service)[1:]],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    record = __import__("json").loads((state / "last-exit.json").read_text())
    assert record["serviceResult"] == "watchdog" and record["exitStatus"] == "ABRT"
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(m for m in imported if m.split(".")[0] in {"pydantic", "httpx", "structlog", "cryptography", "gpiozero"}
                   or m in {"bridge.config", "bridge.cli"})
    assert heavy == [], heavy


def test_unit_runs_as_its_own_user_with_device_groups(service: dict[str, list[str]]) -> None:
    assert one(service, "User") == "door-bridge"
    assert set(one(service, "SupplementaryGroups").split()) == {"gpio", "input", "dialout", "plugdev"}
    for key in ("StateDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert one(service, key) == "door-bridge"
    assert service["LoadCredential"] == ["api-key:/etc/door-bridge/api-key"]
    assert one(service, "CapabilityBoundingSet") == ""


def test_unit_admits_the_reader_and_relay_devices_and_nothing_else(service: dict[str, list[str]]) -> None:
    assert one(service, "DevicePolicy") == "closed"
    assert service.get("PrivateDevices", ["no"])[-1] in ("no", "false")
    allowed = {entry.split()[0]: entry.split()[1] for entry in service["DeviceAllow"]}
    for device in ("char-gpiochip", "/dev/gpiomem", "char-input", "char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-usb_device"):
        assert allowed.get(device) == "rw", device


def test_unit_keeps_the_network_it_needs(service: dict[str, list[str]]) -> None:
    families = set(" ".join(service["RestrictAddressFamilies"]).split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families
    assert not any(f.startswith("~") for f in families)
    assert "IPAddressDeny" not in service
    assert service.get("PrivateNetwork", ["no"])[-1] in ("no", "false")
    assert one(service, "ProtectSystem") == "strict"
    assert one(service, "SystemCallFilter") and "@system-service" in service["SystemCallFilter"]


_MDWE_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)  # a libffi closure
assert callback(41) == 42
import serial, evdev, gpiozero, nfc, usb1, httpx, jwt, sqlite_utils, structlog, tenacity, pydantic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.generate()
key.public_key().verify(key.sign(b"bundle"), b"bundle")
import bridge.service.sdnotify, bridge.service.status_socket
print("ok")
"""


def test_dependencies_run_without_writable_executable_memory() -> None:
    """MemoryDenyWriteExecute=yes must not break the daemon's libraries: same rule via prctl(PR_SET_MDWE)."""
    done = subprocess.run([sys.executable, "-c", _MDWE_PROBE], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT)
    if done.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (needs Linux >= 6.3)")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# --- install / uninstall scripts -----------------------------------------------------------------------


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=["install", "uninstall"])
def test_scripts_parse_and_are_executable(script: Path) -> None:
    assert script.stat().st_mode & stat.S_IXUSR
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=["install", "uninstall"])
def test_scripts_pass_shellcheck(script: Path) -> None:
    # -x follows `. script-helpers.sh`, so the helpers are checked with each script's variables.
    done = subprocess.run(["shellcheck", "-x", script.name], capture_output=True, text=True, check=False, timeout=60, cwd=script.parent)
    assert done.returncode == 0, done.stdout


def _snapshot(paths: list[str]) -> dict[str, bool]:
    return {p: os.path.lexists(p) for p in paths}


SYSTEM_PATHS = ["/opt/door-bridge", "/etc/door-bridge", "/etc/systemd/system/door-bridge.service", "/etc/udev/rules.d/99-door-bridge.rules", "/etc/modprobe.d/door-bridge-nfc.conf"]


def test_install_dry_run_prints_the_plan_and_changes_nothing(checkout: Path) -> None:
    before = _snapshot(SYSTEM_PATHS)
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run"], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "dry run: nothing will be changed" in out
    assert re.search(r"^\+ (useradd .*door-bridge$|usermod --append --groups gpio,input,dialout,plugdev door-bridge)", out, re.MULTILINE), out
    assert f"+ /opt/door-bridge/venv/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --upgrade {checkout}" in out
    assert f"+ install -m 0644 {checkout}/systemd/door-bridge.service /etc/systemd/system/door-bridge.service" in out
    assert f"+ install -m 0644 {checkout}/hardware/udev/99-door-bridge.rules /etc/udev/rules.d/99-door-bridge.rules" in out
    assert "+ systemctl daemon-reload" in out
    assert "+ systemctl enable door-bridge.service" in out
    assert out.index("check-config") < out.index("+ systemctl restart door-bridge.service")
    if not os.path.exists("/etc/door-bridge/config.toml"):
        assert f"{checkout}/config.example.toml /etc/door-bridge/config.toml" in out
    assert _snapshot(SYSTEM_PATHS) == before


def test_install_no_start_stops_after_enable(checkout: Path) -> None:
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run", "--no-start"], capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "systemctl restart" not in done.stdout
    assert "not started (--no-start)" in done.stdout


def test_install_refuses_an_incomplete_checkout(checkout: Path) -> None:
    (checkout / "config.example.toml").unlink()
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run"], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert "missing" in done.stderr and "config.example.toml" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_reject_unknown_options(checkout: Path, script: str) -> None:
    done = subprocess.run([str(checkout / "systemd" / script), "--frobnicate"], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2
    assert "unknown option '--frobnicate'" in done.stderr


@pytest.mark.parametrize("script", ["install.sh", "uninstall.sh"])
def test_scripts_refuse_to_run_for_real_without_root(checkout: Path, script: str) -> None:
    as_nobody = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    with tempfile.TemporaryDirectory(prefix="door-bridge-scripts-") as public:
        os.chmod(public, 0o755)  # nobody must be able to read the script, not pytest's private tmp
        copy = Path(public) / "checkout"
        shutil.copytree(checkout, copy)
        for directory in (copy, copy / "systemd", copy / "hardware", copy / "hardware" / "udev"):
            directory.chmod(0o755)
        done = subprocess.run([str(copy / "systemd" / script)], capture_output=True, text=True, check=False, timeout=60, **as_nobody)  # type: ignore[call-overload]
    assert done.returncode == 1, done.stderr
    assert "run as root" in done.stderr


def test_uninstall_dry_run_keeps_state_unless_purge(checkout: Path) -> None:
    before = _snapshot(SYSTEM_PATHS + ["/var/lib/door-bridge"])
    keep = subprocess.run([str(checkout / "systemd/uninstall.sh"), "--dry-run"], capture_output=True, text=True, check=False, timeout=60)
    purge = subprocess.run([str(checkout / "systemd/uninstall.sh"), "--dry-run", "--purge"], capture_output=True, text=True, check=False, timeout=60)
    assert keep.returncode == 0 and purge.returncode == 0, keep.stderr + purge.stderr
    assert "purging" not in keep.stdout and "/var/lib/door-bridge" not in keep.stdout.replace("kept /var/lib/door-bridge", "")
    assert "purging configuration, state" in purge.stdout
    assert _snapshot(SYSTEM_PATHS + ["/var/lib/door-bridge"]) == before


# --- udev rules --------------------------------------------------------------------------------------------

_UDEV_TOKEN = re.compile(r'^[A-Z_]+(\{[^}]+\})?(==|!=|\+=|-=|:=|=)"[^"]*"$')


def udev_rules() -> list[str]:
    logical = re.sub(r"\\\n\s*", " ", UDEV_RULES.read_text())
    return [line.strip() for line in logical.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_udev_rules_are_well_formed() -> None:
    rules = udev_rules()
    assert rules
    for rule in rules:
        for token in (t.strip() for t in rule.split(",")):
            assert _UDEV_TOKEN.match(token), f"malformed udev token {token!r} in: {rule}"


@pytest.mark.parametrize(
    "needle",
    ['KERNEL=="gpiochip[0-9]*", GROUP="gpio"', 'KERNEL=="gpiomem", GROUP="gpio"', 'GROUP="dialout"', 'KERNEL=="event[0-9]*", GROUP="input"',
     'ATTR{idVendor}=="054c", ATTR{idProduct}=="06c3', 'ATTR{idVendor}=="072f", ATTR{idProduct}=="2200"'],
)
def test_udev_rules_cover_the_supported_hardware(needle: str) -> None:
    assert any(needle in rule for rule in udev_rules()), needle


def test_usb_nfc_readers_go_to_plugdev() -> None:
    nfc = [rule for rule in udev_rules() if 'SUBSYSTEM=="usb"' in rule]
    assert len(nfc) >= 2
    assert all('GROUP="plugdev"' in rule and 'MODE="0660"' in rule for rule in nfc)


# --- install.sh on plain Debian 12 and on Raspberry Pi OS ------------------------------------------------


def _fake_apt(tmp_path: Path, known: set[str]) -> dict[str, str]:
    """PATH with an apt-cache that knows only `known` and a dpkg-query that reports nothing installed."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "apt-cache").write_text(
        "#!/bin/sh\n[ \"$1\" = show ] || exit 100\ncase \" " + " ".join(sorted(known)) + " \" in *\" $2 \"*) echo \"Package: $2\"; exit 0;; esac\n"
        "echo \"E: No packages found\" >&2; exit 100\n")
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("apt-cache", "dpkg-query"):
        (bin_dir / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def _apt_and_pip_lines(out: str) -> tuple[str, str]:
    apt = next((line for line in out.splitlines() if line.startswith("+ apt-get install")), "")
    pip = next(line for line in out.splitlines() if "/bin/pip install " in line)
    return apt, pip


def test_install_on_plain_debian_takes_lgpio_from_pypi_not_from_a_missing_apt_package(checkout: Path, tmp_path: Path) -> None:
    # Debian 12 has no python3-lgpio (only the Raspberry Pi OS archive does): apt-get would fail.
    env = _fake_apt(tmp_path, {"python3-venv", "libusb-1.0-0"})
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run", "--no-start"], capture_output=True, text=True, check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    apt, pip = _apt_and_pip_lines(done.stdout)
    assert apt.split()[2:] == ["install", "-y", "--no-install-recommends", "python3-venv", "libusb-1.0-0"], apt
    assert pip.endswith(f"--upgrade {checkout} lgpio"), pip


def test_install_on_raspberry_pi_os_keeps_the_distributions_python3_lgpio(checkout: Path, tmp_path: Path) -> None:
    env = _fake_apt(tmp_path, {"python3-venv", "libusb-1.0-0", "python3-lgpio"})
    done = subprocess.run([str(checkout / "systemd/install.sh"), "--dry-run", "--no-start"], capture_output=True, text=True, check=False, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    apt, pip = _apt_and_pip_lines(done.stdout)
    assert "python3-lgpio" in apt.split(), apt
    assert pip.endswith(f"--upgrade {checkout}"), pip
