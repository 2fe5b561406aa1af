"""The shared HTTP layer against a real loopback server: every failure becomes a typed error."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.upstream import CircuitBreaker, CircuitState, HttpSettings
from bridge.upstream.errors import (
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bridge.upstream.http import Answer, UpstreamHttp, build_client
from tests.support.fakes.server import FakeServer, Reply
from tests.support.fakes.tls import make_ca_and_server_context
from tests.support.harness import SetMonotonic


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    fake.routes[("POST", "/thing")] = lambda request: Reply(200, {"ok": True, "echo": request.json})
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def http_for(url: str, clock: SetMonotonic | None = None, **settings: Any) -> UpstreamHttp:
    config = HttpSettings.model_validate(settings)
    breaker = CircuitBreaker("test", config.breaker_failures, config.breaker_cooldown_s, clock=clock or SetMonotonic(1000.0))
    return UpstreamHttp("test", build_client(url, config), breaker, config.max_body_bytes)


def post(http: UpstreamHttp, budget_s: float | None = None, times: int = 1) -> list[Answer | Exception]:
    """POST /thing `times` times; each outcome, answer or error, in order."""

    async def run() -> list[Answer | Exception]:
        outcomes: list[Answer | Exception] = []
        for _ in range(times):
            try:
                outcomes.append(await http.request("POST", "/thing", json_body={"n": 1}, budget_s=budget_s))
            except (UpstreamUnavailable, UpstreamProtocolError, UpstreamRejected) as e:
                outcomes.append(e)
        await http.aclose()
        return outcomes

    return asyncio.run(run())


def test_answer_is_decoded_json(server: FakeServer) -> None:
    (answer,) = post(http_for(server.url))
    assert isinstance(answer, Answer)
    assert answer.status == 200 and answer.body == {"ok": True, "echo": {"n": 1}}


def test_server_down_is_unavailable(server: FakeServer) -> None:
    server.go_down()
    (outcome,) = post(http_for(server.url))
    assert isinstance(outcome, UpstreamUnavailable)
    assert "ConnectError" in str(outcome)


def test_slow_server_is_cut_off_by_the_budget(server: FakeServer) -> None:
    server.slow(5.0)
    (outcome,) = post(http_for(server.url, read_timeout_s=30), budget_s=0.2)
    assert isinstance(outcome, UpstreamUnavailable)
    assert "0.2 s budget" in str(outcome)
    assert len(server.requests) == 1, "the request reached the server before the budget ran out"


def test_slow_server_is_cut_off_by_the_read_timeout(server: FakeServer) -> None:
    server.slow(5.0)
    (outcome,) = post(http_for(server.url, read_timeout_s=0.2))
    assert isinstance(outcome, UpstreamUnavailable)
    assert "timed out" in str(outcome)


def test_dropped_connection_is_unavailable(server: FakeServer) -> None:
    server.drop_connections()
    (outcome,) = post(http_for(server.url))
    assert isinstance(outcome, UpstreamUnavailable)
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_server_errors_and_throttling_are_unavailable(server: FakeServer, status: int) -> None:
    server.fail_with(status)
    (outcome,) = post(http_for(server.url))
    assert isinstance(outcome, UpstreamUnavailable) and outcome.status == status


def test_malformed_json_is_a_protocol_error(server: FakeServer) -> None:
    server.respond_raw(b'{"decision": "GRANT", ')
    (outcome,) = post(http_for(server.url))
    assert isinstance(outcome, UpstreamProtocolError)
    assert "not JSON" in str(outcome)


def test_non_json_error_page_is_passed_on_as_status_only(server: FakeServer) -> None:
    server.respond_raw(b"<html>Forbidden</html>", status=403, content_type="text/html")
    (outcome,) = post(http_for(server.url))
    assert isinstance(outcome, Answer) and outcome.status == 403 and outcome.body is None


@pytest.mark.parametrize("omit_length", [False, True], ids=["declared-length", "streamed"])
def test_body_over_the_cap_is_a_protocol_error(server: FakeServer, omit_length: bool) -> None:
    server.respond_raw(b'{"pad": "' + b"x" * 200_000 + b'"}', omit_length=omit_length)
    (outcome,) = post(http_for(server.url, max_body_bytes=64 * 1024))
    assert isinstance(outcome, UpstreamProtocolError)
    assert "over 65536 bytes" in str(outcome)


def test_a_5xx_storm_opens_the_circuit_then_half_opens_and_closes(server: FakeServer) -> None:
    clock = SetMonotonic(1000.0)
    http = http_for(server.url, clock, breaker_failures=3, breaker_cooldown_s=30)
    server.fail_with(503)

    async def scenario() -> list[Any]:
        seen: list[Any] = []

        async def once() -> Any:
            try:
                return await http.request("POST", "/thing", json_body={})
            except UpstreamUnavailable as e:
                return e

        for _ in range(4):
            seen.append((await once(), len(server.requests), http.breaker.state))
        clock.now += 29.9
        seen.append((await once(), len(server.requests), http.breaker.state))
        clock.now += 0.1
        seen.append(http.breaker.state)
        seen.append((await once(), len(server.requests), http.breaker.state))  # probe fails: open again
        clock.now += 30
        server.heal()
        seen.append((await once(), len(server.requests), http.breaker.state))  # probe succeeds: closed
        await http.aclose()
        return seen

    storm = asyncio.run(scenario())
    assert [s[1:] for s in storm[:3]] == [(1, CircuitState.CLOSED), (2, CircuitState.CLOSED), (3, CircuitState.OPEN)]
    refused, requests, state = storm[3]
    assert isinstance(refused, UpstreamUnavailable) and "circuit open" in str(refused)
    assert (requests, state) == (3, CircuitState.OPEN), "an open circuit does not call the server"
    assert storm[4][1:] == (3, CircuitState.OPEN), "still open before the cool-down ends"
    assert storm[5] is CircuitState.HALF_OPEN
    assert storm[6][1:] == (4, CircuitState.OPEN)
    probe, requests, state = storm[7]
    assert isinstance(probe, Answer) and probe.status == 200
    assert (requests, state) == (5, CircuitState.CLOSED)


def test_budget_timeout_counts_towards_the_circuit(server: FakeServer) -> None:
    server.slow(5.0)
    http = http_for(server.url, breaker_failures=2)
    outcomes = post(http, budget_s=0.1, times=3)
    assert all(isinstance(o, UpstreamUnavailable) for o in outcomes)
    assert "circuit open" in str(outcomes[2])
    assert len(server.requests) == 2


def test_untrusted_certificate_is_rejected_with_the_ca_bundle_hint(tmp_path: Path) -> None:
    ca_bundle, context = make_ca_and_server_context(tmp_path)
    fake = FakeServer(tls=context)
    fake.routes[("POST", "/thing")] = lambda request: Reply(200, {"ok": True})
    fake.start()
    try:
        (untrusted,) = post(http_for(fake.url))
        (trusted,) = post(http_for(fake.url, ca_bundle=str(ca_bundle)))
    finally:
        fake.stop()
    assert isinstance(untrusted, UpstreamRejected) and "ca_bundle" in str(untrusted)
    assert isinstance(trusted, Answer) and trusted.body == {"ok": True}


def test_upstream_coming_back_is_reached_again(server: FakeServer) -> None:
    server.go_down()
    http = http_for(server.url, breaker_failures=5)

    async def scenario() -> tuple[Any, Any]:
        try:
            await http.request("POST", "/thing", json_body={})
        except UpstreamUnavailable as e:
            down: Any = e
        server.come_up()
        back = await http.request("POST", "/thing", json_body={})
        await http.aclose()
        return down, back

    down, back = asyncio.run(scenario())
    assert isinstance(down, UpstreamUnavailable)
    assert isinstance(back, Answer) and back.status == 200
