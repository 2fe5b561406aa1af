"""Boot the guest under QEMU (TCG; KVM here is PVM and hangs a stock kernel) and read what it says.

Disks: vda the cached rootfs through a per-run qcow2 overlay (the cache stays pristine; the
overlay survives reboots within a run, as a door's SD card does), vdb the run disk (read-only),
vdc the state disk (/var/lib/door-bridge). Every writable disk is `cache=writethrough`: a write
the guest was told is done is on the host's disk, so killing QEMU loses exactly what a power cut
loses — the guest's page cache and whatever it had not written yet.

Serial ports: ttyS0 the kernel/systemd console (a log for people), ttyS1 the results channel: the
guest writes one JSON object per line (tests/system/guest/scenario.py's Reporter). The arm64 guest
(`-M virt -cpu max,pauth-impdef=on`) has one PL011 UART, ttyAMA0, for the console, and a virtio
serial port for the results. No network device at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tests.system.image import ARM64, Image

MEMORY_MB = 1536
ARM_RESULTS = "/dev/virtio-ports/dbtest.results"  # udev's name for the virtserialport below


@dataclass
class Boot:
    """One boot of the guest: the QEMU process, its console log and its results channel."""

    process: subprocess.Popen[bytes]
    console: Path
    results: Path
    started: float
    _offset: int = 0
    _partial: bytes = b""
    messages: list[dict[str, Any]] = field(default_factory=list)

    def poll(self) -> list[dict[str, Any]]:
        """New result lines since the last poll (a line is only taken once it is complete)."""
        try:
            with self.results.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        new = []
        for line in lines:
            line = line.strip().strip(b"\r")
            if not line.startswith(b"{"):
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            message.setdefault("t_host", round(time.monotonic() - self.started, 2))
            new.append(message)
        self.messages += new
        return new

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = len(self.messages)
        while time.monotonic() < deadline:
            self.poll()
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            if self.process.poll() is not None:
                self.poll()
                for message in self.messages[seen:]:
                    if predicate(message):
                        return message
                raise AssertionError(f"the guest stopped (exit {self.process.returncode}) first; console tail:\n{self.console_tail()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:.0f} s; console tail:\n{self.console_tail()}")

    def wait_exit(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the guest did not power off within {timeout:.0f} s; console tail:\n{self.console_tail()}") from None
        self.poll()
        return code

    def power_cut(self) -> None:
        """SIGKILL QEMU: the guest's page cache, its CPU state and every unwritten byte are gone."""
        self.kill()
        self.poll()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def console_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.console.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no console output)"


@dataclass
class Guest:
    """The disks of one run of the suite, booted as many times as a scenario needs."""

    image: Image
    work: Path
    run_disk: Path
    boots: int = 0

    def __post_init__(self) -> None:
        self.overlay = self.work / "root.qcow2"
        self.state_disk = self.work / "state.img"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.rootfs.image),
                        str(self.overlay)], check=True)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "dbstate", str(self.state_disk), "256M"], check=True)

    @classmethod
    def resume(cls, image: Image, work: Path, run_disk: Path) -> Guest:
        """The disks an earlier run left in `work` (overlay, state disk), booted on from its last boot."""
        guest = cls.__new__(cls)
        guest.image, guest.work, guest.run_disk = image, work, run_disk
        guest.overlay, guest.state_disk = work / "root.qcow2", work / "state.img"
        guest.boots = max((int(p.stem.split("-")[1]) for p in work.glob("results-*.log")), default=0)
        return guest

    def boot(self, scenario: str, **params: str) -> Boot:
        self.boots += 1
        n = self.boots
        console, results = self.work / f"console-{n}.log", self.work / f"results-{n}.log"
        r = self.image.rootfs
        arm = r.arch is ARM64
        cmdline = " ".join([
            "root=/dev/vda", "rw", f"console={'ttyAMA0' if arm else 'ttyS0'}", "loglevel=4", "panic=-1",
            "systemd.show_status=auto", f"dbtest.scenario={scenario}", *(f"dbtest.{k}={v}" for k, v in params.items()),
            *([f"dbtest.results={ARM_RESULTS}"] if arm else []),
        ])
        if arm:
            # -M virt has one UART (the console); results go out on a virtio serial port instead.
            machine = ["-machine", "virt", "-cpu", "max,pauth-impdef=on"]
            channels = ["-serial", f"file:{console}", "-device", "virtio-serial-pci",
                        "-chardev", f"file,id=results,path={results}",
                        "-device", "virtserialport,chardev=results,name=dbtest.results"]
        else:
            machine = ["-machine", "q35", "-cpu", "max"]
            channels = ["-serial", f"file:{console}", "-serial", f"file:{results}"]
        cmd = [
            r.arch.qemu, *machine, "-accel", "tcg", "-smp", "1", "-m", str(MEMORY_MB),
            "-display", "none", "-monitor", "none", "-nic", "none", "-no-reboot",
            "-kernel", str(r.kernel), "-initrd", str(r.initrd), "-append", cmdline, *channels,
            "-drive", f"if=virtio,file={self.overlay},format=qcow2,cache=writethrough",
            "-drive", f"if=virtio,file={self.run_disk},format=raw,readonly=on",
            "-drive", f"if=virtio,file={self.state_disk},format=raw,cache=writethrough",
        ]
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(self.work / f"qemu-{n}.err").open("wb"))
        return Boot(process, console, results, time.monotonic())
