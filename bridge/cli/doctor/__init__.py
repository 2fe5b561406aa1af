"""`door-bridge doctor`: what this machine has, and whether the configured readers and pins are there.

A technician runs it on a door Pi before (and whenever) the daemon misbehaves. It only looks: it
stats device nodes and reads sysfs, never claims a GPIO line (re-claiming the relay's line as an
input would release it, and an active-low relay module energises on a floating input), never opens
a serial port (opening toggles DTR, which resets some scanners) and never opens an NFC frontend (a
running daemon holds it). So it is safe to run next to a live daemon. One exception, because a
PD tells who it is only when asked: a configured OSDP bus (RS-485 adapters do not reset on DTR)
is asked for a few seconds (bridge/cli/doctor/osdp.py) — only if no one holds its port (the daemon
opens it exclusively), and without ever changing a PD.

Every probe runs under a guard: a probe that breaks becomes a `warn` line naming the error, never a
traceback. Exit codes: 0 when nothing is `fail` (warnings allowed: a laptop has no GPIO), 1 when a
configured reader, pin or the state directory cannot work, 2 when the configuration is invalid.
"""

from __future__ import annotations

import functools
import glob
import grp
import importlib.util
import os
import pwd
import re
import stat
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from bridge import __version__
from bridge.config import Config, ConfigError, load

Level = Literal["ok", "warn", "fail"]

SERVICE_USER = "door-bridge"
DEFAULT_STATE_DIR = Path("/var/lib/door-bridge")
UDEV_RULES = "hardware/udev/99-door-bridge.rules"
INSTALLED_UDEV_RULES = Path("/etc/udev/rules.d/99-door-bridge.rules")
INSTALLED_NFC_BLACKLIST = Path("/etc/modprobe.d/door-bridge-nfc.conf")
INSTALLED_UNIT = Path("/etc/systemd/system/door-bridge.service")
INSTALLED_API_KEY = Path("/etc/door-bridge/api-key")
SYS_USB_DEVICES = "/sys/bus/usb/devices"
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
RERUN = "then re-run `door-bridge doctor`"

# Which group opens which kind of device node, and the rule in hardware/udev/99-door-bridge.rules
# that gives it that group (quoted so a technician can grep for it).
GROUP_FOR = {
    "gpio": ("gpio", 'SUBSYSTEM=="gpio", KERNEL=="gpiochip[0-9]*"'),
    "input": ("input", 'SUBSYSTEM=="input", KERNEL=="event[0-9]*"'),
    "serial": ("dialout", 'SUBSYSTEM=="tty", KERNEL=="ttyUSB[0-9]*|ttyACM[0-9]*|ttyAMA[0-9]*"'),
    "usb": ("plugdev", 'SUBSYSTEM=="usb", ... ATTR{idVendor}=="<vendor>"'),
}
REQUIRED_GROUPS = ("gpio", "input", "dialout", "plugdev")

# BCM 0-8 are pulled up at power-on, 9-27 pulled down (BCM2835/BCM2711 reset state; on a Pi 5
# check with `pinctrl get`). BCM 0/1 are on the header but reserved for the HAT ID EEPROM.
HEADER_PINS = range(2, 28)
PULLED_UP_AT_BOOT = range(9)

# Friendly names for the USB ids in nfcpy's own driver table (`nfc.clf.device.usb_device_map`).
NFC_NAMES = {
    (0x054C, 0x06C3): "Sony RC-S380",
    (0x054C, 0x06C1): "Sony RC-S380",
    (0x054C, 0x02E1): "Sony RC-S330/360/370",
    (0x072F, 0x2200): "ACS ACR122U",
    (0x04E6, 0x5591): "SCM SCL3711",
    (0x04E6, 0x5593): "SCM SCL3712",
}
# Kernel NFC drivers that grab these readers before nfcpy can (systemd/door-bridge-nfc-blacklist.conf).
KERNEL_NFC_DRIVERS = ("port100", "pn533_usb", "pn533")


# --- findings -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    text: str

    def line(self) -> str:
        return f"{self.level:<5} {self.text}"


