"""One httpx client per upstream, and the single place HTTP failures become upstream errors.

Every adapter goes through `UpstreamHttp.request`, so timeouts, the circuit breaker, the
response size cap and the mapping of transport failures are the same for all of them.
Error messages carry the upstream name and the request path, never a full URL (a Digital ID
GET carries the token in its query string) and never a header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from dataclasses import dataclass
from typing import Any, Mapping

import httpx
import structlog

from bridge import __version__
from bridge.upstream.breaker import CircuitBreaker
from bridge.config.upstream import HttpSettings
from bridge.upstream.errors import UpstreamProtocolError, UpstreamRejected, UpstreamUnavailable

log = structlog.get_logger()

USER_AGENT = f"door-bridge/{__version__}"

# httpx logs each request URL at INFO through stdlib logging; a GET URL can carry a token.
logging.getLogger("httpx").setLevel(logging.WARNING)


def build_client(base_url: str, settings: HttpSettings, headers: Mapping[str, str] | None = None) -> httpx.AsyncClient:
    """A client with every timeout explicit, TLS verified, no redirects and no environment proxies."""
    verify: ssl.SSLContext | bool = True
    if settings.ca_bundle is not None:
        verify = ssl.create_default_context(cafile=str(settings.ca_bundle))
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.write_timeout_s,
            pool=settings.pool_timeout_s,
        ),
        limits=httpx.Limits(max_connections=8, max_keepalive_connections=4, keepalive_expiry=30.0),
        verify=verify,
        proxy=settings.proxy,
        trust_env=False,
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A response that reached us intact: status and the decoded JSON (None if no/non-JSON body)."""

    status: int
    body: Any
    json_ok: bool


class UpstreamHttp:
    """An upstream's client, breaker and body cap. Status 5xx and 429 are already turned into
    `UpstreamUnavailable`; the adapter interprets every other status."""

    def __init__(self, upstream: str, client: httpx.AsyncClient, breaker: CircuitBreaker, max_body_bytes: int,
                 deadline_s: float = 60.0) -> None:
        self.upstream = upstream
        self.client = client
        self.breaker = breaker
        self.max_body_bytes = max_body_bytes
        self.deadline_s = deadline_s

    @property
    def base_url(self) -> httpx.URL:
        return self.client.base_url

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        budget_s: float | None = None,
    ) -> Answer:
        """One attempt. `budget_s` bounds the whole exchange (connect, send, read) on the scan path;
        without one, the background deadline does (never unbounded)."""
        budget_s = self.deadline_s if budget_s is None else budget_s
        self.breaker.before_call()
        try:
            async with asyncio.timeout(budget_s):
                status, content = await self._exchange(method, path, json_body, params, headers)
        except UpstreamUnavailable:
            self.breaker.record_failure()
            raise
        except TimeoutError:
            self.breaker.record_failure()
            raise UpstreamUnavailable(self.upstream, f"{method} {path}: no answer within the {budget_s} s budget") from None
        except httpx.TransportError as e:
            self.breaker.record_failure()
            raise self._transport_error(method, path, e) from None
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return self._decode(method, path, status, content)

    async def _exchange(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, bytes]:
        async with self.client.stream(method, path, json=json_body, params=params, headers=headers) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise UpstreamUnavailable(
                    self.upstream, f"{method} {path}: HTTP {response.status_code}", status=response.status_code
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_big(method, path)
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > self.max_body_bytes:
                    raise self._too_big(method, path)
            return response.status_code, bytes(content)

    def _too_big(self, method: str, path: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(self.upstream, f"{method} {path}: response body over {self.max_body_bytes} bytes")

    def _decode(self, method: str, path: str, status: int, content: bytes) -> Answer:
        if not content.strip():
            return Answer(status, None, json_ok=False)
        try:
            return Answer(status, json.loads(content), json_ok=True)
        except (ValueError, RecursionError):
            if 200 <= status < 300:
                raise UpstreamProtocolError(self.upstream, f"{method} {path}: HTTP {status} body is not JSON") from None
            return Answer(status, None, json_ok=False)

    def _transport_error(self, method: str, path: str, error: httpx.TransportError) -> Exception:
        if _is_certificate_error(error):
            return UpstreamRejected(
                self.upstream,
                f"{method} {path}: TLS certificate not trusted",
                hint="check base_url's host name, the system clock, and upstream.http.ca_bundle",
            )
        kind = "timed out" if isinstance(error, httpx.TimeoutException) else type(error).__name__
        # The cause a technician acts on ("Temporary failure in name resolution", "Connection
        # refused") is the innermost error's text; httpx's own text never carries the URL.
        cause = _innermost_text(error)
        return UpstreamUnavailable(self.upstream, f"{method} {path}: {kind}" + (f" ({cause})" if cause else ""))

    async def aclose(self) -> None:
        await self.client.aclose()


def _innermost_text(error: BaseException) -> str:
    """The deepest non-empty message in the cause chain (socket.gaierror's, ConnectionRefusedError's)."""
    seen: set[int] = set()
    text = ""
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        message = current.strerror if isinstance(current, OSError) and current.strerror else str(current)
        if message:
            text = message
        current = current.__cause__ or current.__context__
    return " ".join(text.split())[:300]


def _is_certificate_error(error: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
