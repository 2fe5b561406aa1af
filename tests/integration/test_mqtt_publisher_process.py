"""MQTT publishing runs in a process of its own (bridge/outward/mqtt_child.py), off the deciding
process's GIL: who holds the broker connection (psutil, by the connection's port), what that
process was given, what happens when it dies, when the daemon is SIGKILLed, and that the
batched hand-over keeps the decisions' order. Real mosquitto, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
from structlog.testing import capture_logs

from bridge.inputs.base import Scan
from bridge.outward.mqtt_child import SessionSettings
from bridge.upstream.background import BACKGROUND_NICENESS
from tests.support.harness import SteppingClock, running, wait_for
from tests.support.mqtt_broker import Broker, Listener
from tests.support.mqtt_site import BASE, READER, REVOKED, VALID, broker, config  # noqa: F401 - fixture
from tests.support.service import Service, write_config
from verifier.types import Source

PASSWORD = "pw-9f3c1e77-mqtt"
STATUS = "door-bridge/BRIDGE-SVC/status"


def holders(port: int) -> set[int]:
    """Pids of the processes whose TCP connection goes to the broker on `port`."""
    return {c.pid for c in psutil.net_connections(kind="tcp")
            if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED and c.pid is not None}


def publishers(pid: int) -> list[psutil.Process]:
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "bridge.outward.mqtt_child" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            continue
    return out


async def scan(daemon, raw: str):
    return await daemon.pipeline.handle(Scan(READER, Source.CARD, raw.encode()))


async def test_the_broker_connection_is_held_by_a_child_that_was_not_handed_the_password_on_its_command_line(
        tmp_path):
    broker = Broker(tmp_path / "broker", users={"door-lobby": PASSWORD}).start()
    password = tmp_path / "mqtt-password"
    password.write_text(PASSWORD + "\n")
    os.chmod(password, 0o600)
    heard = Listener(broker, f"{BASE}/#", auth=("door-lobby", PASSWORD))
    try:
        cfg = config(tmp_path / "site", broker.port, username="door-lobby", password_file=str(password))
        async with running(cfg, clock=SteppingClock()) as (daemon, _):
            await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
            assert (await scan(daemon, VALID)).granted
            await wait_for(lambda: len(heard.on(f"{BASE}/decision")) == 1, what="the summary")
            held = holders(broker.port)
            (child,) = publishers(os.getpid())
            # This process holds only the test's listener; the bridge's connection is the child's.
            assert held == {os.getpid(), child.pid}, held
            assert sum(1 for c in psutil.Process().net_connections(kind="tcp")
                       if c.raddr and c.raddr.port == broker.port) == 1  # the listener
            assert PASSWORD not in " ".join(child.cmdline())
            assert not any(PASSWORD in v for v in child.environ().values())
            assert daemon.outward.mqtt.child_pid == child.pid
            # Niced from its first instruction: its interpreter start and paho's work yield to decisions.
            assert child.nice() >= BACKGROUND_NICENESS, child.nice()
        assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
        assert publishers(os.getpid()) == []
        await wait_for(lambda: heard.on(f"{BASE}/status")[-1:] == ["offline"], what="offline on clean stop")
    finally:
        heard.close()
        broker.kill()


async def test_a_publisher_process_that_dies_is_counted_replaced_and_decisions_go_on(tmp_path, broker):
    heard = Listener(broker, f"{BASE}/#")
    try:
        with capture_logs() as logs:
            async with running(config(tmp_path, broker.port), clock=SteppingClock()) as (daemon, factory):
                mqtt = daemon.outward.mqtt
                await wait_for(lambda: mqtt.connected, what="bridge connected")
                first = mqtt.child_pid
                os.kill(first, signal.SIGKILL)
                assert (await scan(daemon, VALID)).granted  # the door does not wait for MQTT
                await wait_for(lambda: mqtt.restarts == 1, what="the death noticed")
                await wait_for(lambda: mqtt.connected and mqtt.child_pid != first, what="a new publisher connected")
                assert not (await scan(daemon, REVOKED)).granted
                await wait_for(lambda: any(json.loads(p)["reason"] == "GRANT_REVOKED"
                                           for p in heard.on(f"{BASE}/decision")), what="summary after the restart")
                shown = daemon.health.snapshot()["mqtt"]
                assert shown["connected"] is True and shown["publisher_restarts"] == 1, shown
    finally:
        heard.close()
    died = [e for e in logs if e["event"] == "mqtt_publisher_exited"]
    assert len(died) == 1 and died[0]["exit_code"] == -signal.SIGKILL and died[0]["log_level"] == "error"
    assert [e["event"] for e in logs].count("mqtt_connected") == 2


async def test_summaries_arrive_in_the_order_decided_through_the_batched_hand_over(tmp_path, broker):
    heard = Listener(broker, f"{BASE}/decision")
    cards = [VALID, REVOKED, "DEAD0001", REVOKED, VALID, "DEAD0002"] * 6
    try:
        async with running(config(tmp_path, broker.port), clock=SteppingClock()) as (daemon, _):
            await wait_for(lambda: daemon.outward.mqtt.connected, what="bridge connected")
            for raw in cards:  # back to back: many land in one feed of the publisher process
                await scan(daemon, raw)
            await daemon.quiesce()
            audited = [(e.body["decision"], e.body.get("reason"), bool(e.body.get("replay")))
                       for e in daemon.parts.outbox.recent(100) if e.type == "VERIFY"]
            await wait_for(lambda: len(heard.on(f"{BASE}/decision")) == len(cards), what="every summary")
    finally:
        heard.close()
    published = [(b["decision"], b["reason"], b["replay"]) for b in map(json.loads, heard.on(f"{BASE}/decision"))]
    assert len(audited) == len(cards) and published == audited


def wait_heard(svc: Service, heard: Listener, topic: str, last: str, timeout: float = 15.0) -> None:
    """Until `last` is the latest payload on `topic`."""
    deadline = time.monotonic() + timeout
    while heard.on(topic)[-1:] != [last]:
        assert time.monotonic() < deadline, (last, heard.messages)
        time.sleep(0.05)


def stopped(svc: Service, timeout: float = 15.0) -> int:
    assert svc.proc is not None
    deadline = time.monotonic() + timeout
    while svc.proc.poll() is None:
        assert time.monotonic() < deadline, f"daemon did not stop:\n{svc.output()[-3000:]}"
        time.sleep(0.05)
    return svc.proc.returncode


@contextlib.contextmanager
def online_service(tmp_path) -> Iterator[tuple[Service, Broker, psutil.Process]]:
    """A real daemon process publishing to a real mosquitto, its publisher child found and `online` heard."""
    broker = Broker(tmp_path / "broker").start()
    svc = Service(tmp_path)
    write_config(svc.config, svc.state, svc.site, svc.pty.path,
                 tail=f"[mqtt]\nenabled = true\nport = {broker.port}\nreconnect_min_s = 0.05\n")
    heard = Listener(broker, STATUS)
    try:
        svc.start()
        svc.wait_log("mqtt_connected")
        (child,) = publishers(svc.proc.pid)
        wait_heard(svc, heard, STATUS, "online")
        yield svc, broker, child
        wait_heard(svc, heard, STATUS, "offline")
    finally:
        heard.close()
        svc.close()
        broker.kill()


def test_a_sigkilled_daemon_leaves_no_publisher_behind_and_the_broker_says_offline(tmp_path):
    with online_service(tmp_path) as (svc, _broker, child):
        svc.kill()
        try:
            child.wait(10)  # its input closed with the daemon: it ends by itself
        except psutil.TimeoutExpired:
            pytest.fail("the publisher process outlived the SIGKILLed daemon")


def test_a_service_stop_that_signals_the_whole_cgroup_still_says_offline_and_logs_no_crash(tmp_path):
    """systemd's KillMode=control-group sends SIGTERM to the daemon and its publisher at once."""
    with online_service(tmp_path) as (svc, broker, child):
        child.send_signal(signal.SIGTERM)
        svc.signal(signal.SIGTERM)
        assert stopped(svc) == 0
        child.wait(5)
    out = svc.output()
    assert "mqtt_publisher_exited" not in out and "Traceback" not in out, out[-2000:]
    # The child said `offline` itself (a clean DISCONNECT), not the broker's last will.
    assert "Client door-bridge-BRIDGE-SVC disconnected." in broker.log_text(), broker.log_text()[-1500:]


