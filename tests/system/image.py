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
from typing import TextIO

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GUEST_DIR = HERE / "guest"

@dataclass(frozen=True)
class Arch:
    """What differs between the x86_64 guest (the suite, CI) and the arm64 one (Raspberry Pi OS's arch)."""

    name: str  # as DOOR_BRIDGE_GUEST_ARCH and bench/guest.py --arch spell it
    debian: str  # dpkg architecture
    qemu: str
    pip_platforms: tuple[str, ...]  # wheel platform tags pip may take for this guest
    host_tools: tuple[tuple[str, str], ...]  # (tool, Debian package) beyond the common ones


X86_64 = Arch("x86_64", "amd64", "qemu-system-x86_64", ("manylinux2014_x86_64",), (("qemu-system-x86_64", "qemu-system-x86"),))
# Foreign-arch mmdebstrap runs the arm64 maintainer scripts through qemu-user (binfmt_misc, checked
# by arch-test); gpio-sim is cross-compiled against Debian's arm64 headers with the host's kbuild.
ARM64 = Arch("arm64", "arm64", "qemu-system-aarch64",
             ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64", "linux_aarch64"),
             (("qemu-system-aarch64", "qemu-system-arm"), ("qemu-aarch64-static", "qemu-user-static"),
              ("arch-test", "arch-test"), ("update-binfmts", "binfmt-support"),
              ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"), ("dpkg-deb", "dpkg")))
ARCHES = {a.name: a for a in (X86_64, ARM64)}


def guest_arch() -> Arch:
    name = os.environ.get("DOOR_BRIDGE_GUEST_ARCH", "x86_64")
    if name not in ARCHES:
        raise SystemExit(f"DOOR_BRIDGE_GUEST_ARCH: {name!r} is not one of {sorted(ARCHES)}")
    return ARCHES[name]


# Host tools, by the Debian package that provides them (named in skip messages and installed by .ci/run).
HOST_TOOLS = {
    "qemu-img": "qemu-utils",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "make": "make",
    "gcc": "gcc",
}
HOST_FILES = {"/usr/src/linux-source-6.1.tar.xz": "linux-source-6.1"}
HOST_PACKAGES = sorted({*HOST_TOOLS.values(), *HOST_FILES.values(), *dict(X86_64.host_tools).values(),
                        "linux-headers-amd64", "xz-utils"})

# What a plain Debian 12 door needs before install.sh runs, and nothing from the Raspberry Pi OS
# archive: python3-evdev is the distribution's 1.6.1 on purpose (the floor pyproject.toml allows).
GUEST_PACKAGES = [
    "systemd-sysv", "udev", "dbus", "kmod", "initramfs-tools", "linux-image-amd64",
    "python3", "python3-venv", "python3-evdev", "libusb-1.0-0",
    "procps", "util-linux", "sqlite3", "e2fsprogs",
]


def guest_packages(arch: Arch) -> list[str]:
    return [p.replace("linux-image-amd64", f"linux-image-{arch.debian}") for p in GUEST_PACKAGES]
ROOTFS_SIZE = "2G"


def cache_dir() -> Path:
    return Path(os.environ.get("DOOR_BRIDGE_GUEST_CACHE", "~/.cache/door-bridge-guest")).expanduser()


def missing_host_packages(arch: Arch | None = None) -> list[str]:
    arch = arch or guest_arch()
    tools = {**HOST_TOOLS, **dict(arch.host_tools)}
    missing = {pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
    missing |= {pkg for path, pkg in HOST_FILES.items() if not Path(path).exists()}
    if arch is X86_64 and not list(Path("/usr/src").glob("linux-headers-*-amd64")):
        missing.add("linux-headers-amd64")
    if arch is ARM64 and not KBUILD.exists():
        missing.add("linux-kbuild-6.1")
    return sorted(missing)


def foreign_arch_problem(arch: Arch) -> str | None:
    """arm64 maintainer scripts run through binfmt_misc + qemu-user; say how to enable it if not."""
    if arch is X86_64:
        return None
    done = subprocess.run(["arch-test", arch.debian], capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    return (f"arch-test {arch.debian}: {(done.stdout + done.stderr).strip()}; as root: mount -t binfmt_misc binfmt_misc "
            f"/proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64")


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


# Where the commands and their output go when they have no log of their own: the terminal, or
# (for the run in the background, tests/system/background.py) a file, never a test's capture.
OUTPUT: TextIO | None = None


def _run(cmd: list[str], log: Path | None = None, **kw) -> None:
    print("+", " ".join(cmd), file=OUTPUT or sys.stderr, flush=True)
    if log is None:
        if OUTPUT is not None:
            kw = {"stdout": OUTPUT, "stderr": subprocess.STDOUT, **kw}
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
    arch: Arch = X86_64
    headers_debs: Path | None = None  # arm64: the guest kernel's linux-headers debs, for the cross build


def build_rootfs(arch: Arch | None = None) -> Rootfs:
    arch = arch or guest_arch()
    sources = apt_sources()
    hook = (GUEST_DIR / "customize.sh").read_text()
    packages = guest_packages(arch)
    foreign = [] if arch is X86_64 else [arch.debian]  # x86_64 keeps the key it always had
    key = _digest("rootfs-v1", " ".join(packages), hook, ROOTFS_SIZE, *foreign,
                  *(p.read_text() for p in sources), _candidate("linux-image-amd64"), _candidate("python3-evdev"))
    final = cache_dir() / (f"rootfs-{key}" if arch is X86_64 else f"rootfs-{arch.name}-{key}")
    if not (final / "rootfs.img").exists():
        if problem := foreign_arch_problem(arch):
            raise RuntimeError(problem)
        started = time.monotonic()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="rootfs-", dir=final.parent))
        tree = tmp / "tree"
        hooks = [] if arch is X86_64 else [f"--architectures={arch.debian}"]
        _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--include=" + ",".join(packages), *hooks,
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
    release = (final / "release").read_text()
    headers = None if arch is X86_64 else fetch_headers(arch, release)
    return Rootfs(final / "rootfs.img", final / "vmlinuz", final / "initrd.img", release, built, arch, headers)


def fetch_headers(arch: Arch, release: str) -> Path:
    """The guest kernel's linux-headers debs (flavour and -common) for a foreign arch, by the host's
    apt with that arch and lists of its own (the host's apt state is not touched). Cached per release."""
    final = cache_dir() / f"headers-{arch.name}-{release}"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"headers-{arch.name}-", dir=final.parent))
    state = tmp / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True)
    opts = [f"-oAPT::Architecture={arch.debian}", f"-oAPT::Architectures={arch.debian}", f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::Cache={state / 'cache'}", "-oDebug::NoLocking=1"]
    _run(["apt-get", *opts, "update", "-qq"], log=tmp / "fetch.log")
    _run(["apt-get", *opts, "download", "-q", f"linux-headers-{release}", f"linux-headers-{release.rsplit('-', 1)[0]}-common"],
         log=tmp / "fetch.log", cwd=tmp)
    shutil.rmtree(state)
    return _publish(tmp, final)


# --- gpio-sim -------------------------------------------------------------------------------------

LINUX_SOURCE = Path("/usr/src/linux-source-6.1.tar.xz")
_SIM_FILES = {"drivers/gpio/gpio-sim.c": "gpio-sim-main.c", "drivers/gpio/gpiolib.h": "gpiolib.h",
              "kernel/irq/irq_sim.c": "irq_sim.c"}
_UNEXPORTED = ("handle_simple_irq(irq_to_desc(irqnum));", "generic_handle_irq(irqnum);")


KBUILD = Path("/usr/lib/linux-kbuild-6.1")  # the host's kbuild programs (fixdep, modpost), from linux-headers-amd64


def _cross_headers(rootfs: Rootfs, dest: Path) -> Path:
    """The arm64 kernel's headers unpacked on the host, their kbuild links pointed at the host's own
    (amd64) linux-kbuild-6.1: the scripts are host programs, the headers and config the guest's."""
    assert rootfs.headers_debs is not None
    for deb in sorted(rootfs.headers_debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(dest)])
    src = dest / "usr/src"
    flavour = src / f"linux-headers-{rootfs.release}"
    commons = list(src.glob("linux-headers-*-common"))
    if not flavour.exists() or len(commons) != 1:
        raise RuntimeError(f"{rootfs.headers_debs}: no linux-headers-{rootfs.release} and -common in the downloaded debs")
    (flavour / "Makefile").write_text(f"include {commons[0]}/Makefile\n")
    for top in (flavour, commons[0]):
        for link in top.iterdir():
            if link.is_symlink() and "linux-kbuild-6.1" in os.readlink(link):
                target = KBUILD / os.readlink(link).split("linux-kbuild-6.1/", 1)[1]
                link.unlink()
                link.symlink_to(target)
    return flavour


