"""Prometheus metrics: a scripted door day through a real daemon, scraped over loopback HTTP and
parsed with prometheus_client's own parser; the figures must match the audit DB read on its own."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import sqlite3
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import ConfigError
from bridge.inputs.base import Scan
from bridge.upstream.background import BACKGROUND_NICENESS
from tests.support.harness import Site, SteppingClock, T0, door_records, make_config, relay_pulses, running, wait_for
from verifier.types import Source

READER = "R1"
VALID, REVOKED, EXPIRED = "6B06C2A25E99C68EDCBE", "04A22C1A7B3F80", "0A1B2C3D4E5F"




def listeners(port: int) -> list:
    return [c for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = collections.defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def one(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    hits = [v for lab, v in found[name] if all(lab.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, found.get(name))
    return hits[0]


def audit(state_dir: Path) -> list[tuple[str, dict, int]]:
    with sqlite3.connect(f"file:{state_dir / 'audit.db'}?mode=ro", uri=True) as c:
        return [(t, json.loads(b), a) for t, b, a in c.execute("SELECT type, body, acked FROM events ORDER BY seq")]


def config(tmp_path: Path, site: Site, port: int, **metrics):
    return make_config(tmp_path, site, [], doors={"main": {"relay_pin": 17, "pulse_s": 0.2, "door_switch_pin": 22,
                                                            "held_open_s": 0.3, "forced_open_grace_s": 0.2}},
                       metrics={"http": True, "port": port, **metrics})


async def scrape(daemon) -> str:
    exporter = daemon.outward.exporter
    await wait_for(exporter.listening.is_set, what="the metrics process listening")
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{exporter.port}/metrics")
    r.raise_for_status()
    return r.text


async def test_scraped_metrics_match_the_audit_db_after_a_scripted_day(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    port = free_port()
    cfg = config(tmp_path, site, port)
    async with running(cfg, clock=SteppingClock()) as (daemon, factory):
        daemon.parts.reader_door[READER] = "main"
        switch = factory.pin(22)
        switch.drive_low()  # closed
        await wait_for(lambda: daemon.parts.door_monitors["main"].state()["position"] == "closed", what="door closed")
        relay = factory.pin(17)
        for raw in (VALID, REVOKED, EXPIRED, VALID, "hello world!", VALID):
            d = await daemon.pipeline.handle(Scan(READER, Source.CARD, raw.encode()))
            if d.granted:  # the door is opened and shut well inside the forced-open logic's view
                await wait_for(lambda: not relay.state, what="relay released")
        assert len(relay_pulses(relay)) == 3
        await asyncio.sleep(0.5)  # past forced_open_grace_s after the last pulse
        switch.drive_high()  # opened with no grant: forced, then held
        await wait_for(lambda: "held_open" in daemon.parts.door_monitors["main"].alarms(), what="held open")
        await daemon.quiesce()
        text = await scrape(daemon)
        rows = audit(tmp_path)
        meta = daemon.parts.cache.meta

    found = samples(text)
    verify = [b for t, b, _ in rows if t == "VERIFY"]
    expected = collections.Counter((b["decision"], b["reason"] or "none", b["readerId"]) for b in verify)
    assert sum(expected.values()) == 6 and expected[("GRANT", "none", READER)] == 3
    scraped = {(lab["decision"], lab["reason"], lab["reader"]): v for lab, v in found["door_bridge_decisions_total"]}
    assert scraped == {k: float(n) for k, n in expected.items()}
    assert {lab["mode"] for lab, _ in found["door_bridge_decisions_total"]} == {"cache"}
    assert one(found, "door_bridge_scan_to_relay_seconds_count", reader=READER) == 6
    assert 0 < one(found, "door_bridge_scan_to_relay_seconds_sum", reader=READER) < 6 * 5.0
    assert one(found, "door_bridge_relay_pulses_total", door="main") == 3
    pending = sum(1 for *_, acked in rows if not acked)
    assert one(found, "door_bridge_outbox_depth") == pending > 0
    # Standalone door: nothing is ever acknowledged, so the oldest pending row is the BOOT one.
    assert one(found, "door_bridge_outbox_oldest_pending_age_seconds") > 0
    door_events = collections.Counter(t for t, _, _ in rows if t.startswith("DOOR_"))
    for kind, n in door_events.items():
        assert one(found, "door_bridge_door_events_total", door="main", type=kind) == n
    assert door_events["DOOR_FORCED_OPEN"] == door_events["DOOR_HELD_OPEN"] == 1
    assert one(found, "door_bridge_door_open", door="main") == 1
    assert one(found, "door_bridge_door_alarm", door="main", alarm="held_open") == 1
    assert one(found, "door_bridge_door_alarm", door="main", alarm="forced_open") == 1
    assert one(found, "door_bridge_cache_version") == meta.version == 1
    assert one(found, "door_bridge_cache_grants") == len([r for r in door_records(READER) if r["type"] in ("grant", "card")])
    assert one(found, "door_bridge_cache_stale") == 0
    assert one(found, "door_bridge_cache_age_seconds") > 0
    assert one(found, "door_bridge_build_info", version=__import__("bridge").__version__) == 1
    assert one(found, "door_bridge_start_time_seconds") > T0.timestamp()


async def test_no_label_carries_a_credential_user_or_name(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    port = free_port()
    async with running(config(tmp_path, site, port), clock=SteppingClock()) as (daemon, _):
        daemon.parts.reader_door[READER] = "main"
        for raw in (VALID, REVOKED, "hello world!"):
            await daemon.pipeline.handle(Scan(READER, Source.CARD, raw.encode()))
        await daemon.quiesce()
        text = await scrape(daemon)
        fingerprints = {e.body.get("credentialFingerprint") for e in daemon.parts.outbox.recent(50) if e.type == "VERIFY"}
    secrets = {VALID, REVOKED, "user_ok", "user_rev", "Layla Hassan", "Omar Said", "Stockroom", "zone_a"}
    secrets |= {f for f in fingerprints if f}
    values = {v for family in text_string_to_metric_families(text) for s in family.samples for v in s.labels.values()}
    assert values and not (values & secrets), values & secrets
    assert not any(s in text for s in secrets)


async def test_the_textfile_for_node_exporter_is_written_whole(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    target = tmp_path / "textfile" / "door_bridge.prom"
    target.parent.mkdir()
    cfg = make_config(tmp_path, site, [], metrics={"textfile": str(target), "textfile_interval_s": 0.05})
    async with running(cfg, clock=SteppingClock()) as (daemon, _):
        await daemon.pipeline.handle(Scan(READER, Source.CARD, VALID.encode()))
        await wait_for(lambda: target.exists() and "door_bridge_decisions_total{" in target.read_text(),
                       what="textfile with the decision")
    found = samples(target.read_text())
    assert one(found, "door_bridge_decisions_total", decision="GRANT", reader=READER) == 1
    assert [p.name for p in target.parent.iterdir()] == ["door_bridge.prom"]  # no temporary file left behind


async def test_metrics_listen_on_loopback_unless_told_otherwise(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    port = free_port()
    cfg = config(tmp_path, site, port)
    assert cfg.metrics.address == "127.0.0.1"
    async with running(cfg) as (daemon, _):
        exporter = daemon.outward.exporter
        await wait_for(exporter.listening.is_set, what="the metrics process listening")
        (listener,) = listeners(port)
        assert (listener.laddr.ip, listener.laddr.port) == ("127.0.0.1", port)
        assert listener.pid == exporter.child_pid


async def test_the_exposition_runs_in_a_niced_child_and_one_that_dies_is_started_again(tmp_path):
    """A scrape builds and serves the exposition in another process (its GIL, not the deciding
    one's), niced like every background child; killed, it is logged and replaced."""
    site = Site()
    site.install(tmp_path, door_records(READER))
    port = free_port()
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        async with running(config(tmp_path, site, port), clock=SteppingClock()) as (daemon, _):
            exporter = daemon.outward.exporter
            await wait_for(exporter.listening.is_set, what="the metrics process listening")
            (listener,) = listeners(port)
            first = psutil.Process(listener.pid)
            assert first.pid != os.getpid() and first.ppid() == os.getpid()
            assert first.nice() >= BACKGROUND_NICENESS
            d = await daemon.pipeline.handle(Scan(READER, Source.CARD, VALID.encode()))
            assert one(samples(await scrape(daemon)), "door_bridge_decisions_total", decision=d.decision.value,
                       reader=READER) == 1
            first.kill()
            await wait_for(lambda: exporter.restarts == 1, what="the exit noticed")
            await wait_for(lambda: exporter.listening.is_set() and exporter.child_pid not in (None, first.pid),
                           timeout=20, what="a new metrics process")
            # The counts live in the daemon: nothing was lost with the process.
            assert one(samples(await scrape(daemon)), "door_bridge_decisions_total", decision=d.decision.value,
                       reader=READER) == 1
            second = exporter.child_pid
            shown = daemon.health.snapshot()["metrics"]
            assert shown == {"http": f"127.0.0.1:{port}", "listening": True, "textfile": None, "process_restarts": 1,
                             "last_error": None}, shown
        assert not psutil.pid_exists(second) or psutil.Process(second).status() == psutil.STATUS_ZOMBIE
    assert [e for e in logs if e["event"] == "metrics_exporter_exited" and e["log_level"] == "error"]


def test_textfile_must_end_in_prom(tmp_path):
    with pytest.raises(ConfigError, match=r"metrics: .*\.prom"):
        make_config(tmp_path, Site(), [], metrics={"textfile": str(tmp_path / "x.txt")})


async def test_a_port_in_use_is_logged_and_the_door_still_decides(tmp_path):
    site = Site()
    site.install(tmp_path, door_records(READER))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = config(tmp_path, site, busy.getsockname()[1])
        from structlog.testing import capture_logs

        with capture_logs() as logs:
            async with running(cfg, clock=SteppingClock()) as (daemon, _):
                daemon.parts.reader_door[READER] = "main"
                d = await daemon.pipeline.handle(Scan(READER, Source.CARD, VALID.encode()))
                await wait_for(lambda: [e for e in logs if e["event"] == "metrics_unavailable"],
                               what="metrics_unavailable logged")
                shown = daemon.health.snapshot()["metrics"]
    assert shown["listening"] is False and "in use" in shown["last_error"].lower(), shown
    assert d.granted
    assert [e for e in logs if e["event"] == "metrics_unavailable" and e["log_level"] == "error"]


async def test_upstream_and_reader_gauges_follow_the_daemon_state(tmp_path):
    """The per-upstream book-keeping the adapters feed (`_mark_upstream(name=...)`, as `_ask` and the
    heartbeats call it) and reader health as `door-bridge status` shows it, as scraped."""
    site = Site()
    site.install(tmp_path, door_records(READER))
    port = free_port()
    async with running(config(tmp_path, site, port), clock=SteppingClock()) as (daemon, _):
        daemon.health.mark_upstream(True, name="frontelio")
        daemon.health.mark_upstream(False, "digital_id: UpstreamUnavailable: no route", name="digital_id")
        await daemon.pipeline.handle(Scan(READER, Source.CARD, VALID.encode()))
        await daemon.quiesce()
        daemon.health.stats.readers["R2"] = type(daemon.health.stats.readers[READER])(type="serial", last_error="OSError: gone")
        found = samples(await scrape(daemon))
        seen = daemon.health.upstream.by_name["frontelio"].last_success
    assert one(found, "door_bridge_upstream_up", upstream="frontelio") == 1
    assert one(found, "door_bridge_upstream_up", upstream="digital_id") == 0
    assert one(found, "door_bridge_upstream_last_success_timestamp_seconds", upstream="frontelio") == seen.timestamp()
    assert not [v for lab, v in found["door_bridge_upstream_last_success_timestamp_seconds"]
                if lab["upstream"] == "digital_id"]
    assert one(found, "door_bridge_reader_up", reader=READER) == 1
    assert one(found, "door_bridge_reader_up", reader="R2") == 0


def exposition_children(pid: int) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:  # the guest run's commands (tests/system/background.py) come and go beside this test
            if "bridge.outward.metrics_child" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:  # ended between the listing and the look (a zombie too)
            continue
    return found


@pytest.mark.parametrize("how", ["sigkill", "cgroup_sigterm"])
def test_the_exposition_process_never_outlives_the_daemon(tmp_path, how):
    """SIGKILL of the daemon closes the child's input; systemd's control-group stop signals both at
    once and the child waits for its input to close, so the stop logs no crash."""
    from tests.support.service import Service, write_config

    svc = Service(tmp_path)
    port = free_port()
    write_config(svc.config, svc.state, svc.site, svc.pty.path, tail=f"[metrics]\nhttp = true\nport = {port}\n")
    try:
        svc.start()
        svc.wait_log("metrics_listening")
        (child,) = exposition_children(svc.proc.pid)
        assert "door_bridge_outbox_depth" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if how == "sigkill":
            svc.kill()
        else:
            child.send_signal(signal.SIGTERM)
            svc.signal(signal.SIGTERM)
            assert svc.wait() == 0
        try:
            child.wait(10)
        except psutil.TimeoutExpired:
            pytest.fail("the metrics process outlived the daemon")
    finally:
        svc.close()
    if how == "cgroup_sigterm":
        out = svc.output()
        assert "metrics_exporter_exited" not in out and "Traceback" not in out, out[-2000:]