def test_a_broker_that_stops_reading_fills_the_bounded_queue_not_the_publishers_memory(tmp_path):
    """At QoS 0 paho keeps every packet the socket has not taken, without a bound. The publisher
    hands paho the next message only once the socket has taken the last, so a broker that is up
    but not reading (SIGSTOP: the TCP connection stays) costs at most the queue and the socket
    buffers; the rest is dropped and counted."""
    broker = Broker(tmp_path / "broker", verbose=False).start()
    settings = SessionSettings(host="127.0.0.1", port=broker.port, client_id="t-stalled", keepalive_s=60,
                               status_topic=f"{BASE}/status", queue_size=100, reconnect_min_s=0.1,
                               reconnect_max_s=0.5)
    child = subprocess.Popen([sys.executable, "-m", "bridge.outward.mqtt_child"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    reports: list[dict] = []
    unread = bytearray()

    def counts() -> dict:
        """The child's latest running counts (it reports a JSON object a line), read without blocking."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(child.stdout.fileno(), 65536):
                unread.extend(chunk)
        *lines, rest = unread.split(b"\n")
        unread[:] = rest
        reports.extend(json.loads(line) for line in lines)
        return next((r["counts"] for r in reversed(reports) if "counts" in r), {"published": 0, "dropped": 0})

    try:
        assert child.stdin is not None and child.stdout is not None
        os.set_blocking(child.stdout.fileno(), False)
        child.stdin.write(settings.to_json().encode() + b"\n")
        child.stdin.flush()
        assert wait_until(lambda: counts() is not None and any(r.get("event") == "connected" for r in reports), 10)
        broker.pause()
        payload = "x" * 65536
        sent = 1000  # 64 MB: more than the loopback socket buffers on both sides can hold
        for i in range(sent):  # at a pace the queue (100) takes: what is dropped, the socket refused
            child.stdin.write(f"{BASE}/decision\t00\t{i}{payload}\n".encode())
            if i % 25 == 24:
                child.stdin.flush()
                time.sleep(0.05)
        child.stdin.flush()
        # All handed to paho, dropped, or (at most queue_size) waiting in the queue
        assert wait_until(lambda: sum(counts().values()) >= sent - settings.queue_size, 20), counts()
        time.sleep(0.5)
        stalled = counts()
        assert stalled["dropped"] >= sent // 2, stalled
        rss_mb = psutil.Process(child.pid).memory_info().rss / 2**20
        assert rss_mb < 80, rss_mb  # 45 here: not the 64 MB of payloads in paho's packet list (110)
        broker.resume()
        child.stdin.write(f"{BASE}/decision\t00\tafter\n".encode())
        child.stdin.flush()
        assert wait_until(lambda: counts()["published"] > stalled["published"], 20), counts()
    finally:
        broker.resume()
        with contextlib.suppress(OSError):
            child.stdin.close()
        child.wait(10)
        broker.kill()


def _segments_out(port: int) -> int:
    """The kernel's count of TCP segments sent by the socket bound to local `port` (`ss -ti`)."""
    ss = shutil.which("ss")
    if ss is None:
        if os.environ.get("CI") == "true":
            pytest.fail("ss is not installed (apt-get install iproute2; .ci/run does)")
        pytest.skip("ss is not installed (apt-get install iproute2)")
    out = subprocess.run([ss, "-tinH", "state", "established", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"\bsegs_out:(\d+)", out)
    assert found, out
    return int(found.group(1))


def test_a_batch_of_summaries_leaves_in_a_few_tcp_segments_not_one_each(tmp_path):
    """The daemon hands summaries over in batches; the publisher corks the socket around a batch.
    Uncorked, each publish() was a segment of its own (Nagle merged a few: 40-57 segments for
    200 summaries here), and the broker and every subscriber woke for each; corked, 12. The
    child is stopped while a batch is written, so it finds the whole batch queued at once."""
    broker = Broker(tmp_path / "broker", verbose=False).start()
    heard = Listener(broker, f"{BASE}/decision")
    settings = SessionSettings(host="127.0.0.1", port=broker.port, client_id="t-corked", keepalive_s=60,
                               status_topic=f"{BASE}/status", queue_size=1000, reconnect_min_s=0.1,
                               reconnect_max_s=0.5)
    child = subprocess.Popen([sys.executable, "-m", "bridge.outward.mqtt_child"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    try:
        assert child.stdin is not None
        child.stdin.write(settings.to_json().encode() + b"\n")
        child.stdin.flush()

        def local_port() -> int | None:
            return next((c.laddr.port for c in psutil.Process(child.pid).net_connections(kind="tcp")
                         if c.raddr and c.raddr.port == broker.port and c.status == psutil.CONN_ESTABLISHED), None)

        assert wait_until(lambda: local_port() is not None and heard.client.is_connected(), 10)
        port = local_port()
        assert port is not None
        time.sleep(0.3)  # the availability and its acknowledgement are through
        batches, size = 5, 200
        before = _segments_out(port)
        for b in range(batches):
            child.send_signal(signal.SIGSTOP)
            child.stdin.write("".join(f'{BASE}/decision\t00\t{{"n":{b * size + i},"decision":"GRANT"}}\n'
                                      for i in range(size)).encode())
            child.stdin.flush()
            child.send_signal(signal.SIGCONT)
            assert wait_until(lambda: len(heard.on(f"{BASE}/decision")) >= (b + 1) * size, 10), len(heard.messages)
        segments = _segments_out(port) - before
        assert [json.loads(m)["n"] for m in heard.on(f"{BASE}/decision")] == list(range(batches * size))
        assert segments <= batches * size // 8, segments
    finally:
        child.send_signal(signal.SIGCONT)
        with contextlib.suppress(OSError):
            child.stdin.close()
        child.wait(10)
        heard.close()
        broker.kill()


def wait_until(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False
