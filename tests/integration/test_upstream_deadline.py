"""A central that trickles bytes: httpx's read timeout restarts at every byte, so without an overall
deadline a background request (heartbeat, event batch, bundle download) would hang forever.

The central is a real loopback TCP server that sends its status line and headers, then one body
byte every 0.1 s, never finishing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.upstream.breaker import CircuitBreaker
from bridge.upstream.central import CentralHttp
from bridge.config.upstream import HttpSettings
from bridge.upstream.errors import UpstreamUnavailable
from bridge.upstream.http import UpstreamHttp, build_client


@pytest.fixture
async def trickling() -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-door-bridge-bundle\r\nContent-Length: 100000\r\n\r\n")
            while True:
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


def _settings() -> HttpSettings:
    return HttpSettings(read_timeout_s=1.0, request_deadline_s=1.5, download_deadline_s=1.5)


async def test_a_trickled_background_request_ends_at_its_deadline(trickling: str) -> None:
    s = _settings()
    http = UpstreamHttp("central", build_client(trickling, s), CircuitBreaker("central", 5, 30), s.max_body_bytes,
                        s.request_deadline_s)
    try:
        with pytest.raises(UpstreamUnavailable, match="1.5 s"):
            await asyncio.wait_for(http.request("POST", "/events", json_body={}), timeout=20)
    finally:
        await http.aclose()


async def test_a_trickled_bundle_download_ends_at_its_deadline(trickling: str, tmp_path: Path) -> None:
    s = _settings()
    http = CentralHttp("central", build_client(trickling, s), CircuitBreaker("central", 5, 30), s.max_body_bytes,
                       s.request_deadline_s, download_deadline_s=s.download_deadline_s)
    try:
        with pytest.raises(UpstreamUnavailable, match="download deadline"):
            await asyncio.wait_for(http.download("/bundle", params={}, headers={}, dest=tmp_path / "b", max_bytes=10**6),
                                   timeout=20)
    finally:
        await http.aclose()
