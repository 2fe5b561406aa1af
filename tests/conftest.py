"""Suite-wide rules.

The layer of a test is its folder: `tests/unit` (one part in-process), `tests/integration` (parts
together: daemons, processes, loopback servers) and `tests/system` (the Debian guest under QEMU).
Each test is marked with its layer, so `pytest -m unit` runs the fast pure layer alone.

A test that needs a tool from a Debian package skips with a reason that names the install command
(`apt-get install …`), so a developer's laptop without it still runs the rest. In CI (`CI=true`)
`.ci/run` installs those packages, so such a skip means an install step is missing: it fails.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
TESTS = Path(__file__).resolve().parent
LAYERS = ("unit", "integration", "system")


def _layer(item: pytest.Item) -> str | None:
    relative = item.path.relative_to(TESTS) if item.path.is_relative_to(TESTS) else None
    return relative.parts[0] if relative is not None and relative.parts[0] in LAYERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        layer = _layer(item)
        if layer is not None:
            item.add_marker(getattr(pytest.mark, layer))
    # The guest's tests last: its run starts with the session (below) and they read its report.
    items.sort(key=lambda item: _layer(item) == "system")


@pytest.fixture(scope="session", autouse=True)
def _guest_in_background(request: pytest.FixtureRequest,
                         tmp_path_factory: pytest.TempPathFactory) -> Generator[None, None, None]:
    """Start the guest run (tests/system/background.py) at the first test when the session has
    guest tests, so the host tests overlap it instead of waiting for it."""
    wanted = any(_layer(item) == "system" for item in request.session.items)
    run = None
    if wanted and os.environ.get("DOOR_BRIDGE_GUEST_BACKGROUND", "1") != "0":
        from tests.system import background

        if not background.switched_off() and background.unavailable() is None:
            run = background.RUN
            run.start(tmp_path_factory)
    yield
    if run is not None:
        run.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and "apt-get install" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"skipped for a missing install, which CI must not do: {report.longrepr}"