def build_gpio_sim(release: str, rootfs: Rootfs | None = None) -> Path:
    cross = rootfs is not None and rootfs.arch is not X86_64
    headers = Path(f"/lib/modules/{release}/build")
    if not cross and not headers.exists():
        raise RuntimeError(f"no kernel headers for the guest kernel {release}: apt-get install linux-headers-{release}")
    if cross and (rootfs is None or rootfs.headers_debs is None):
        raise RuntimeError(f"the {release} rootfs carries no headers debs; remove its cache directory to rebuild it")
    kbuild = (HERE / "gpio-sim" / "Kbuild").read_text()
    extra = [rootfs.arch.name, *sorted(p.name for p in rootfs.headers_debs.glob("*.deb"))] if cross and rootfs and rootfs.headers_debs else []
    key = _digest("gpio-sim-v1", release, kbuild, str(LINUX_SOURCE.stat().st_size), str(int(LINUX_SOURCE.stat().st_mtime)),
                  *_UNEXPORTED, *extra)
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
        make = ["make", "-C", str(headers), f"M={tmp}", "modules"]
        if cross:
            assert rootfs is not None
            headers_tree = Path(tempfile.mkdtemp(prefix="headers-", dir=final.parent))
            make = ["make", "-C", str(_cross_headers(rootfs, headers_tree)), f"M={tmp}", "ARCH=arm64",
                    "CROSS_COMPILE=aarch64-linux-gnu-", "modules"]
        try:
            _run(make, log=tmp / "build.log")
        finally:
            if cross:
                shutil.rmtree(headers_tree, ignore_errors=True)
        _publish(tmp, final)
    return final / "gpio-sim.ko"


