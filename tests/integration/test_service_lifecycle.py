"""The daemon as a systemd service: notify protocol, signals, status, journald priorities, exit reasons.

systemd itself is the one part with no stand-in here: the test plays its role (a notify socket, the
environment it sets, the signals it sends). Everything else is the real process.
"""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from tests.support.service import READER, Service, datagram_queue_length


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path)
    yield svc
    svc.close()


def _boot_events(state):
    conn = sqlite3.connect(state / "audit.db")
    rows = conn.execute("SELECT body FROM events WHERE type = 'BOOT' ORDER BY seq").fetchall()
    conn.close()
    import json

    return [json.loads(r[0]) for r in rows]


def test_ready_watchdog_status_and_clean_sigterm(service):
    service.start()
    service.notify.wait_for("WATCHDOG=1", count=3)  # WATCHDOG_USEC=0.6 s → a ping every 0.3 s
    status_lines = service.notify.wait_for("STATUS=")
    assert any("cache v1" in s and "local-first" in s for s in status_lines), status_lines

    service.pty.type("6B06C2A25E99C68EDCBE")
    service.wait_log("decision ")
    status = service.status()
    assert status["mode"] == "local-first" and status["cache"]["version"] == 1
    assert status["readers"][READER]["last_decision"] == "GRANT"
    assert status["outbox"]["depth"] >= 2  # BOOT + VERIFY, nothing replicates them here
    assert status["doors"]["main"]["relay"] in ("energised", "released")

    started = time.monotonic()
    service.signal(signal.SIGTERM)
    assert service.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    service.notify.wait_for("STOPPING=1")
    assert "stopped" in service.output()


def test_a_systemd_that_stops_reading_the_notify_socket_does_not_stall_the_daemon(tmp_path):
    """The notify socket is a queue of 10 datagrams that PID 1 reads. Sent blocking from the event
    loop, the 11th unread WATCHDOG=1 stopped the loop for good: status socket, sync, heartbeats
    (CI: a daemon hung 3 s after READY under a test that read the socket only at start)."""
    svc = Service(tmp_path, watchdog_usec=20_000)  # a ping every 10 ms
    try:
        svc.start()
        svc.notify.pause()
        time.sleep(max(1.0, 0.02 * (datagram_queue_length() + 40)))  # pings well past what the queue holds
        status = svc.status()  # answered by the event loop
        assert status["bridge_id"] == "BRIDGE-SVC" and status["cache"]["version"] == 1
        svc.wait_log("sd_notify_failed")
        failed = next(line for line in svc.output().splitlines() if "sd_notify_failed" in line)
        assert "not reading its notify socket" in failed, failed
        svc.notify.resume()
        svc.wait_log("sd_notify_recovered")
        svc.pty.type("6B06C2A25E99C68EDCBE")
        svc.wait_log("decision ")
        assert svc.proc is not None and svc.proc.poll() is None
    finally:
        svc.close()


def test_journald_priorities_and_key_value_lines(service):
    service.start()
    service.pty.type("04A22C1A7B3F80")
    service.pty.type("not a credential at all!")
    service.wait_log("reason=MALFORMED_CREDENTIAL")
    lines = service.output().splitlines()
    decisions = [line for line in lines if " reason=" in line and "decision " in line]
    assert decisions and all(line.startswith("<6>decision ") for line in decisions), decisions
    deny = next(line for line in decisions if "GRANT_REVOKED" in line)
    for key in ("reader=BRIDGE-svc", "source=", "decision=DENY", "latency_ms=", "cache_version=1", "upstream=none", "cred=card:"):
        assert key in deny
    assert "04A22C1A7B3F80" not in service.output(), "a whole card number reached the journal"


def test_sighup_reloads_without_losing_scans_and_survives_a_broken_file(service):
    service.start()
    service.pty.type("6B06C2A25E99C68EDCBE")
    service.wait_log("decision ")
    good = service.config.read_text().replace("pulse_s = 0.2", "pulse_s = 0.5").replace("replay_window_s", "replay_window_s")
    service.config.write_text(good)
    service.signal(signal.SIGHUP)
    service.notify.wait_for("RELOADING=1")
    service.wait_log("reloaded ")
    service.pty.type("04A22C1A7B3F80")
    service.wait_log("decision ", count=2)

    service.config.write_text(good + "\n[bridge]\nbogus = 1\n")
    service.signal(signal.SIGHUP)
    service.wait_log("reload_failed")
    service.pty.type("0A1B2C3D4E5F")
    service.wait_log("decision ", count=3)
    assert service.proc.poll() is None, "a bad config on reload must not stop the door"


def test_boot_event_tells_clean_stop_from_crash_and_watchdog(tmp_path):
    svc = Service(tmp_path)
    try:
        svc.start()
        svc.signal(signal.SIGTERM)
        assert svc.wait() == 0
        svc.notify.close()
        svc2 = Service(tmp_path, site=svc.site)
        svc2.start()
        svc2.kill()  # SIGKILL: a crash
        svc3 = Service(tmp_path, site=svc.site)
        svc3.start()
        svc3.kill()
        # what systemd's ExecStopPost does after a watchdog kill
        env_result = svc3.cli("record-exit", "--config", str(svc3.config))
        assert env_result.returncode == 0
        import subprocess, sys  # noqa: E401

        subprocess.run([sys.executable, "-m", "bridge.cli", "record-exit", "--config", str(svc3.config)],
                       env={**svc3.env, "SERVICE_RESULT": "watchdog", "EXIT_CODE": "killed", "EXIT_STATUS": "ABRT"},
                       check=True, timeout=60)
        svc4 = Service(tmp_path, site=svc.site)
        svc4.start()
        svc4.signal(signal.SIGTERM)
        assert svc4.wait() == 0
        reasons = [b["previousExit"]["reason"] for b in _boot_events(tmp_path / "state")]
        assert reasons == ["first-start", "clean", "crash", "watchdog"], reasons
        for s in (svc2, svc3, svc4):
            s.close()
    finally:
        svc.close()


def test_status_without_a_running_daemon_says_what_to_do(tmp_path):
    svc = Service(tmp_path)
    try:
        proc = svc.cli("status", "--config", str(svc.config))
        assert proc.returncode == 1 and proc.stderr.strip()
    finally:
        svc.close()