@dataclass(slots=True)
class Report:
    """Findings grouped in sections, written in the order they were added."""

    sections: list[tuple[str, list[Finding]]] = field(default_factory=list)

    def section(self, title: str, probe: Callable[[], Iterable[Finding]]) -> None:
        findings: list[Finding] = []
        try:
            findings.extend(probe())
        except Exception as e:  # noqa: BLE001 — a probe must never take the doctor down; say what broke instead
            findings.append(Finding("warn", f"could not check {title}: {type(e).__name__}: {e}"))
        self.sections.append((title, findings))

    def write(self, out: TextIO) -> None:
        for title, findings in self.sections:
            out.write(f"== {title} ==\n")
            out.writelines(finding.line() + "\n" for finding in findings)
            out.write("\n")

    @property
    def failed(self) -> bool:
        return any(f.level == "fail" for _, findings in self.sections for f in findings)


def ok(text: str) -> Finding:
    return Finding("ok", text)


def warn(text: str) -> Finding:
    return Finding("warn", text)


def fail(text: str) -> Finding:
    return Finding("fail", text)


# --- who the daemon runs as -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    uid: int
    gids: frozenset[int]

    def group_names(self) -> set[str]:
        return {_group_name(g) for g in self.gids}


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def current_identity() -> Identity:
    uid = os.geteuid()
    return Identity(_user_name(uid), uid, frozenset([os.getegid(), *os.getgroups()]))


def service_identity(name: str = SERVICE_USER) -> Identity | None:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return None
    return Identity(name, user.pw_uid, frozenset(os.getgrouplist(name, user.pw_gid)))


def subject_identity() -> Identity:
    """The identity whose rights matter: the service user once installed (the unit runs as it),
    otherwise whoever runs the doctor (a bench set-up started by hand)."""
    return service_identity() or current_identity()


def access_problem(st: os.stat_result, who: Identity, write: bool = True) -> str | None:
    """Why `who` may not read (and write) a node with this stat, or None. Evaluated from the mode
    bits rather than `os.access`, so running the doctor as root still tells whether the
    unprivileged service user can open the device."""
    if who.uid == 0:
        return None
    need = stat.S_IROTH | (stat.S_IWOTH if write else 0)
    mode = st.st_mode
    if st.st_uid == who.uid:
        granted = (mode >> 6) & 0o7
    elif st.st_gid in who.gids:
        granted = (mode >> 3) & 0o7
    else:
        granted = mode & 0o7
    if granted & need == need:
        return None
    perms = stat.filemode(mode)
    owner = f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)}"
    if st.st_gid not in who.gids and (mode >> 3) & need == need:
        return f"{perms} {owner}: user {who.name} is not in group {_group_name(st.st_gid)}"
    return f"{perms} {owner}: not {'readable and writable' if write else 'readable'} by user {who.name}"


def check_node(label: str, path: str, kind: str, who: Identity, *, char_device: bool = True) -> Finding:
    """found / missing / no permission for one device path, with what to do about it."""
    group, rule = GROUP_FOR[kind]
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return fail(f"{label}: {path} missing: plug the device in and check the cable; `ls -l {_listing_hint(kind)}`; {RERUN}")
    except OSError as e:
        return fail(f"{label}: {path}: {e.strerror}: `ls -l {path}`; {RERUN}")
    target = os.path.realpath(path)
    shown = path if target == path else f"{path} -> {target}"
    if char_device and not stat.S_ISCHR(st.st_mode):
        return fail(f"{label}: {shown} is not a character device: point the config at the device node")
    problem = access_problem(st, who)
    if problem:
        return fail(
            f"{label}: {shown}: no permission ({problem}): `sudo usermod -aG {group} {who.name}` and "
            f"install {UDEV_RULES} (rule {rule}), `udevadm trigger`, `ls -l {path}`; {RERUN}"
        )
    return ok(f"{label}: {shown} found, {stat.filemode(st.st_mode)} {_group_name(st.st_gid)}, usable by {who.name}")


def _listing_hint(kind: str) -> str:
    return {
        "gpio": "/dev/gpiochip*",
        "input": "/dev/input/by-id/",
        "serial": "/dev/serial/by-id/",
        "usb": "/dev/bus/usb/*/*",
    }[kind]


