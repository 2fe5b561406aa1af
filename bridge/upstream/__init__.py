"""Upstream HTTP clients: Frontelio `/access`, Stayforge SNA and Digital ID.

The daemon uses `build_adapters(config.upstream)`, then per scan the first adapter that
`accepts(credential, source)`, and `bridge.central.heartbeat.run_heartbeats` in the background. Failures arrive as the
`UpstreamError` subclasses below and never carry a secret.
"""

from bridge.upstream.adapter import UpstreamAdapter
from bridge.config.secret_files import ApiKey, ApiKeyError, load_api_key
from bridge.upstream.breaker import CircuitBreaker, CircuitState
from bridge.config.upstream import DigitalIdSection, FrontelioSection, HttpSettings, SnaSection, UpstreamSection
from bridge.upstream.errors import (
    UpstreamError,
    UpstreamNotApplicable,
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from bridge.upstream.factory import build_adapters
from bridge.upstream.retry import background_retrying, call_with_retry

__all__ = [
    "ApiKey",
    "ApiKeyError",
    "CircuitBreaker",
    "CircuitState",
    "DigitalIdSection",
    "FrontelioSection",
    "HttpSettings",
    "SnaSection",
    "UpstreamAdapter",
    "UpstreamError",
    "UpstreamNotApplicable",
    "UpstreamProtocolError",
    "UpstreamRejected",
    "UpstreamSection",
    "UpstreamUnavailable",
    "background_retrying",
    "build_adapters",
    "call_with_retry",
    "load_api_key",
]
