"""`[upstream]` config validation and `build_adapters`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.upstream import ApiKeyError, UpstreamSection, build_adapters
from bridge.upstream.digital_id import DigitalIdAdapter
from bridge.upstream.frontelio import FrontelioAdapter
from bridge.upstream.sna import SnaAdapter
from tests.support.fakes.frontelio import API_KEY

pytest_plugins = ["tests.support.fakes.fixtures"]  # fake upstream servers, key file


def section(data: dict[str, Any]) -> UpstreamSection:
    return UpstreamSection.model_validate(data)


def test_defaults_have_no_upstream_and_the_documented_budgets() -> None:
    empty = section({})
    assert (empty.frontelio, empty.sna, empty.digital_id) == (None, None, None)
    assert empty.http.verify_budget_s == 0.4
    assert empty.http.heartbeat_interval_s == 300
    assert build_adapters(empty) == []


@pytest.mark.parametrize(
    "data, problem",
    [
        ({"frontelio": {}}, "api_key_file or api_key_credential"),
        ({"frontelio": {"api_key": "mk_x"}}, "Extra inputs are not permitted"),
        ({"frontelio": {"api_key_file": "/k", "api_key_credential": "k"}}, "not both"),
        ({"frontelio": {"api_key_file": "/k", "base_url": "http://api.frontelio.com/api/v1"}}, "plain http"),
        ({"frontelio": {"api_key_file": "/k", "base_url": "ftp://x"}}, "http(s) URL"),
        ({"frontelio": {"api_key_file": "/k", "base_url": "https://x/api?token=1"}}, "query"),
        ({"sna": {}}, "device_sn, device_id or mac"),
        ({"sna": {"device_sn": "S", "mac": "not-a-mac"}}, "mac"),
        ({"sna": {"device_sn": "S", "environment": "has space"}}, "environment"),
        ({"digital_id": {"method": "PUT"}}, "method"),
        ({"http": {"verify_budget_s": 0}}, "verify_budget_s"),
        ({"http": {"connect_timeout_s": "3"}}, "connect_timeout_s"),
        ({"http": {"max_body_bytes": 10}}, "max_body_bytes"),
    ],
)
def test_config_mistakes_are_named(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        section(data)
    assert problem in str(caught.value)


def test_plain_http_is_allowed_to_loopback_or_when_asked() -> None:
    assert section({"sna": {"device_sn": "S", "base_url": "http://127.0.0.1:8080"}}).sna is not None
    assert section({"sna": {"device_sn": "S", "base_url": "http://localhost:8080/"}}).sna.base_url == "http://localhost:8080"  # type: ignore[union-attr]
    lan = section({"sna": {"device_sn": "S", "base_url": "http://10.0.0.5", "allow_http": True}})
    assert lan.sna is not None and lan.sna.allow_http


def test_build_adapters_in_fixed_order_with_the_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "frontelio-key").write_text(API_KEY)
    adapters = build_adapters(
        section({
            "digital_id": {},
            "sna": {"device_id": "door-7"},
            "frontelio": {"api_key_credential": "frontelio-key"},
        }),
        credentials_dir=str(tmp_path),
    )
    assert [type(a) for a in adapters] == [FrontelioAdapter, SnaAdapter, DigitalIdAdapter]
    assert [a.name for a in adapters] == ["frontelio", "sna", "digital_id"]

    async def close() -> None:
        for adapter in adapters:
            await adapter.aclose()

    asyncio.run(close())


def test_a_world_readable_key_file_stops_the_build(frontelio_key_file: Path) -> None:
    frontelio_key_file.chmod(0o644)
    with pytest.raises(ApiKeyError, match="chmod 600"):
        build_adapters(section({"frontelio": {"api_key_file": str(frontelio_key_file)}}))


def test_a_key_without_the_mk_prefix_stops_the_build(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("sk_live_123")
    key_file.chmod(0o600)
    with pytest.raises(ApiKeyError, match="mk_"):
        build_adapters(section({"frontelio": {"api_key_file": str(key_file)}}))