# --- the machine ------------------------------------------------------------------------------------


def probe_machine(who: Identity) -> Iterable[Finding]:
    me = current_identity()
    model = _pi_model()
    if model is None:
        yield warn("not a Raspberry Pi (no /proc/device-tree/model): real GPIO needs a Pi; laptops use gpio.pin_factory = \"mock\"")
    elif "Raspberry Pi" in model:
        yield ok(f"model: {model}")
    else:
        yield warn(f"model: {model} (not a Raspberry Pi: pin numbers and boot pulls may differ from hardware/pinmap.md)")
    yield ok(f"door-bridge {__version__}; running as {me.name} (uid {me.uid}); checking device rights for user {who.name}")
    if me.uid == 0 and who.uid == 0:
        yield warn(f"running as root and no '{SERVICE_USER}' user exists: rights below are root's; "
                   "install the service (systemd/install.sh) or re-run as the user that will run the daemon")


def _pi_model() -> str | None:
    try:
        return DEVICE_TREE_MODEL.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        return None


def probe_groups(who: Identity) -> Iterable[Finding]:
    have = who.group_names()
    for group in REQUIRED_GROUPS:
        try:
            grp.getgrnam(group)
        except KeyError:
            yield warn(f"group {group} does not exist on this machine: `sudo groupadd --system {group}` "
                       "(systemd/install.sh does it)")
            continue
        if who.uid == 0 or group in have:
            yield ok(f"user {who.name} in group {group}" if group in have else f"user {who.name} (root) needs no group {group}")
        else:
            yield warn(f"user {who.name} not in group {group} ({_group_purpose(group)}): "
                       f"`sudo usermod -aG {group} {who.name}` (the unit also adds it via SupplementaryGroups)")


def _group_purpose(group: str) -> str:
    return {"gpio": "relay, switch, REX, LED, buzzer, Wiegand", "input": "keyboard-wedge scanners, keypads",
            "dialout": "serial scanners, UART NFC", "plugdev": "USB NFC readers"}[group]


def probe_gpio(who: Identity) -> Iterable[Finding]:
    chips = sorted(glob.glob("/dev/gpiochip*"), key=lambda p: (len(p), p))
    if not chips:
        yield warn("no /dev/gpiochip*: this machine has no GPIO (fine on a laptop with gpio.pin_factory = \"mock\")")
    for chip in chips:
        yield check_node(f"GPIO chip {_gpio_label(chip)}", chip, "gpio", who)
    for mem in sorted(glob.glob("/dev/gpiomem*")):
        yield check_node("GPIO register window", mem, "gpio", who)
    factory = os.environ.get("GPIOZERO_PIN_FACTORY")
    if factory:
        yield ok(f"GPIOZERO_PIN_FACTORY={factory} in the environment (overrides gpio.pin_factory = \"auto\")")
    if chips:
        if importlib.util.find_spec("lgpio") is not None:
            yield ok("lgpio importable (gpiozero's pin factory on Raspberry Pi OS bookworm)")
        else:
            yield warn("lgpio not importable: `sudo apt install python3-lgpio` and a venv made with --system-site-packages")


def _gpio_label(chip: str) -> str:
    name = os.path.basename(chip)
    try:
        label = Path(f"/sys/bus/gpio/devices/{name}/label").read_text().strip()
    except OSError:
        try:
            label = next(Path(p).read_text().strip() for p in glob.glob(f"/sys/class/gpio/{name}/label"))
        except (OSError, StopIteration):
            label = ""
    return f"{name} ({label})" if label else name


# --- input devices (evdev) ----------------------------------------------------------------------------


