"""Build the Debian 12 guest the system suite boots, from the package registries only.

    python -m tests.system.image            build (or reuse) every cached part, print where they are
    python -m tests.system.image --check    say which host packages are missing, exit 1 if any

Four parts, each in its own directory under the cache (`$DOOR_BRIDGE_GUEST_CACHE`, default
`~/.cache/door-bridge-guest`), named after a hash of everything it is made from, so a change of
input builds a new one and an unchanged input is reused:

- rootfs: `mmdebstrap` of bookworm from this machine's own apt sources (`/etc/apt/sources.list.d/*.sources`),
  systemd as PID 1, Debian's python3-evdev (1.6.1) and python3-venv, the stock kernel; turned into
  an ext4 image with `mke2fs -d`. The kernel and initrd Debian built inside it are copied out and
  booted directly by QEMU (no boot loader). Slow: ~1-2 minutes.
- gpio-sim: `drivers/gpio/gpio-sim.c` and `kernel/irq/irq_sim.c` from Debian's linux-source-6.1,
  built out of tree against linux-headers for the guest's kernel (no Debian kernel enables
  CONFIG_GPIO_SIM or CONFIG_IRQ_SIM). irq_sim.c calls `irq_to_desc()`, which 6.1 no longer exports;
  `generic_handle_irq()` does the same for a simple-IRQ descriptor and is exported, so the build
  replaces that one call. Keyed on the kernel release and both sources.
- wheels: every dependency of pyproject.toml as cp311 wheels (`pip wheel`), plus lgpio (PyPI) and
  the newest evdev, so `systemd/install.sh` runs inside the guest with no network
  (PIP_NO_INDEX/PIP_FIND_LINKS). Keyed on pyproject.toml and the host's Python.
- the run disk, rebuilt for every run: the project source as it is now (`git ls-files`), the
  module, the wheels; mounted read-only in the guest at /mnt/run.

Nothing here reaches anything but the apt sources and PyPI, both through their own clients.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"

# Host tools, by the Debian package that provides them (named in skip messages and installed by .ci/run).
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "make": "make",
    "gcc": "gcc",
}
HOST_FILES = {"/usr/src/linux-source-6.1.tar.xz": "linux-source-6.1"}
HOST_PACKAGES = sorted({*HOST_TOOLS.values(), *HOST_FILES.values(), "linux-headers-amd64", "xz-utils"})

# What a plain Debian 12 door needs before install.sh runs, and nothing from the Raspberry Pi OS
# archive: python3-evdev is the distribution's 1.6.1 on purpose (the floor pyproject.toml allows).
GUEST_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "kmod", "initramfs-tools", "linux-image-amd64",
    "python3", "python3-venv", "python3-evdev", "libusb-1.0-0",
    "procps", "util-linux", "sqlite3", "e2fsprogs",
]
ROOTFS_SIZE = "2G"


def cache_dir() -> Path:
    return Path(os.environ.get("DOOR_BRIDGE_GUEST_CACHE", "~/.cache/door-bridge-guest")).expanduser()


def missing_host_packages() -> list[str]:
    missing = {pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None}
    missing |= {pkg for path, pkg in HOST_FILES.items() if not Path(path).exists()}
    if not list(Path("/usr/src").glob("linux-headers-*-amd64")):
        missing.add("linux-headers-amd64")
    return sorted(missing)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _run(cmd: list[str], log: Path | None = None, **kw) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    if log is None:
        subprocess.run(cmd, check=True, **kw)
        return
    with log.open("ab") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    if done.returncode:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}); last lines of {log}:\n" + "\n".join(tail))


def _publish(tmp: Path, final: Path) -> Path:
    """Rename a finished build into place: a half-built part is never mistaken for a cached one."""
    if final.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)
    return final


# --- rootfs ---------------------------------------------------------------------------------------


def apt_sources() -> list[Path]:
    return sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))


def _candidate(package: str) -> str:
    out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            return line.split(":", 1)[1].strip()
    return "?"


@dataclass(frozen=True)
class Rootfs:
    image: Path
    kernel: Path
    initrd: Path
    release: str  # uname -r of the guest kernel
    built_s: float | None  # None: taken from the cache


def build_rootfs() -> Rootfs:
    sources = apt_sources()
    hook = (GUEST_DIR / "customize.sh").read_text()
    key = _digest("rootfs-v1", " ".join(GUEST_PACKAGES), hook, ROOTFS_SIZE,
                  *(p.read_text() for p in sources), _candidate("linux-image-amd64"), _candidate("python3-evdev"))
    final = cache_dir() / f"rootfs-{key}"
    if not (final / "rootfs.img").exists():
        started = time.monotonic()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=final.parent))
        tree = tmp / "tree"
        _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(GUEST_PACKAGES),
              f"--customize-hook=upload {GUEST_DIR / 'customize.sh'} /tmp/customize.sh",
              "--customize-hook=chroot \"$1\" sh /tmp/customize.sh", "--customize-hook=rm -f \"$1\"/tmp/customize.sh",
              "bookworm", str(tree), *map(str, sources)], log=tmp / "build.log")
        boot = tree / "boot"
        kernel = next(boot.glob("vmlinuz-*"))
        release = kernel.name.removeprefix("vmlinuz-")
        shutil.copy2(kernel, tmp / "vmlinuz")
        shutil.copy2(boot / f"initrd.img-{release}", tmp / "initrd.img")
        (tmp / "release").write_text(release)
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "guestroot", "-d", str(tree), str(tmp / "rootfs.img"), ROOTFS_SIZE],
             log=tmp / "build.log")
        shutil.rmtree(tree)
        (tmp / "built_s").write_text(f"{time.monotonic() - started:.1f}")
        _publish(tmp, final)
        built: float | None = float((final / "built_s").read_text())
    else:
        built = None
    return Rootfs(final / "rootfs.img", final / "vmlinuz", final / "initrd.img", (final / "release").read_text(), built)


# --- gpio-sim -------------------------------------------------------------------------------------

LINUX_SOURCE = Path("/usr/src/linux-source-6.1.tar.xz")
_SIM_FILES = {"drivers/gpio/gpio-sim.c": "gpio-sim-main.c", "drivers/gpio/gpiolib.h": "gpiolib.h",
              "kernel/irq/irq_sim.c": "irq_sim.c"}
_UNEXPORTED = ("handle_simple_irq(irq_to_desc(irqnum));", "generic_handle_irq(irqnum);")


def build_gpio_sim(release: str) -> Path:
    headers = Path(f"/lib/modules/{release}/build")
    if not headers.exists():
        raise RuntimeError(f"no kernel headers for the guest kernel {release}: apt-get install linux-headers-{release}")
    kbuild = (HERE / "gpio-sim" / "Kbuild").read_text()
    key = _digest("gpio-sim-v1", release, kbuild, str(LINUX_SOURCE.stat().st_size), str(int(LINUX_SOURCE.stat().st_mtime)),
                  *_UNEXPORTED)
    final = cache_dir() / f"gpio-sim-{key}"
    if not (final / "gpio-sim.ko").exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="gpio-sim-", dir=final.parent))
        prefix = "linux-source-6.1/"
        with tarfile.open(LINUX_SOURCE) as tar:
            for member in tar:
                name = member.name.removeprefix(prefix)
                if name in _SIM_FILES:
                    data = tar.extractfile(member)
                    assert data is not None
                    (tmp / _SIM_FILES[name]).write_bytes(data.read())
        missing = set(_SIM_FILES.values()) - {p.name for p in tmp.iterdir()}
        if missing:
            raise RuntimeError(f"{LINUX_SOURCE} lacks {sorted(missing)}")
        irq_sim = tmp / "irq_sim.c"
        text = irq_sim.read_text()
        if _UNEXPORTED[0] not in text:
            raise RuntimeError("irq_sim.c changed: the irq_to_desc() call to replace is gone; review the patch")
        irq_sim.write_text(text.replace(*_UNEXPORTED))
        (tmp / "Kbuild").write_text(kbuild)
        _run(["make", "-C", str(headers), f"M={tmp}", "modules"], log=tmp / "build.log")
        _publish(tmp, final)
    return final / "gpio-sim.ko"


# --- wheels ---------------------------------------------------------------------------------------

# The newest evdev on PyPI is an sdist; built here once into a cp311 wheel for the guest.
EXTRA_WHEELS = ["lgpio>=0.2.2", "evdev", "setuptools>=68", "wheel"]


def build_wheels() -> Path:
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = _digest("wheels-v1", (ROOT / "pyproject.toml").read_text(), py, *EXTRA_WHEELS)
    final = cache_dir() / f"wheels-{key}"
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=final.parent))
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(tmp),
              str(ROOT), *EXTRA_WHEELS], log=tmp.parent / f"{tmp.name}.log")
        for own in tmp.glob("door_bridge-*.whl"):
            own.unlink()  # the project itself comes from the run disk's source, as install.sh builds it
        _publish(tmp, final)
    return final


# --- the run disk ---------------------------------------------------------------------------------


def project_files() -> list[str]:
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                          capture_output=True, check=True)
    return [f for f in done.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


def build_run_disk(path: Path, module: Path, wheels: Path, scenario_files: dict[str, bytes] | None = None) -> Path:
    """The per-run disk: project source, module, wheels (and any extra files a test hands in)."""
    staging = Path(tempfile.mkdtemp(prefix="rundisk-", dir=path.parent))
    try:
        src = staging / "src"
        for rel in project_files():
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest)
        shutil.copy2(module, staging / "gpio-sim.ko")
        shutil.copytree(wheels, staging / "wheels")
        for rel, data in (scenario_files or {}).items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        path.unlink(missing_ok=True)
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "dbrun", "-d", str(staging), str(path), "512M"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


@dataclass(frozen=True)
class Image:
    rootfs: Rootfs
    module: Path
    wheels: Path


def build_all() -> Image:
    rootfs = build_rootfs()
    return Image(rootfs, build_gpio_sim(rootfs.release), build_wheels())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.system.image", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report missing host packages")
    args = parser.parse_args(argv)
    missing = missing_host_packages()
    if missing:
        print("missing host packages: apt-get install " + " ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        return 0
    started = time.monotonic()
    image = build_all()
    print(f"rootfs  {image.rootfs.image} (kernel {image.rootfs.release})")
    print(f"module  {image.module}")
    print(f"wheels  {image.wheels}")
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
