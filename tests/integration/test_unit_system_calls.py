"""The daemon and every child it starts, under the unit's own `SystemCallFilter=` (tests/support/
unit_seccomp.py: the allow-list systemd builds from systemd/door-bridge.service, loaded through
libseccomp before exec). The guest runs the real unit too, without MQTT or metrics (and, until
this was found, with `apply_in = "thread"`); this runs the default with both on: the bundle
download (a body big enough for the download child) and apply, the MQTT publisher and the
metrics exposition in children, all niced.

Found here: the unit denies `@resources`, which holds `setpriority`, so every background child
died at its first instruction (PermissionError) under systemd: with the default configuration
a bridge never applied a bundle from its central, and MQTT and metrics restarted forever.

Real parts: a real daemon process, the loopback central (tests/support/fakes), a real mosquitto,
HTTP metrics scraped. Only the other sandbox options of the unit are not applied here.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bridge.upstream.background import BACKGROUND_NICENESS, background_argv
from bridge.upstream.central import IN_PROCESS_BODY_BYTES
from tests.support import unit_seccomp
from tests.support.fakes.central import FakeCentral, write_api_key
from tests.support.harness import Site, door_records
from tests.support.mqtt_broker import Broker, Listener, free_port
from tests.support.service import READER, Service, central_section, write_config

STATUS = "door-bridge/BRIDGE-SVC/status"


def test_the_unit_filter_allows_lowering_a_process_priority_and_still_denies_the_rest() -> None:
    allowed = unit_seccomp.allowed_syscalls()
    assert "setpriority" in allowed  # a background child lowers its own priority
    for denied in ("sched_setscheduler", "setrlimit", "mount", "reboot", "init_module", "ptrace", "settimeofday"):
        assert denied not in allowed, denied


def wait(check, timeout_s: float, what: str, svc: Service):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except AssertionError:  # the status socket did not answer yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout_s} s; daemon output:\n{svc.output()[-3000:]}")


def test_under_the_units_system_call_filter_a_bundle_is_applied_in_a_child_and_mqtt_and_metrics_run(
        tmp_path: Path) -> None:
    now = datetime.now(UTC)
    site = Site()
    central = FakeCentral(bridge_id="BRIDGE-SVC", signing_key=site.key, issued_at=now, not_after=now + timedelta(days=7))
    central.server.start()
    broker = Broker(tmp_path / "broker", verbose=False).start()
    heard = Listener(broker, STATUS)
    svc = Service(tmp_path, site=site)
    try:
        # Over IN_PROCESS_BODY_BYTES, so the body is the download child's (a small one the daemon reads).
        records = door_records(READER, now) + [{"type": "user", "id": f"guest_{i:05}", "name": f"Guest {i}"}
                                               for i in range(3000)]
        while central.publish_full(records) <= site.version:
            pass  # newer than the cache the service was installed with
        key_file = write_api_key(tmp_path / "central.key")
        metrics_port = free_port()
        tail = central_section(central.url, key_file, apply_in="process", poll_interval_s=1.0)
        tail += f"[mqtt]\nenabled = true\nport = {broker.port}\n[metrics]\nhttp = true\nport = {metrics_port}\n"
        write_config(svc.config, svc.state, site, svc.pty.path, tail=tail)
        svc.wrap = unit_seccomp.command
        svc.start()
        # The log, not `door-bridge status` in a loop: each is a Python start at niceness 0 beside
        # the niced children it waits for. (CI's failure here was the daemon's event loop, hung on
        # a blocking sd_notify into the notify socket this harness then read only at start:
        # bridge/service/sdnotify.py, tests/integration/test_service_lifecycle.py.)
        svc.wait_log(f"bundle_applied version={central.version} ", timeout=240)
        applied = next(line for line in svc.output().splitlines() if "bundle_applied" in line)
        assert int(applied.split(" bytes=")[1].split()[0]) > IN_PROCESS_BODY_BYTES, applied
        status = wait(lambda: (s := svc.status()).get("cache", {}).get("version") == central.version and s,
                      30, f"status showing cache version {central.version}", svc)
        assert status["cache"]["version"] == central.version
        wait(lambda: "online" in heard.on(STATUS), 30, "the MQTT publisher's online", svc)
        scraped = wait(lambda: _scrape(metrics_port), 30, "a metrics scrape", svc)
        samples = {m.name: m.samples[0].value for m in text_string_to_metric_families(scraped) if m.samples}
        assert samples["door_bridge_cache_version"] == central.version
        assert svc.proc is not None
        children = psutil.Process(svc.proc.pid).children(recursive=True)
        publishers = [c for c in children if "bridge.outward" in " ".join(c.cmdline())]
        assert len(publishers) == 2, [c.cmdline() for c in children]
        assert all(c.nice() == BACKGROUND_NICENESS for c in publishers), [(c.cmdline(), c.nice()) for c in publishers]
        assert "PermissionError" not in svc.output()
    finally:
        svc.close()
        heard.close()
        broker.kill()
        central.server.stop()


def _scrape(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None


def test_a_child_that_cannot_lower_its_priority_runs_at_the_daemons_and_says_why(tmp_path: Path) -> None:
    """A site's own drop-in may deny setpriority again: the child must still run, and say so."""
    strict = unit_seccomp.UNIT.read_text().replace("\nSystemCallFilter=setpriority\n", "\n")
    unit = tmp_path / "strict.service"
    unit.write_text(strict)
    assert "setpriority" not in unit_seccomp.allowed_syscalls(unit)
    done = subprocess.run(unit_seccomp.command(background_argv("json.tool", "--help"), unit),
                          capture_output=True, text=True, timeout=60, cwd=unit_seccomp.ROOT)
    assert done.returncode == 0, done.stderr
    assert "json.tool" in done.stdout or "usage" in done.stdout.lower()
    assert "background_child_not_niced module=json.tool" in done.stderr and "setpriority" in done.stderr, done.stderr
