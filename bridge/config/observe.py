"""Settings of the outward tools: Prometheus metrics and MQTT publishing (docs/operations.md).

A leaf module (pydantic only), like the reader configs, so `bridge.config` imports no network
library. Both tools are read-only views of the door: neither can change what a door does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from bridge.config.base import FilePath, Seconds, StrictModel

# The port registered for door-bridge would be a guess; 9464 is unused by the common exporters
# (node_exporter 9100) and sits in Prometheus's "exporter" range.
DEFAULT_METRICS_PORT = 9464


class MetricsSection(StrictModel):
    # HTTP exposition for Prometheus. Loopback unless the site says otherwise: the figures tell an
    # outsider when a door is busy, alarmed or offline.
    http: bool = False
    address: str = Field("127.0.0.1", min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_METRICS_PORT
    # node_exporter's textfile collector (`--collector.textfile.directory`): the file is written
    # whole and renamed into place every `textfile_interval_s`, so a scrape never sees half of it.
    textfile: FilePath | None = None
    textfile_interval_s: Seconds = 15.0

    @model_validator(mode="after")
    def _textfile_name(self) -> "MetricsSection":
        if self.textfile is not None and not str(self.textfile).endswith(".prom"):
            raise ValueError("textfile: node_exporter reads only files ending in .prom")
        return self

    @property
    def enabled(self) -> bool:
        return self.http or self.textfile is not None


class MqttSection(StrictModel):
    enabled: bool = False
    host: str = Field("127.0.0.1", min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # 1883, or 8883 with TLS
    client_id: str | None = Field(None, min_length=1, max_length=128)  # default door-bridge-<bridge id>
    topic_prefix: str = Field("door-bridge", min_length=1, pattern=r"^[^#+\x00]+$")
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    # Credentials like every other secret: a file only the service can read, or a systemd credential.
    username: str | None = Field(None, min_length=1)
    password_file: FilePath | None = None
    password_credential: str | None = Field(None, min_length=1)
    # TLS: on with a CA file (the broker's CA), optionally a client certificate.
    tls: bool = False
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    # Home Assistant MQTT discovery for each door's position and alarm sensors.
    homeassistant: bool = True
    discovery_prefix: str = Field("homeassistant", min_length=1, pattern=r"^[^#+\x00]+$")
    # Decision summaries carry reader, door, decision, reason and source. User and zone ids only
    # if the site turns this on (names and credentials never).
    publish_identities: bool = False
    # Decision summaries are a monitoring feed (the audit trail goes to the central through the
    # outbox): at QoS 0 by default, a broker drop can lose the few in the socket at that moment.
    # At QoS 1 the publisher process also reads a PUBACK for each: 77-87 against 32-37 us of its
    # CPU a message (bench/README.md). Door states, alarms and events are always QoS 1.
    decision_qos: Annotated[int, Field(ge=0, le=1, strict=True)] = 0
    # Messages waiting for the broker; beyond this they are dropped and counted, so a dead broker
    # costs memory bounded by this and never a decision's time.
    queue_size: Annotated[int, Field(ge=10, le=100_000)] = 1000
    # Door states are not retained: they are re-sent on every connection and this often.
    state_interval_s: Seconds = 60.0
    reconnect_min_s: Seconds = 1.0
    reconnect_max_s: Seconds = 60.0

    @model_validator(mode="after")
    def _coherent(self) -> "MqttSection":
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("set password_file or password_credential, not both")
        if (self.password_file is not None or self.password_credential is not None) and self.username is None:
            raise ValueError("a password needs a username")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if (self.ca_file is not None or self.cert_file is not None) and not self.tls:
            raise ValueError("ca_file/cert_file given but tls = false")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is larger than reconnect_max_s")
        return self

    @property
    def broker_port(self) -> int:
        return self.port if self.port is not None else (8883 if self.tls else 1883)

    def files(self) -> dict[str, Path]:
        """Files named here, by key, for the one start-up check that they can be read."""
        named = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        return {k: v for k, v in named.items() if v is not None}