def probe_input_devices(who: Identity) -> Iterable[Finding]:
    nodes = glob.glob("/dev/input/event*")
    if not nodes:
        yield warn("no /dev/input/event*: no keyboard-wedge scanner or keypad attached (or no input subsystem)")
        return
    try:
        from bridge.inputs.evdev_scanner import list_key_devices
    except ImportError as e:
        yield warn(f"evdev reader support unavailable ({e}): `pip install evdev` in the venv")
        return
    devices = list_key_devices()
    for dev in devices:
        by_id = ", ".join(dev.by_id) or "no /dev/input/by-id link"
        kind = "types Enter (scanner-like)" if dev.types_enter else "no Enter key (not a scanner)"
        if dev.has_digits and not dev.types_enter:
            kind = "digits but no Enter (keypad?)"
        problem = _node_problem(dev.path, who)
        found = f"{dev.path}: {dev.name!r} {dev.vendor_product}, {kind}; {by_id}"
        yield warn(f"{found}; {problem}") if problem else ok(found)
    unreadable = [n for n in nodes if access_problem(os.stat(n), current_identity(), write=False)]
    if unreadable:
        yield warn(f"{len(unreadable)} input device(s) not readable by {current_identity().name}, not listed: "
                   f"re-run with sudo or join group input ({UDEV_RULES})")
    if not devices and not unreadable:
        yield warn("input devices exist but none has keys: no scanner or keypad attached")


# --- serial ports -----------------------------------------------------------------------------------


def probe_serial_ports(who: Identity) -> Iterable[Finding]:
    from serial.tools import list_ports

    links: dict[str, list[str]] = {}
    for link in glob.glob("/dev/serial/by-id/*"):
        links.setdefault(os.path.realpath(link), []).append(link)
    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    on_pi = "Raspberry Pi" in (_pi_model() or "")
    if not ports:
        yield warn("no serial ports (no USB-serial or CDC scanner attached, no UART enabled)")
    for port in ports:
        by_id = ", ".join(sorted(links.get(os.path.realpath(port.device), []))) or "no /dev/serial/by-id link"
        problem = _node_problem(port.device, who)
        hint = f"; {problem}" if problem else ""
        about = "; ".join(x for x in (port.description, port.hwid) if x and x != "n/a") or "no USB/platform details"
        yield (warn if problem else ok)(f"{port.device}: {about}; {by_id}{hint}{_pn532_hint(port, on_pi)}")


def _node_problem(path: str, who: Identity) -> str | None:
    try:
        return access_problem(os.stat(path), who)
    except OSError as e:
        return e.strerror


def _pn532_hint(port: Any, on_pi: bool) -> str:
    name = os.path.basename(port.device)
    described = f"{port.description} {port.product or ''}".lower()
    if "pn532" in described:
        return f"; looks like a PN532: nfc device = \"tty:{name.removeprefix('tty')}:pn532\""
    if on_pi and (name.startswith("ttyAMA") or name == "ttyS0"):
        return f"; a PN532 on the Pi UART would be nfc device = \"tty:{name.removeprefix('tty')}:pn532\""
    return ""


# --- NFC frontends -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsbDevice:
    vendor: int
    product: int
    bus: int
    address: int
    sysfs: str
    product_name: str

    @property
    def ids(self) -> str:
        return f"{self.vendor:04x}:{self.product:04x}"

    @property
    def node(self) -> str:
        return f"/dev/bus/usb/{self.bus:03d}/{self.address:03d}"

    def kernel_drivers(self) -> list[str]:
        """Kernel drivers bound to this device's interfaces (sysfs `<dev>:<cfg>.<if>/driver`)."""
        bound = []
        for link in glob.glob(os.path.join(self.sysfs + ":*", "driver")):
            bound.append(os.path.basename(os.path.realpath(link)))
        return bound


def nfc_usb_ids() -> dict[tuple[int, int], str]:
    """(vendor, product) → nfcpy driver, from nfcpy's own table when nfcpy is installed."""
    try:
        from nfc.clf.device import usb_device_map

        return dict(usb_device_map)
    except Exception:  # noqa: BLE001 — nfcpy missing or broken: fall back to the readers documented in hardware/readers.md
        return {ids: "?" for ids in NFC_NAMES}


def list_usb_devices(sys_usb: str = SYS_USB_DEVICES) -> list[UsbDevice]:
    found = []
    for entry in sorted(glob.glob(os.path.join(sys_usb, "*"))):
        if ":" in os.path.basename(entry):
            continue  # an interface, not a device
        try:
            found.append(
                UsbDevice(
                    vendor=int(_read(entry, "idVendor"), 16),
                    product=int(_read(entry, "idProduct"), 16),
                    bus=int(_read(entry, "busnum")),
                    address=int(_read(entry, "devnum")),
                    sysfs=entry,
                    product_name=_read(entry, "product", ""),
                )
            )
        except (OSError, ValueError):
            continue  # a hub port without a device, or a half-enumerated device
    return found


