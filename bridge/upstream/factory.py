"""Build the configured adapters, each with its own client and circuit breaker."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from bridge.upstream.adapter import UpstreamAdapter
from bridge.config.secret_files import FRONTELIO_PREFIX, ApiKey, load_api_key
from bridge.upstream.breaker import CircuitBreaker
from bridge.config.upstream import HttpSettings, UpstreamSection
from bridge.upstream.digital_id import DigitalIdAdapter
from bridge.upstream.frontelio import FrontelioAdapter
from bridge.upstream.http import UpstreamHttp, build_client
from bridge.upstream.sna import SnaAdapter


def build_adapters(
    section: UpstreamSection,
    *,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    credentials_dir: str | None = None,
) -> list[UpstreamAdapter]:
    """Adapters in a fixed order (Frontelio, SNA, Digital ID); the daemon asks the first that
    `accepts` a credential. Raises `ApiKeyError` for a key the operator must fix. `clock` drives
    the circuit breakers, `now` the SNA date windows; both are injectable for tests."""
    settings = section.http
    # The adapter's own bound: the scan waits `verify_budget_s`, the request may finish later.
    bound_s = settings.verify_budget_s + settings.late_answer_s
    frontelio_key: ApiKey | None = None
    digital_id_key: ApiKey | None = None
    # Keys first: a bad key fails start-up before any client exists.
    if section.frontelio:
        frontelio_key = load_api_key(
            key_file=section.frontelio.api_key_file,
            credential=section.frontelio.api_key_credential,
            prefix=FRONTELIO_PREFIX,
            credentials_dir=credentials_dir,
        )
    if section.digital_id and (section.digital_id.api_key_file or section.digital_id.api_key_credential):
        digital_id_key = load_api_key(
            key_file=section.digital_id.api_key_file,
            credential=section.digital_id.api_key_credential,
            credentials_dir=credentials_dir,
        )

    adapters: list[UpstreamAdapter] = []
    if section.frontelio and frontelio_key:
        http = _http("frontelio", section.frontelio.base_url, settings, clock)
        adapters.append(FrontelioAdapter(http, frontelio_key, bound_s))
    if section.sna:
        sna_key = None
        if section.sna.api_key_file or section.sna.api_key_credential:
            sna_key = load_api_key(key_file=section.sna.api_key_file, credential=section.sna.api_key_credential,
                                   credentials_dir=credentials_dir)
        http = _http("sna", section.sna.base_url, settings, clock)
        adapters.append(SnaAdapter(http, section.sna, bound_s, now=now, api_key=sna_key))
    if section.digital_id:
        http = _http("digital_id", section.digital_id.base_url, settings, clock)
        adapters.append(DigitalIdAdapter(http, section.digital_id, digital_id_key, bound_s))
    return adapters


def _http(name: str, base_url: str, settings: HttpSettings, clock: Callable[[], float]) -> UpstreamHttp:
    breaker = CircuitBreaker(name, settings.breaker_failures, settings.breaker_cooldown_s, clock=clock)
    return UpstreamHttp(name, build_client(base_url, settings), breaker, settings.max_body_bytes, settings.request_deadline_s)
