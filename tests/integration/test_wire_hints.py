"""Warning lines carry their full cause and the right `check=`; a change of cause is logged again."""

from __future__ import annotations

import socket

from structlog.testing import capture_logs

from bridge.inputs.base import Scan
from tests.support.fakes.digital_id import employee
from tests.support.fakes.fixtures import fake_digital_id, fake_frontelio, frontelio_key_file  # noqa: F401
from tests.support.harness import Site, door_records, make_config, running
from tests.support.builders import NOW
from tests.support.harness import RunningClock
from verifier.types import Source

READER = "BRIDGE-1"
CARD = "6B06C2A25E99C68EDCBE"
NETWORK_CHECK = "network/DNS"


def _cfg(tmp_path, upstream, mode="online-first"):
    site = Site()
    site.install(tmp_path, door_records(READER, NOW), now=NOW)
    return make_config(tmp_path, site, [], bridge={"id": READER, "mode": mode},
                       upstream={"http": {"verify_budget_s": 2.0, "breaker_failures": 100}, **upstream})


def _warnings(logs, event):
    return [e for e in logs if e["event"] == event and e["log_level"] == "warning"]


async def test_digital_id_401_hint_is_whole_and_its_check_is_the_key(tmp_path, fake_digital_id):
    fake_digital_id.api_key = "did_org_key_0123456789"  # the organisation requires a key; we have none
    fake_digital_id.tokens["tok_valid_123"] = ("valid", employee(1, "A B"))
    cfg = _cfg(tmp_path, {"digital_id": {"base_url": fake_digital_id.server.url}}, mode="local-first")
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            daemon.parts.reader_door[READER] = "main"
            await daemon.pipeline.handle(Scan(READER, Source.PHONE_QR, b"https://id.example/verify.php?token=tok_valid_123"))
    (lost,) = _warnings(logs, "upstream_lost")
    assert "organisation settings" in lost["error"], "the actionable end of the hint was cut"
    assert "REQUIRE_API_KEY_FOR_VERIFICATION" in lost["check"] and NETWORK_CHECK not in lost["check"]


async def test_dns_failure_shows_its_cause_at_warning_level(tmp_path, frontelio_key_file):
    host = "door-bridge-no-such-host.invalid"
    try:
        socket.getaddrinfo(host, 443)
    except socket.gaierror as e:
        cause = e.strerror
    else:  # pragma: no cover - a resolver that answers for .invalid
        raise AssertionError(f"{host} resolved: the test needs a name that does not")
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": f"https://{host}/api/v1", "api_key_file": str(frontelio_key_file)}})
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            daemon.parts.reader_door[READER] = "main"
            await daemon.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
    lost = _warnings(logs, "upstream_lost")
    assert lost and cause in lost[0]["error"], (cause, lost)
    assert NETWORK_CHECK in lost[0]["check"]


async def test_a_change_of_failure_cause_is_logged_again(tmp_path, fake_frontelio, frontelio_key_file):
    fake_frontelio.api_keys = {"mk_someone_else"}  # our key is refused: 401
    cfg = _cfg(tmp_path, {"frontelio": {"base_url": fake_frontelio.server.url, "api_key_file": str(frontelio_key_file)}})
    with capture_logs() as logs:
        async with running(cfg, clock=RunningClock(NOW)) as (daemon, _):
            daemon.parts.reader_door[READER] = "main"
            await daemon.pipeline.handle(Scan(READER, Source.CARD, CARD.encode()))
            await daemon.pipeline.handle(Scan(READER, Source.CARD, b"0A1B2C3D4E5F"))  # same cause: no new line
            fake_frontelio.server.fail_with(500)
            await daemon.pipeline.handle(Scan(READER, Source.CARD, b"04A22C1A7B3F80"))
    (lost,) = _warnings(logs, "upstream_lost")
    assert "401" in lost["error"] and "mk_ key" in lost["check"]
    (changed,) = _warnings(logs, "upstream_error_changed")
    assert "HTTP 500" in changed["error"] and "401" in changed["previous"]
    assert NETWORK_CHECK in changed["check"]
