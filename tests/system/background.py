"""The guest run, started when the session starts and awaited by tests/system/test_guest.py.

The guest is most of the README's test command: CI took 2377 of its 2400 s at the last landing
with it, and here (2-core, TCG) the guest's `main` boot alone ran 24 min; every host test
waited for it or it for them. QEMU (TCG, one vCPU) keeps one core
busy and its host side only waits on serial logs, so tests/conftest.py starts this run in a
thread at the first test and orders the guest's own tests last: the host tests run meanwhile on
the other core, one at a time as before, and the guest's tests then read what it reported.

`DOOR_BRIDGE_GUEST_BACKGROUND=0` runs it in the foreground when its tests come (as before).
A session that ends early (`-x`, Ctrl-C) kills the QEMU of the boot in progress.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from tests.system import image as image_mod
from tests.system.power_cuts import Run, power_cut_series
from tests.system.qemu import Boot, Guest

POWER_CUTS = int(os.environ.get("DOOR_BRIDGE_POWER_CUTS", "10"))


def unavailable() -> str | None:
    """Why the guest cannot run here (a missing host package, a foreign arch without binfmt), or None."""
    arch = image_mod.guest_arch()
    missing = image_mod.missing_host_packages(arch)
    if missing:
        return f"the {arch.name} guest suite needs: apt-get install " + " ".join(missing)
    return image_mod.foreign_arch_problem(arch)


def switched_off() -> bool:
    """DOOR_BRIDGE_GUEST=0 on a shared development machine; never in CI."""
    return os.environ.get("DOOR_BRIDGE_GUEST") == "0" and os.environ.get("CI") != "true"


class GuestRun:
    """One guest run (build, `main`, the power cuts, `final`), in a thread or in the caller."""

    def __init__(self) -> None:
        self._future: Future[Run] | None = None
        self._boot: Boot | None = None
        self._stopping = threading.Event()

    def start(self, tmp: pytest.TempPathFactory) -> None:
        if self._future is not None:
            return
        self._future = Future()
        work = tmp.mktemp("guest")  # console logs, disks: `guest0` in pytest's basetemp
        threading.Thread(target=self._run, args=(work,), name="guest-run", daemon=True).start()

    def result(self, tmp: pytest.TempPathFactory) -> Run:
        """The run's record; runs it here and now if nothing started it."""
        if self._future is None:
            self._future = Future()
            self._run(tmp.mktemp("guest"))
        return self._future.result()

    def stop(self) -> None:
        """Session end: a run still going has nobody to report to; its QEMU must not outlive pytest."""
        self._stopping.set()
        boot = self._boot
        if boot is not None and boot.process.poll() is None:
            boot.process.kill()
            boot.process.wait(30)

    def _run(self, work: Path) -> None:
        assert self._future is not None
        if threading.current_thread() is not threading.main_thread():
            # Niceness is per thread on Linux and children inherit it: every command of the run,
            # QEMU included, yields to the host tests, which time things (test_fleet's burst was
            # smeared by a full-priority QEMU beside it: 52 against 2 x 35 requests in 100 ms).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            # The build's commands print; in a thread they would land in whichever host test's
            # captured output is open (and break one that compares it).
            image_mod.OUTPUT = (work / "build.log").open("a")
        try:
            self._future.set_result(self._series(work))
        except BaseException as e:  # handed to the fixture, which raises it in the test
            self._future.set_exception(e)

    def _series(self, work: Path) -> Run:
        result = Run()
        started = time.monotonic()
        img = image_mod.build_all()
        disk = image_mod.build_run_disk(work / "run.img", img.module, img.wheels)
        result.build_s = round(time.monotonic() - started, 1)
        result.rootfs_built_s = img.rootfs.built_s
        guest = Guest(img, work, disk)

        def scenario(name: str, timeout: float, **params: str) -> Boot:
            if self._stopping.is_set():
                raise RuntimeError("the pytest session ended before the guest run did")
            boot = self._boot = guest.boot(name, **params)
            first = boot.wait_for(lambda m: m.get("kind") == "scenario", timeout=400)  # ~130 s seen on a loaded host
            result.boot_s.append(first["t_host"])
            return boot

        t0 = time.monotonic()
        main = scenario("main", 1200)
        # 24 min seen on this 2-core host with a benchmark beside it; the host tests now run beside it.
        main.wait_for(lambda m: m.get("kind") == "done", timeout=2400)
        main.wait_exit(120)
        result.main = main.messages
        result.main_s = round(time.monotonic() - t0, 1)
        result.cuts = power_cut_series(scenario, POWER_CUTS, random.Random(12))
        final = scenario("final", 600, boot=str(POWER_CUTS))
        final.wait_for(lambda m: m.get("kind") == "done", timeout=600)
        final.wait_exit(120)
        result.final = final.messages
        return result


RUN = GuestRun()

