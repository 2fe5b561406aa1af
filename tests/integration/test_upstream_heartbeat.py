"""Heartbeats and background retries: jittered back-off on transient failures only."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.upstream import HttpSettings, UpstreamRejected, UpstreamSection, UpstreamUnavailable, build_adapters
from bridge.central.heartbeat import beat_once, run_heartbeats
from bridge.upstream.retry import call_with_retry
from tests.support.fakes.frontelio import FakeFrontelio

pytest_plugins = ["tests.support.fakes.fixtures"]  # fake upstream servers, key file

SETTINGS = HttpSettings(retry_max_wait_s=8, retry_deadline_s=1000)


class RecordingSleep:
    """Stands in for asyncio.sleep so back-off is observed, not waited for."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            raise asyncio.CancelledError


def test_transient_failures_are_retried_with_capped_jittered_back_off() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 6:
            raise UpstreamUnavailable("frontelio", "HTTP 503", status=503)
        return "ok"

    sleep = RecordingSleep()
    assert asyncio.run(call_with_retry(SETTINGS, flaky, sleep=sleep)) == "ok"
    assert len(calls) == 6 and len(sleep.waits) == 5
    assert all(0 <= w <= 8 for w in sleep.waits)


def test_rejections_are_not_retried() -> None:
    calls: list[int] = []

    async def refused() -> None:
        calls.append(1)
        raise UpstreamRejected("frontelio", "401", hint="check the key", status=401)

    with pytest.raises(UpstreamRejected):
        asyncio.run(call_with_retry(SETTINGS, refused, sleep=RecordingSleep()))
    assert len(calls) == 1


def test_retries_stop_at_the_deadline() -> None:
    async def down() -> None:
        raise UpstreamUnavailable("sna", "ConnectError")

    settings = HttpSettings(retry_max_wait_s=1, retry_deadline_s=0.05)

    async def real_sleep(seconds: float) -> None:
        await asyncio.sleep(min(seconds, 0.02))

    with pytest.raises(UpstreamUnavailable):
        asyncio.run(call_with_retry(settings, down, sleep=real_sleep))


def frontelio(fake: FakeFrontelio, key_file: Path) -> Any:
    (adapter,) = build_adapters(
        UpstreamSection.model_validate({"frontelio": {"base_url": fake.server.url, "api_key_file": str(key_file)}})
    )
    return adapter


def test_heartbeat_survives_a_dropped_connection(fake_frontelio: FakeFrontelio, frontelio_key_file: Path) -> None:
    adapter = frontelio(fake_frontelio, frontelio_key_file)
    fake_frontelio.server.drop_connections()
    sleep = RecordingSleep()

    async def heal_then_sleep(seconds: float) -> None:
        await sleep(seconds)
        fake_frontelio.server.heal()

    async def run() -> Any:
        error = await beat_once(adapter, "BRIDGE-1", SETTINGS, sleep=heal_then_sleep)
        await adapter.aclose()
        return error

    assert asyncio.run(run()) is None
    assert len(fake_frontelio.server.requests) == 2 and len(sleep.waits) == 1
    assert [h["readerId"] for h in fake_frontelio.heartbeats] == ["BRIDGE-1"]


def test_heartbeat_loop_beats_every_interval_and_logs_refusal_once(
    fake_frontelio: FakeFrontelio, frontelio_key_file: Path
) -> None:
    adapter = frontelio(fake_frontelio, frontelio_key_file)
    fake_frontelio.plan_gated = True
    sleep = RecordingSleep(stop_after=3)

    async def run() -> None:
        try:
            await run_heartbeats([adapter], ["R1", "R2"], SETTINGS, sleep=sleep)
        finally:
            await adapter.aclose()

    with capture_logs() as logs, pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    assert sleep.waits == [300.0, 300.0, 300.0]
    assert len(fake_frontelio.server.requests) == 6, "two readers, three rounds, no retry of a 402"
    failures = [e for e in logs if e["event"] == "upstream_heartbeat_failed"]
    assert [(e["reader"], e["upstream"]) for e in failures] == [("R1", "frontelio"), ("R2", "frontelio")]
    assert "402" in failures[0]["error"]