def _read(directory: str, name: str, default: str | None = None) -> str:
    try:
        return Path(directory, name).read_text().strip()
    except OSError:
        if default is None:
            raise
        return default


def find_nfc_frontends(sys_usb: str = SYS_USB_DEVICES) -> list[UsbDevice]:
    known = nfc_usb_ids()
    return [d for d in list_usb_devices(sys_usb) if (d.vendor, d.product) in known]


def describe_frontend(dev: UsbDevice, who: Identity) -> Finding:
    name = NFC_NAMES.get((dev.vendor, dev.product)) or dev.product_name or "nfcpy frontend"
    label = f"{name} usb:{dev.ids} at {dev.node} (nfc device = \"usb:{dev.ids}\")"
    held = [d for d in dev.kernel_drivers() if d in KERNEL_NFC_DRIVERS]
    if held:
        return warn(f"{label}: held by kernel driver {', '.join(held)}: install systemd/door-bridge-nfc-blacklist.conf "
                    f"and reboot (or `sudo modprobe -r {' '.join(KERNEL_NFC_DRIVERS)}`); {RERUN}")
    node = check_node(label, dev.node, "usb", who)
    return node


def probe_nfc(who: Identity, sys_usb: str = SYS_USB_DEVICES) -> Iterable[Finding]:
    if not os.path.isdir(sys_usb):
        yield warn(f"no {sys_usb}: no USB bus visible (container or no USB host); USB NFC readers cannot be found")
        return
    frontends = find_nfc_frontends(sys_usb)
    if not frontends:
        yield warn("no USB NFC frontend nfcpy knows (Sony RC-S380 054c:06c3, ACR122U 072f:2200, SCL3711 04e6:5591, ...); "
                   "a PN532 on a UART or USB-serial adapter shows under serial ports")
    for dev in frontends:
        yield describe_frontend(dev, who)


# --- state directory ----------------------------------------------------------------------------------


def probe_state_dir(state_dir: Path, who: Identity, configured: bool) -> Iterable[Finding]:
    state_dir = state_dir.absolute()
    problem_level = fail if configured else warn
    try:
        st = state_dir.stat()
    except FileNotFoundError:
        yield from _missing_state_dir(state_dir, who, problem_level)
        return
    if not stat.S_ISDIR(st.st_mode):
        yield problem_level(f"state dir {state_dir} is not a directory: set bridge.state_dir to a directory")
        return
    problem = _write_problem(state_dir, st, who)
    if problem is not None:
        yield problem_level(f"state dir {state_dir} not writable ({problem}): "
                            f"`sudo chown {who.name} {state_dir}`; `ls -ld {state_dir}`; {RERUN}")
    else:
        yield ok(f"state dir {state_dir} writable by {who.name}")
    for db in ("grants.db", "audit.db"):
        path = state_dir / db
        if path.exists():
            size = sum(p.stat().st_size for p in (path, state_dir / f"{db}-wal") if p.exists())
            yield ok(f"{path}: {_size(size)}")
        else:
            yield warn(f"{path} not there yet (created at the daemon's first start)")


def _missing_state_dir(state_dir: Path, who: Identity, problem_level: Callable[[str], Finding]) -> Iterable[Finding]:
    """The daemon creates the directory (parents too), so a missing one is fine if it can."""
    parent = state_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    problem = _write_problem(parent, parent.stat(), who)
    if problem is None:
        yield warn(f"state dir {state_dir} missing; the daemon creates it at start ({parent} is writable by {who.name})")
    else:
        yield problem_level(f"state dir {state_dir} missing and {parent} not writable by {who.name} ({problem}): "
                            f"systemd creates /var/lib/door-bridge (StateDirectory=); by hand "
                            f"`sudo install -d -o {who.name} {state_dir}`; {RERUN}")


