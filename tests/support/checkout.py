"""A copy of the files systemd/install.sh reads, so its dry runs do not depend on the rest of the tree.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path) -> Iterator[Path]:
    """A copy of the files install.sh reads, so the dry run does not depend on the rest of the tree."""
    co = tmp_path / "checkout"
    for rel in ("systemd/door-bridge.service", "systemd/install.sh", "systemd/uninstall.sh", "systemd/script-helpers.sh", "systemd/door-bridge-nfc-blacklist.conf", "hardware/udev/99-door-bridge.rules", "pyproject.toml"):
        (co / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, co / rel)
    (co / "config.example.toml").write_text("# example\n")
    yield co

