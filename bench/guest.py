"""The system suite's power-cut series at bench size: 50 cuts of a real Debian 12 guest (x86_64 or arm64).

    python bench/guest.py [--cuts 50] [--arch x86_64|arm64] [--save bench/results/guest-x86_64.json]
    python bench/guest.py --from-results DIR     # the same figures from an earlier run's results logs

Runs tests/system/test_guest.py with DOOR_BRIDGE_POWER_CUTS set (the suite asserts; this only
measures) and prints its figures, the suite's own JSON as the last line of stdout: image build and
boot times, per cut the decisions the guest acknowledged before QEMU was SIGKILLed and how many of
them the next boot found in audit.db, events the central stored twice, the relay line's value at
power-on and its kernel trace up to READY, the in-guest security score. Same host packages as the
suite (tests/system/README.md). ~25-35 s per cut under TCG.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def figures_from_results(work: Path) -> dict[str, Any]:
    """The same figures from a run's results logs (`results-N.log` in its guest work dir): for a run
    stopped before its `final` boot, the last boot that audited and scanned plays `final`, so every
    cut before it is checked against the audit of the boot after it. Host-side timings are not in
    the logs (null); the guest's own uptime at READY is."""
    from tests.system import power_cuts

    def messages(path: Path) -> list[dict[str, Any]]:
        out = []
        for line in path.read_bytes().split(b"\n"):
            line = line.strip().strip(b"\r")
            if line.startswith(b"{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    logs = sorted(work.glob("results-*.log"), key=lambda p: int(p.stem.split("-")[1]))
    if len(logs) < 3:
        raise SystemExit(f"{work}: needs results-1.log (main) and at least two cut boots")
    run = power_cuts.Run(main=messages(logs[0]))
    boots = [messages(p) for p in logs[1:]]
    done = [b for b in boots if {"audit", "ready", "scenario"} <= {m.get("kind") for m in b}]
    ended = any(m.get("kind") == "done" for m in done[-1]) and not any(m.get("kind") == "scanning" for m in done[-1])
    cut_boots = done[:-1]
    run.cuts = [SimpleNamespace(messages=b) for b in cut_boots]  # type: ignore[misc]
    run.final = done[-1]
    audits, problems = power_cuts.audit_power_cuts(run)
    figures = power_cuts.power_cut_figures(run, audits, problems)
    figures.update(parts_ready_s=None, main_scenario_s=None)  # host timings: not in the logs
    figures["from_results"] = {"dir": str(work), "boots_logged": len(logs), "run_ended": ended}
    return figures


def smoke() -> dict[str, Any]:
    """One boot of scenario `gpio` (no door-bridge, so no wheels): how long the parts and the boot take."""
    import time

    from tests.system import image as image_mod
    from tests.system.qemu import Guest

    arch = image_mod.guest_arch()
    started = time.monotonic()
    rootfs = image_mod.build_rootfs(arch)
    rootfs_s = round(time.monotonic() - started, 1)
    module = image_mod.build_gpio_sim(rootfs.release, rootfs)
    parts_s = round(time.monotonic() - started, 1)
    with tempfile.TemporaryDirectory(prefix="bench-guest-smoke-") as tmp:
        work = Path(tmp)
        (work / "wheels").mkdir()
        img = image_mod.Image(rootfs, module, work / "wheels")
        guest = Guest(img, work, image_mod.build_run_disk(work / "run.img", module, work / "wheels"))
        boot = guest.boot("gpio")
        first = boot.wait_for(lambda m: m.get("kind") == "scenario", timeout=600)
        boot.wait_for(lambda m: m.get("kind") == "done", timeout=900)
        boot.wait_exit(120)
        checks = [m for m in boot.messages if m.get("kind") == "check"]
        booted = next((m for m in boot.messages if m.get("kind") == "boot"), {})
        return {"bench": "guest-smoke", "arch": arch.name, "rootfs_built_s": rootfs.built_s, "rootfs_ready_s": rootfs_s,
                "parts_ready_s": parts_s, "kernel": rootfs.release, "boot_to_scenario_s": first["t_host"],
                "guest_uptime_at_scenario_s": booted.get("uptime_s"), "multi_user": booted.get("multi_user"),
                "systemd_analyze": booted.get("analyze"), "checks": checks,
                "checks_failed": [m["name"] for m in checks if not m.get("ok")], "console_tail": boot.console_tail(8)}


def resume(work: Path, cuts: int) -> None:
    """Go on with a series whose host process ended (the disks are the door's: what they hold is
    what the next boot finds). The run disk is rebuilt from the source as it is now."""
    import random

    from tests.system import image as image_mod
    from tests.system.qemu import Boot, Guest
    from tests.system.power_cuts import power_cut_series

    img = image_mod.build_all()
    guest = Guest.resume(img, work, image_mod.build_run_disk(work / "run.img", img.module, img.wheels))
    first = guest.boots - 1  # boots so far: main and the cut boots (the last one, if cut, is audited by the next)

    def scenario(name: str, timeout: float, **params: str) -> Boot:
        boot = guest.boot(name, **params)
        boot.wait_for(lambda m: m.get("kind") == "scenario", timeout=400)
        return boot

    power_cut_series(scenario, cuts, random.Random(12 + first), first=first)
    final = scenario("final", 600, boot=str(first + cuts))
    final.wait_for(lambda m: m.get("kind") == "done", timeout=600)
    final.wait_exit(120)


class _StdoutToStderr:
    """The tools the parts are built with (mke2fs, ...) talk on stdout; the JSON must be its only line."""

    def __enter__(self) -> None:
        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)

    def __exit__(self, *_: object) -> None:
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=50)
    parser.add_argument("--save", type=Path, help="also write the JSON figures to this file")
    parser.add_argument("--arch", choices=["x86_64", "arm64"], default="x86_64",
                        help="arm64: qemu-system-aarch64 -M virt, aarch64 wheels, cross-built gpio-sim (tests/system/README.md)")
    parser.add_argument("--from-results", type=Path, metavar="DIR",
                        help="no guest: the figures from an earlier run's results logs (its pytest guest0 dir)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="boot --cuts more cuts (then `final`) on the disks an earlier run left in DIR, then its figures")
    parser.add_argument("--smoke", action="store_true",
                        help="only build the rootfs and gpio-sim and boot once (scenario gpio): build and boot times")
    args = parser.parse_args()
    if args.smoke:
        sys.path.insert(0, str(ROOT))
        os.environ["DOOR_BRIDGE_GUEST_ARCH"] = args.arch
        with _StdoutToStderr():
            figures = smoke()
        if args.save:
            args.save.write_text(json.dumps(figures, indent=1) + "\n")
        print(json.dumps(figures))
        return 0 if figures["checks_failed"] == [] else 1
    if args.resume:
        sys.path.insert(0, str(ROOT))
        os.environ["DOOR_BRIDGE_GUEST_ARCH"] = args.arch
        with _StdoutToStderr():
            resume(args.resume, args.cuts)
        args.from_results = args.resume
    if args.from_results:
        sys.path.insert(0, str(ROOT))
        figures = figures_from_results(args.from_results)
        if args.save:
            args.save.write_text(json.dumps(figures, indent=1) + "\n")
        print(json.dumps(figures))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-guest-") as tmp:
        figures_path = Path(tmp) / "figures.json"
        env = {**os.environ, "DOOR_BRIDGE_POWER_CUTS": str(args.cuts), "DOOR_BRIDGE_GUEST_FIGURES": str(figures_path),
               "DOOR_BRIDGE_GUEST_ARCH": args.arch}
        env.pop("DOOR_BRIDGE_GUEST", None)  # asked for by name: never switched off here
        # Its own --basetemp: pytest's numbered /tmp/pytest-of-USER/pytest-N dirs are pruned by any other
        # pytest run of the same user, and an hour-long series lost its disks that way once.
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                                f"--basetemp={Path(tmp) / 'pytest'}", "tests/system/test_guest.py"],
                               cwd=ROOT, env=env, stdout=sys.stderr)
        if not figures_path.exists():
            print(f"bench/guest.py: the suite wrote no figures (pytest exit {code})", file=sys.stderr)
            return code or 1
        figures = json.loads(figures_path.read_text())
    figures["suite_exit"] = code
    text = json.dumps(figures)
    if args.save:
        args.save.write_text(json.dumps(figures, indent=1) + "\n")
    print(text)
    return code


if __name__ == "__main__":
    sys.exit(main())