def _write_problem(directory: Path, st: os.stat_result, who: Identity) -> str | None:
    problem = access_problem(st, who)
    if problem is None and os.geteuid() == who.uid and not os.access(directory, os.W_OK | os.X_OK):
        problem = "read-only file system?"
    return problem


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB"):
        size /= 1024
        if size < 1024:
            return f"{size:.1f} {unit}"
    return f"{size / 1024:.1f} GiB"


# --- installation ---------------------------------------------------------------------------------


def probe_install() -> Iterable[Finding]:
    for path, what in ((INSTALLED_UNIT, "systemd unit"), (INSTALLED_UDEV_RULES, "udev rules"),
                       (INSTALLED_NFC_BLACKLIST, "kernel NFC driver blacklist")):
        if path.exists():
            yield ok(f"{what} installed: {path}")
        else:
            yield warn(f"{what} not installed ({path}): `sudo systemd/install.sh` (see docs/operations.md)")
    try:
        st = INSTALLED_API_KEY.stat()  # never read: the key is a secret
    except OSError:
        if INSTALLED_UNIT.exists():
            yield warn(f"{INSTALLED_API_KEY} missing: the unit fails with 243/CREDENTIALS until it exists")
        return
    if st.st_size == 0:
        yield warn(f"{INSTALLED_API_KEY} is empty: put the central API key on one line")
    elif st.st_mode & 0o077:
        yield warn(f"{INSTALLED_API_KEY} is {stat.filemode(st.st_mode)}: `sudo chmod 600 {INSTALLED_API_KEY}`")
    else:
        yield ok(f"{INSTALLED_API_KEY} present, {stat.filemode(st.st_mode)}")


# --- the configuration's readers and pins ------------------------------------------------------------


def check_reader(reader: Any, who: Identity, sys_usb: str = SYS_USB_DEVICES) -> list[Finding]:
    """found / missing / no permission for one configured reader (any reader config model)."""
    label = f"reader {reader.id} ({reader.type})"
    kind = reader.type
    if kind == "console":
        return [warn(f"{label}: reads standard input, for the bench only (under systemd stdin is /dev/null)")]
    if kind == "serial":
        return [check_node(label, reader.port, "serial", who), *_stable_name_hint(label, reader.port)]
    if kind in ("evdev", "keypad"):
        return _check_evdev_reader(label, reader, who)
    if kind == "nfc":
        return _check_nfc_reader(label, reader.device, who, sys_usb)
    if kind == "wiegand":
        return [ok(f"{label}: D0 on BCM {reader.d0_pin}, D1 on BCM {reader.d1_pin} (checked with the pins below)")]
    if kind == "osdp":
        return [check_node(label, reader.port, "serial", who), *_stable_name_hint(label, reader.port),
                ok(f"{label}: address {reader.address} on {reader.port} (its PD is asked in the OSDP bus section below)")]
    return [warn(f"{label}: the doctor has no check for this reader type")]


def _stable_name_hint(label: str, path: str) -> list[Finding]:
    if re.fullmatch(r"/dev/(ttyUSB|ttyACM|input/event)\d+", path):
        return [warn(f"{label}: {path} is numbered in plug-in order and can change at reboot: use its "
                     "/dev/serial/by-id/, /dev/input/by-id/ or /dev/door-bridge/ link (listed above)")]
    return []


def _check_evdev_reader(label: str, reader: Any, who: Identity) -> list[Finding]:
    selector: str = reader.device
    if selector.startswith("/"):
        return [check_node(label, selector, "input", who), *_stable_name_hint(label, selector)]
    try:
        from bridge.inputs import evdev_scanner as es
    except ImportError as e:
        return [fail(f"{label}: evdev support unavailable ({e})")]
    if getattr(es, "evdev", None) is None:
        return [fail(f"{label}: python-evdev is not installed: `pip install evdev` in the venv")]
    needs = es.KEYPAD_DEVICE_KEYS if reader.type == "keypad" else es.SCANNER_DEVICE_KEYS
    try:
        path = es.find_device_path(selector, needs)
    except OSError:
        return [fail(f"{label}: no input device matches {selector!r}: plug it in, compare with the input devices "
                     f"listed above (name or vendor:product), join group input if none are listed; {RERUN}")]
    return [check_node(f"{label} {selector!r}", path, "input", who)]


