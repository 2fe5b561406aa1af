"""Pytest fixtures for the fake upstreams: import them into a conftest or a test module.

Each fixture starts a real loopback server on a random port and stops it after the test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.fakes.central import API_KEY as CENTRAL_API_KEY
from tests.fakes.central import FakeCentral
from tests.fakes.digital_id import FakeDigitalId
from tests.fakes.frontelio import API_KEY, FakeFrontelio
from tests.fakes.sna import FakeSna


@pytest.fixture
def fake_frontelio() -> Iterator[FakeFrontelio]:
    fake = FakeFrontelio()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def fake_sna() -> Iterator[FakeSna]:
    fake = FakeSna()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def fake_digital_id() -> Iterator[FakeDigitalId]:
    fake = FakeDigitalId()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def frontelio_key_file(tmp_path: Path) -> Path:
    """The fake's accepted `mk_` key in a mode-0600 file, with a trailing newline like `echo` leaves."""
    path = tmp_path / "frontelio.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(API_KEY + "\n")
    return path


@pytest.fixture
def fake_central() -> Iterator[FakeCentral]:
    fake = FakeCentral()
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()


@pytest.fixture
def central_key_file(tmp_path: Path) -> Path:
    """The fake central's accepted bridge key in a mode-0600 file."""
    path = tmp_path / "central.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(CENTRAL_API_KEY + "\n")
    return path
