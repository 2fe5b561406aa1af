"""Config models for `[upstream]`: shared HTTP settings plus one optional table per upstream.

API keys are never config text: a table names a key file (`api_key_file`, mode 0600) or a systemd
credential (`api_key_credential`, from `LoadCredential=`), so the config file can be world-readable
and pasted into a support ticket.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from bridge.config.base import FilePath, Seconds, StrictModel

CredentialName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_.@-]+$")]
_LOOPBACK_NAMES = frozenset({"localhost"})


class HttpSettings(StrictModel):
    connect_timeout_s: Seconds = 3.0
    read_timeout_s: Seconds = 5.0
    write_timeout_s: Seconds = 5.0
    pool_timeout_s: Seconds = 1.0
    # The whole online decision on the scan path (one attempt, no retry); then the cache decides.
    verify_budget_s: Annotated[float, Field(gt=0, le=10)] = 0.4
    # After the budget the cache decides, but the request may run this much longer: a late DENY
    # is recorded and held against the credential for a while (docs/upstreams.md). 0: cancel at
    # the budget.
    late_answer_s: Annotated[float, Field(ge=0, le=30)] = 5.0
    # PEM bundle of CAs to trust instead of the system store (a site CA, a TLS-inspecting proxy).
    ca_bundle: FilePath | None = None
    # Explicit proxy URL; environment proxies are ignored so a stray HTTPS_PROXY cannot reroute doors.
    proxy: str | None = None
    # Largest response body read; anything bigger is a protocol error, not a memory spike.
    max_body_bytes: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 5
    breaker_cooldown_s: Seconds = 30.0
    # At least 10 s: a fleet of doors must not hammer the central (Frontelio's cadence is 5 min).
    heartbeat_interval_s: Annotated[float, Field(ge=10)] = 300.0
    # Background work (heartbeat, sync, replication): jittered exponential back-off up to this cap.
    retry_max_wait_s: Seconds = 60.0
    retry_deadline_s: Seconds = 240.0
    # One background exchange (heartbeat, event batch) as a whole: httpx's read timeout starts
    # again at every byte, so a central that trickles bytes would otherwise hold it forever.
    request_deadline_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # One bundle download as a whole (a 1M-grant bundle is ~100 MB: minutes on a slow uplink).
    download_deadline_s: Annotated[float, Field(gt=0, le=86400)] = 900.0


class _UpstreamBase(StrictModel):
    base_url: str
    # Plain http:// is refused except to loopback unless this is set (a LAN-only test upstream).
    allow_http: bool = False

    @field_validator("base_url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. https://api.example.com/api/v1")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _https_unless_loopback(self) -> "_UpstreamBase":
        parts = urlsplit(self.base_url)
        if parts.scheme == "http" and not self.allow_http and not _is_loopback(parts.hostname or ""):
            raise ValueError("base_url: plain http:// is only allowed to loopback; use https:// or set allow_http")
        return self


class _KeyedUpstream(_UpstreamBase):
    api_key_file: FilePath | None = None
    api_key_credential: CredentialName | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> "_KeyedUpstream":
        if self.api_key_file and self.api_key_credential:
            raise ValueError("set api_key_file or api_key_credential, not both")
        return self


class FrontelioSection(_KeyedUpstream):
    base_url: str = "https://api.frontelio.com/api/v1"

    @model_validator(mode="after")
    def _key_required(self) -> "FrontelioSection":
        if not (self.api_key_file or self.api_key_credential):
            raise ValueError("needs api_key_file or api_key_credential (the tenant's mk_ key)")
        return self


FieldPath = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")]
CommandValue = Annotated[str, Field(min_length=1, max_length=64)] | bool | int


class SnaIdentify(StrictModel):
    """The identify request and answer, as a technician adapts them to the real endpoint without a
    code change (docs/upstreams.md). Defaults: the assumption documented there."""

    method: Literal["GET", "POST"] = "POST"  # GET: the fields go as query parameters
    number_field: FieldPath = "number"
    device_sn_field: FieldPath = "device_sn"
    device_id_field: FieldPath = "device_id"
    mac_field: FieldPath = "mac"
    # Where the answer's command is (a dotted path into the JSON answer) and what it says.
    command_field: FieldPath = "command"
    unlock_values: list[CommandValue] = Field(default_factory=lambda: ["unlock"], min_length=1)
    deny_values: list[CommandValue] = Field(default_factory=lambda: ["deny"], min_length=1)
    # The card object ({name, start_at, end_at}); "" when the answer has none.
    card_field: Annotated[str, Field(max_length=128, pattern=r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$")] = "card"
    # Optional authentication header, its value `auth_scheme key` (or the key alone), the key
    # from upstream.sna.api_key_file / api_key_credential.
    auth_header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    auth_scheme: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")] = ""

    @model_validator(mode="after")
    def _disjoint(self) -> "SnaIdentify":
        if {str(v) for v in self.unlock_values} & {str(v) for v in self.deny_values}:
            raise ValueError("unlock_values and deny_values share a value")
        return self


class SnaSection(_UpstreamBase):
    base_url: str = "https://identify.access.networks.stayforge.io"
    # The seed names no identify path; see docs/upstreams.md for the assumption behind this default.
    identify_path: str = Field("/card/identify", pattern=r"^/[^?#]*$")
    environment: str = Field("standard", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    # How this terminal identifies itself: at least one of SN, device id, MAC.
    device_sn: str | None = Field(None, min_length=1, max_length=128)
    device_id: str | None = Field(None, min_length=1, max_length=128)
    mac: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
    identify: SnaIdentify = SnaIdentify()
    # Only with identify.auth_header: the documented terminal endpoint takes no authentication.
    api_key_file: FilePath | None = None
    api_key_credential: CredentialName | None = None

    @model_validator(mode="after")
    def _identity_required(self) -> "SnaSection":
        if not (self.device_sn or self.device_id or self.mac):
            raise ValueError("needs device_sn, device_id or mac (how SNA knows this terminal)")
        keyed = self.api_key_file is not None or self.api_key_credential is not None
        if self.api_key_file is not None and self.api_key_credential is not None:
            raise ValueError("set api_key_file or api_key_credential, not both")
        if keyed != (self.identify.auth_header is not None):
            raise ValueError("identify.auth_header and api_key_file / api_key_credential go together")
        return self


class DigitalIdSection(_KeyedUpstream):
    """The API key is optional here: the seed makes it an opt-in on the Digital ID side."""

    base_url: str = "https://lightslategrey-weasel-963972.hostingersite.com"
    path: str = Field("/api/verify-token.php", pattern=r"^/[^?#]*$")
    # POST keeps the token out of URLs (and so out of proxy and web-server access logs).
    method: Literal["GET", "POST"] = "POST"
    location: str | None = Field(None, min_length=1, max_length=128)
    # Defaults to the reader id of the scan.
    device_id: str | None = Field(None, min_length=1, max_length=128)


class CentralSection(_KeyedUpstream):
    """The bridge protocol (docs/bridge-protocol.md): signed bundle sync and audit event ingest."""

    # e.g. https://central.example.com/api/bridge/v1; the bridge appends /bridges/{bridge_id}/…
    base_url: str
    # How the central knows this bridge; defaults to `bridge.id`.
    bridge_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    poll_interval_s: Annotated[float, Field(ge=1, le=86_400)] = 60.0
    # Each wait is poll_interval_s × (1 ± poll_jitter), so a fleet does not poll in lock-step.
    poll_jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.2
    # Largest bundle written to the state dir; a bigger body is refused before it fills the SD card.
    max_bundle_bytes: Annotated[int, Field(ge=64 * 1024, le=8 * 1024**3)] = 1024**3
    # "process": apply in a child process (decisions keep their latency; see docs/bridge-protocol.md);
    # "thread": in a thread of the daemon (less memory on a 512 MB Pi, decisions slow during an apply).
    apply_in: Literal["process", "thread"] = "process"
    # Events per POST; the protocol caps a batch at 1000.
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 500
    # How often an empty outbox is looked at again.
    replicate_idle_s: Annotated[float, Field(gt=0, le=60)] = 1.0

    @model_validator(mode="after")
    def _key_required(self) -> "CentralSection":
        if not (self.api_key_file or self.api_key_credential):
            raise ValueError("needs api_key_file or api_key_credential (the bridge's API key)")
        return self


class UpstreamSection(StrictModel):
    http: HttpSettings = HttpSettings()
    frontelio: FrontelioSection | None = None
    sna: SnaSection | None = None
    digital_id: DigitalIdSection | None = None
    central: CentralSection | None = None


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
