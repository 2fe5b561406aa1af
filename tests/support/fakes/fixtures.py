"""Pytest fixtures for the fake upstreams: import them into a conftest or a test module.

Each fixture starts a real loopback server on a random port and stops it after the test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, TypeVar

import pytest

from tests.support.fakes.central import API_KEY as CENTRAL_API_KEY
from tests.support.fakes.central import FakeCentral
from tests.support.fakes.digital_id import FakeDigitalId
from tests.support.fakes.frontelio import API_KEY, FakeFrontelio
from tests.support.fakes.sna import FakeSna


T = TypeVar("T")


def _serving(fake: T) -> Iterator[T]:
    """Start the fake's loopback server for one test, stop it after."""
    fake.server.start()  # type: ignore[attr-defined]
    try:
        yield fake
    finally:
        fake.server.stop()  # type: ignore[attr-defined]


def key_file(path: Path, key: str) -> Path:
    """A key in a mode-0600 file, with a trailing newline like `echo` leaves."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return path


@pytest.fixture
def fake_frontelio() -> Iterator[FakeFrontelio]:
    yield from _serving(FakeFrontelio())


@pytest.fixture
def fake_sna() -> Iterator[FakeSna]:
    yield from _serving(FakeSna())


@pytest.fixture
def fake_digital_id() -> Iterator[FakeDigitalId]:
    yield from _serving(FakeDigitalId())


@pytest.fixture
def frontelio_key_file(tmp_path: Path) -> Path:
    """The fake's accepted `mk_` key in a mode-0600 file, with a trailing newline like `echo` leaves."""
    return key_file(tmp_path / "frontelio.key", API_KEY)


@pytest.fixture
def fake_central() -> Iterator[FakeCentral]:
    yield from _serving(FakeCentral())


@pytest.fixture
def central_key_file(tmp_path: Path) -> Path:
    """The fake central's accepted bridge key in a mode-0600 file."""
    return key_file(tmp_path / "central.key", CENTRAL_API_KEY)