# --- wheels ---------------------------------------------------------------------------------------

# The newest evdev on PyPI is an sdist; built here once into a cp311 wheel for the guest.
EXTRA_WHEELS = ["lgpio>=0.2.2", "evdev", "setuptools>=68", "wheel"]


def build_wheels(arch: Arch | None = None) -> Path:
    arch = arch or guest_arch()
    if arch is not X86_64:
        return _foreign_wheels(build_wheels(X86_64), arch)
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


def _foreign_wheels(native: Path, arch: Arch) -> Path:
    """The same set, same versions, for another arch: pure wheels copied, every binary one fetched
    from PyPI as that arch's wheel (`pip download --platform ... --only-binary=:all:`). A package
    with no such wheel is listed in NO_WHEEL.txt and left out (the guest then uses Debian's, or
    the scenario reports the part it could not run)."""
    names = sorted(p.name for p in native.glob("*.whl"))
    key = _digest("wheels-foreign-v1", arch.name, *arch.pip_platforms, *names)
    final = cache_dir() / f"wheels-{arch.name}-{key}"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"wheels-{arch.name}-", dir=final.parent))
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    missing = []
    for name in names:
        if name.endswith("-none-any.whl"):
            shutil.copy2(native / name, tmp / name)
            continue
        dist, version = name.split("-")[:2]
        platforms = [x for p in arch.pip_platforms for x in ("--platform", p)]
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                               "--only-binary=:all:", *platforms, "--python-version", py, "--implementation", "cp",
                               "--dest", str(tmp), f"{dist}=={version}"], capture_output=True, text=True, check=False)
        if done.returncode:
            missing.append(f"{dist}=={version}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}")
    built = _sdist_wheels(arch, [m.split(":", 1)[0] for m in missing], native) if missing else None
    for wheel in sorted(built.glob("*.whl")) if built else []:
        shutil.copy2(wheel, tmp / wheel.name)
    (tmp / "NO_WHEEL.txt").write_text("".join(f"{m} -> built from the sdist in an {arch.debian} chroot: "
                                              f"{', '.join(w.name for w in built.glob(m.split('==')[0] + '-*.whl')) if built else 'no'}\n"
                                              for m in missing))
    return _publish(tmp, final)