_NFC_USB_VID_PID = re.compile(r"^usb:([0-9a-fA-F]{4})(?::([0-9a-fA-F]{4}))?$")
_NFC_USB_BUS_DEV = re.compile(r"^usb:([0-9]{1,3})(?::([0-9]{1,3}))?$")
_NFC_TTY = re.compile(r"^(?:tty|com):([^:]+)(?::(\w+))?$")


def _check_nfc_reader(label: str, device: str, who: Identity, sys_usb: str) -> list[Finding]:
    if device.startswith("udp"):
        return [warn(f"{label}: {device} is nfcpy's UDP emulator (tests and bench only), not a reader")]
    if tty := _NFC_TTY.match(device):
        name = tty[1]
        path = name if name.startswith("/") else f"/dev/{name if name.startswith('tty') else 'tty' + name}"
        driver = f" (driver {tty[2]})" if tty[2] else " (no driver named: add `:pn532`)"
        return [check_node(f"{label} {device}{driver}", path, "serial", who)]
    if not os.path.isdir(sys_usb):
        return [fail(f"{label}: {device}: no USB bus visible ({sys_usb} missing)")]
    frontends = find_nfc_frontends(sys_usb)
    if vid_pid := _NFC_USB_VID_PID.match(device):
        vendor, product = int(vid_pid[1], 16), int(vid_pid[2], 16) if vid_pid[2] else None
        frontends = [d for d in frontends if d.vendor == vendor and product in (None, d.product)]
    elif bus_dev := _NFC_USB_BUS_DEV.match(device):
        bus, address = int(bus_dev[1]), int(bus_dev[2]) if bus_dev[2] else None
        frontends = [d for d in frontends if d.bus == bus and address in (None, d.address)]
    elif device != "usb":
        return [fail(f"{label}: {device!r} is not an nfcpy path (usb, usb:VVVV:PPPP, usb:BUS:DEV, tty:AMA0:pn532)")]
    if not frontends:
        return [fail(f"{label}: no NFC frontend matches {device!r}: plug the reader in, `lsusb`, "
                     f"compare with the NFC frontends listed above; {RERUN}")]
    return [describe_frontend(frontends[0], who)]


@dataclass(frozen=True, slots=True)
class PinUse:
    owner: str  # "door main relay_pin", "reader W1 d0_pin"
    pin: int
    active_low_output: bool = False


def configured_pins(config: Config) -> list[PinUse]:
    uses = []
    for name, door in config.doors.items():
        for attr, pin in door.pins().items():
            # Only a relay matters at boot: a lit LED while the Pi boots opens no door.
            relay = attr in ("relay_pin", "aux_relay_pin")
            active_high = getattr(door, attr.removesuffix("_pin") + "_active_high", True)
            uses.append(PinUse(f"door {name} {attr}", pin, active_low_output=relay and not active_high))
    for reader in config.readers:
        for attr in ("d0_pin", "d1_pin"):
            pin = getattr(reader, attr, None)
            if pin is not None:
                uses.append(PinUse(f"reader {reader.id} {attr}", pin))
    return uses


def check_pins(uses: list[PinUse], pin_factory: str, who: Identity) -> Iterable[Finding]:
    """Whether each configured line can be driven here. Stats the chip; never claims a line."""
    if not uses:
        yield ok("no GPIO pins configured")
        return
    factory = os.environ.get("GPIOZERO_PIN_FACTORY", "").lower() if pin_factory == "auto" else pin_factory
    seen: dict[int, str] = {}
    for use in uses:
        if use.pin in seen:
            yield fail(f"{use.owner} BCM {use.pin}: also used by {seen[use.pin]}: give each function its own pin "
                       "(hardware/pinmap.md)")
        seen.setdefault(use.pin, use.owner)
        if use.pin not in HEADER_PINS:
            yield warn(f"{use.owner} BCM {use.pin}: not a general-purpose header pin (use BCM 2-27; 0/1 are the HAT ID EEPROM)")
        if use.active_low_output and use.pin not in PULLED_UP_AT_BOOT:
            yield warn(f"{use.owner} BCM {use.pin}: active-low output on a pin pulled LOW at boot: the module can "
                       f"energise until the daemon starts; use BCM 5 or 6, or add `gpio={use.pin}=op,dh` to "
                       "/boot/firmware/config.txt (hardware/pinmap.md)")
    if factory == "mock":
        yield warn("gpio.pin_factory = \"mock\": every pin is simulated and no relay will switch "
                   "(right on a laptop, wrong on a door: set \"auto\")")
        for use in uses:
            yield ok(f"{use.owner} BCM {use.pin}: simulated")
        return
    chips = sorted(glob.glob("/dev/gpiochip*"), key=lambda p: (len(p), p))
    for use in uses:
        label = f"{use.owner} BCM {use.pin}"
        if not chips:
            yield fail(f"{label}: no GPIO on this machine (no /dev/gpiochip*): run on the door Pi, or set "
                       "gpio.pin_factory = \"mock\" for a laptop; `ls -l /dev/gpiochip*`")
            continue
        finding = check_node(label, chips[0], "gpio", who)
        yield finding if finding.level != "ok" else ok(f"{label}: on {chips[0]}, usable by {who.name}")


