"""The outward tools (Prometheus metrics, MQTT) attached to a running daemon through its listener
lists — the one narrow interface they have to the door.

Listeners run on the decision worker after the relay has pulsed (or, for door events, after the
audit row). Each is wrapped so that whatever goes wrong in a tool is logged once and never
reaches the batch loop: an exception there would stop the next scan of the batch from pulsing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import structlog

from bridge.config import ConfigError

if TYPE_CHECKING:
    from bridge.service.daemon import Daemon
    from bridge.outward.metrics import Metrics, MetricsExporter
    from bridge.outward.mqtt import DoorView, MqttPublisher

log = structlog.get_logger()
F = TypeVar("F", bound=Callable[..., None])


def guarded(name: str, listener: F) -> F:
    failed = False

    def call(*args: object) -> None:
        nonlocal failed
        try:
            listener(*args)
        except Exception as e:  # noqa: BLE001 - a monitoring tool must never fail a door
            if not failed:
                log.error("listener_failed", listener=name, error=f"{type(e).__name__}: {e}"[:200],
                          effect="decisions unaffected", check="report this as a bug")
            failed = True

    return call  # type: ignore[return-value]


class Outward:
    def __init__(self, metrics: "Metrics | None", exporter: "MetricsExporter | None",
                 mqtt: "MqttPublisher | None") -> None:
        self.metrics = metrics
        self.exporter = exporter
        self.mqtt = mqtt

    @classmethod
    def start(cls, daemon: "Daemon") -> "Outward":
        cfg = daemon.config
        mqtt = None
        if cfg.mqtt.enabled:
            mqtt = _publisher(daemon)
            daemon.decision_listeners.append(guarded("mqtt", mqtt.on_decision))
            daemon.door_event_listeners.append(guarded("mqtt", mqtt.on_door_event))
            mqtt.start()
        metrics = exporter = None
        if cfg.metrics.enabled:
            from bridge.outward.metrics import Metrics, MetricsExporter

            metrics = Metrics(daemon, mqtt)
            daemon.decision_listeners.append(guarded("metrics", metrics.on_decision))
            daemon.door_event_listeners.append(guarded("metrics", metrics.on_door_event))
            exporter = MetricsExporter(metrics, cfg.metrics)
            exporter.start()
        return cls(metrics, exporter, mqtt)

    def mqtt_status(self) -> dict[str, object] | None:
        """For `door-bridge status`: a broker that is gone shows there, not only in the journal."""
        m = self.mqtt
        if m is None:
            return None
        return {"connected": m.connected, "broker": f"{m.section.host}:{m.section.broker_port}",
                "published": m.published, "dropped": m.dropped, "publisher_restarts": m.restarts,
                "last_error": m.last_error}

    def metrics_status(self) -> dict[str, object] | None:
        """For `door-bridge status`: an exposition process that cannot listen or keeps dying shows there."""
        e = self.exporter
        if e is None:
            return None
        s = e.section
        return {"http": f"{e.address or s.address}:{e.port or s.port}" if s.http else None,
                "listening": e.listening.is_set(), "textfile": str(s.textfile) if s.textfile is not None else None,
                "process_restarts": e.restarts, "last_error": e.last_error}

    async def stop(self) -> None:
        if self.exporter is not None:
            await self.exporter.stop()
        if self.mqtt is not None:
            await asyncio.to_thread(self.mqtt.stop)


def door_views(daemon: "Daemon") -> dict[str, "DoorView"]:
    from bridge.outward.mqtt import DoorView

    out = {}
    for name in daemon.doors:
        monitor = daemon.parts.door_monitors.get(name)
        if monitor is None:
            out[name] = DoorView("unknown", "none", has_switch=False)
        else:
            st = monitor.state()
            out[name] = DoorView(st["position"], st["alarm"] or "none", has_switch=monitor.switch is not None)
    return out


def _publisher(daemon: "Daemon") -> "MqttPublisher":
    """Read the password and check the TLS files now: a bad file is a config error at start."""
    from bridge.outward.mqtt import MqttPublisher
    from bridge.config.secret_files import ApiKeyError, load_api_key

    s = daemon.config.mqtt
    for key, path in s.files().items():
        _readable(f"mqtt.{key}", path)
    password = None
    if s.password_file is not None or s.password_credential is not None:
        key = "mqtt.password_file" if s.password_file is not None else "mqtt.password_credential"
        try:
            password = load_api_key(key_file=s.password_file, credential=s.password_credential).reveal()
        except ApiKeyError as e:
            raise ConfigError(f"{key}: {e}") from None
    try:
        return MqttPublisher(s, daemon.config.bridge.id, lambda: door_views(daemon), password=password,
                             reader_door=daemon.parts.reader_door, clock=daemon.clock)
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError: a CA or key file that is not PEM
        raise ConfigError(f"mqtt: cannot set up TLS: {e}") from None


def _readable(key: str, path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None