# Debian's build tools, in a foreign-arch chroot (qemu-user): swig for lgpio, the kernel's uapi
# headers for evdev. PYPI=1 makes lgpio's setup.py link its C library statically, as its PyPI wheels do.
SDIST_BUILD_PACKAGES = ["python3-dev", "python3-pip", "python3-setuptools", "python3-wheel", "gcc", "libc6-dev", "swig",
                        "linux-libc-dev"]


def _sdist_wheels(arch: Arch, specs: list[str], native: Path) -> Path:
    """Wheels for `arch` built from PyPI's sdists inside a throwaway mmdebstrap chroot of that arch."""
    key = _digest("sdist-wheels-v2", arch.debian, *SDIST_BUILD_PACKAGES, *sorted(specs), *(p.read_text() for p in apt_sources()))
    final = cache_dir() / f"sdist-wheels-{arch.name}-{key}"
    if final.exists():
        return final
    if problem := foreign_arch_problem(arch):
        raise RuntimeError(problem)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"sdist-wheels-{arch.name}-", dir=final.parent))
    sdists = tmp / "sdists"
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--no-binary=:all:",
          "--dest", str(sdists), *specs], log=tmp / "build.log")
    # bookworm's setuptools (66) rejects evdev 2's PEP 639 `license = "BSD-3-Clause"`: the project's own
    # pure setuptools wheel (from the x86_64 set) goes into the chroot first.
    for wheel in (*native.glob("setuptools-*.whl"), *native.glob("wheel-*.whl")):
        shutil.copy2(wheel, sdists / wheel.name)
    build = ("chroot \"$1\" sh -c 'set -e; mkdir -p /tmp/out; python3 -m pip install --quiet --break-system-packages --no-index"
             " --no-deps /tmp/sdists/*.whl; for f in /tmp/sdists/*.tar.gz; do PYPI=1 python3 -m pip wheel"
             " --no-deps --no-build-isolation --no-index --wheel-dir /tmp/out \"$f\"; done'")
    _run(["mmdebstrap", "--variant=apt", "--mode=root", f"--architectures={arch.debian}",
          "--include=" + ",".join(SDIST_BUILD_PACKAGES), f"--customize-hook=copy-in {sdists} /tmp",
          f"--customize-hook={build}", f"--customize-hook=copy-out /tmp/out {tmp}",
          "bookworm", str(tmp / "tree"), *map(str, apt_sources())], log=tmp / "build.log")
    for wheel in (tmp / "out").glob("*.whl"):
        shutil.move(wheel, tmp / wheel.name)
    shutil.rmtree(tmp / "tree", ignore_errors=True)
    shutil.rmtree(tmp / "out", ignore_errors=True)
    return _publish(tmp, final)


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


def build_all(arch: Arch | None = None) -> Image:
    arch = arch or guest_arch()
    rootfs = build_rootfs(arch)
    return Image(rootfs, build_gpio_sim(rootfs.release, rootfs), build_wheels(arch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.system.image", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report missing host packages")
    parser.add_argument("--arch", choices=sorted(ARCHES), default=guest_arch().name)
    args = parser.parse_args(argv)
    arch = ARCHES[args.arch]
    missing = missing_host_packages(arch)
    if missing:
        print("missing host packages: apt-get install " + " ".join(missing), file=sys.stderr)
        return 1
    if args.check:
        return 0
    started = time.monotonic()
    image = build_all(arch)
    print(f"rootfs  {image.rootfs.image} (kernel {image.rootfs.release})")
    print(f"module  {image.module}")
    print(f"wheels  {image.wheels}")
    print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