# --- putting it together ----------------------------------------------------------------------------


def _load_config(config_path: str | None) -> tuple[Config | None, list[Finding], bool]:
    if config_path is None:
        return None, [warn("no configuration given: listing what the machine has (pass --config FILE to "
                           "check the configured readers and pins)")], False
    try:
        config = load(config_path)
    except ConfigError as e:
        return None, [fail(line) for line in str(e).splitlines()] + [
            fail(f"configuration invalid: fix it, then `door-bridge check-config {config_path}`")
        ], True
    return config, [ok(f"{config_path}: bridge {config.bridge.id}, mode {config.bridge.mode}, "
                       f"{len(config.readers)} reader(s), {len(config.doors)} door(s)")], False


def build_report(config_path: str | None, sys_usb: str = SYS_USB_DEVICES) -> tuple[Report, bool]:
    """All sections; the flag says the configuration was invalid."""
    report = Report()
    loaded: dict[str, Any] = {}

    def config_section() -> list[Finding]:
        config, findings, invalid = _load_config(config_path)
        loaded.update(config=config, invalid=invalid)
        return findings

    report.section("configuration", config_section)
    config: Config | None = loaded.get("config")
    invalid = bool(loaded.get("invalid"))
    who = subject_identity()
    report.section("machine", lambda: probe_machine(who))
    report.section("groups", lambda: probe_groups(who))
    report.section("GPIO", lambda: probe_gpio(who))
    report.section("input devices (evdev)", lambda: probe_input_devices(who))
    report.section("serial ports", lambda: probe_serial_ports(who))
    report.section("NFC frontends", lambda: probe_nfc(who, sys_usb))
    state_dir = config.bridge.state_dir if config else DEFAULT_STATE_DIR
    report.section("state", lambda: probe_state_dir(state_dir, who, configured=config is not None))
    report.section("installation", probe_install)
    if config is not None:
        for reader in config.readers:
            report.section(f"reader {reader.id}", functools.partial(check_reader, reader, who, sys_usb))
        report.section("configured pins",
                       lambda: check_pins(configured_pins(config), config.gpio.pin_factory, who))
        from bridge.cli.doctor.osdp import osdp_buses, probe_osdp_bus

        for port, members in osdp_buses(config.readers).items():
            report.section(f"OSDP bus {port}", functools.partial(probe_osdp_bus, members))
    return report, invalid


def run(config_path: str | None, out: TextIO) -> int:
    """Print the report to `out`; 0 no failures, 1 something configured cannot work, 2 config invalid."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library warnings would interleave with the report
        try:
            report, invalid = build_report(config_path)
        except Exception as e:  # noqa: BLE001 — the guards above should make this unreachable; still never a traceback
            out.write(f"fail  doctor stopped: {type(e).__name__}: {e}\n")
            return 1
    report.write(out)
    failures = sum(f.level == "fail" for _, fs in report.sections for f in fs)
    warnings_ = sum(f.level == "warn" for _, fs in report.sections for f in fs)
    out.write(f"{failures} failure(s), {warnings_} warning(s)\n")
    if invalid:
        return 2
    return 1 if report.failed else 0
