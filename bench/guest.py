"""The system suite's power-cut series at bench size: 50 cuts of a real Debian 12 guest (x86_64).

    python bench/guest.py [--cuts 50]

Runs tests/system/test_guest.py with DOOR_BRIDGE_POWER_CUTS set and prints its figures (image
build and boot times, cuts, acknowledged decisions checked, relay pulses, security score). Same
host packages as the suite (tests/system/README.md). ~25-35 s per cut under TCG.

Not here yet: the arm64 guest (qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on, foreign-arch
mmdebstrap with arch-test and qemu-user-static); see tests/system/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=50)
    args = parser.parse_args()
    env = {**os.environ, "DOOR_BRIDGE_POWER_CUTS": str(args.cuts)}
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                            "tests/system/test_guest.py"], cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
