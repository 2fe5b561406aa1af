"""Suite-wide rules.

A test that needs a tool from a Debian package skips with a reason that names the install command
(`apt-get install …`), so a developer's laptop without it still runs the rest. In CI (`CI=true`)
`.ci/run` installs those packages, so such a skip means an install step is missing: it fails.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and "apt-get install" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"skipped for a missing install, which CI must not do: {report.longrepr}"
