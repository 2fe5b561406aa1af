"""sd_notify over a real AF_UNIX datagram socket, bound as systemd binds it (path and abstract)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge.service import sdnotify
from bridge.service.sdnotify import Notifier
from tests.support.service import datagram_queue_length


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: what PID 1 would read."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value
        sock.settimeout(5)

    def receive(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.split("\n"))

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
            return True
        except BlockingIOError:
            return False
        finally:
            self.sock.settimeout(5)


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield FakeSystemd(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[FakeSystemd]:
    name = f"door-bridge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield FakeSystemd(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, path_socket: FakeSystemd, abstract_socket: FakeSystemd) -> FakeSystemd:
    return path_socket if request.param == "path" else abstract_socket


def test_ready_reaches_the_notify_socket(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.env_value)
    assert notifier.ready() is True
    assert systemd.receive() == {"READY": "1"}


def test_ready_with_status_is_one_datagram(systemd: FakeSystemd) -> None:
    Notifier(systemd.env_value).ready("online, cache v42")
    assert systemd.receive() == {"READY": "1", "STATUS": "online, cache v42"}
    assert not systemd.pending()


def test_status_watchdog_stopping_each_send_their_assignment(systemd: FakeSystemd) -> None:
    notifier = Notifier(systemd.env_value)
    notifier.status("offline since 12:00")
    assert systemd.receive() == {"STATUS": "offline since 12:00"}
    notifier.watchdog()
    assert systemd.receive() == {"WATCHDOG": "1"}
    notifier.stopping()
    assert systemd.receive() == {"STOPPING": "1"}
    notifier.extend_timeout(12.5)
    assert systemd.receive() == {"EXTEND_TIMEOUT_USEC": "12500000"}


def test_reloading_carries_the_current_monotonic_time(systemd: FakeSystemd) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(systemd.env_value).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    message = systemd.receive()
    assert message["RELOADING"] == "1"
    assert before <= int(message["MONOTONIC_USEC"]) <= after


def test_a_newline_in_status_cannot_smuggle_another_assignment(systemd: FakeSystemd) -> None:
    Notifier(systemd.env_value).status("reader R1\nREADY=1")
    assert systemd.receive() == {"STATUS": "reader R1 READY=1"}


def test_from_env_reads_notify_socket(path_socket: FakeSystemd) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path_socket.env_value})
    assert notifier.enabled
    notifier.watchdog()
    assert path_socket.receive() == {"WATCHDOG": "1"}


def test_outside_systemd_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


@pytest.mark.parametrize("value", ["", "@", "vsock:2:1234", "relative/path"])
def test_unsupported_socket_addresses_are_ignored_not_fatal(value: str) -> None:
    notifier = Notifier(value)
    assert not notifier.enabled
    assert notifier.ready() is False


def test_a_vanished_socket_is_logged_once_and_does_not_raise(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    with capture_logs() as logs:
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    failures = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "warning"


def test_sending_recovers_when_the_socket_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    notifier = Notifier(str(path))
    assert notifier.ready() is False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    try:
        with capture_logs() as logs:
            assert notifier.watchdog() is True
        assert [entry["event"] for entry in logs] == ["sd_notify_recovered"]
        assert FakeSystemd(sock, str(path)).receive() == {"WATCHDOG": "1"}
    finally:
        sock.close()


def test_a_full_queue_drops_pings_and_statuses_at_once_and_never_blocks_the_caller(path_socket: FakeSystemd) -> None:
    """Nobody reads (PID 1 busy or hung): the kernel queues 10 datagrams (net.unix.max_dgram_qlen),
    then a blocking send waited for good. Pings and statuses are dropped instead; a state change
    waits a moment for room, once; the first failure is logged with what to check."""
    notifier = Notifier(path_socket.env_value)
    sent: list[bool] = []
    count = datagram_queue_length() + 30

    def send() -> None:
        for i in range(count):
            sent.append(notifier.watchdog() if i % 2 else notifier.status(f"cache v{i}"))
        sent.append(notifier.stopping())

    with capture_logs() as logs:
        worker = threading.Thread(target=send, daemon=True)
        worker.start()
        worker.join(20)
        assert not worker.is_alive(), f"blocked after {len(sent)} sends"
    assert len(sent) == count + 1 and sent[0] and not sent[-1]
    assert False in sent
    failures = [e for e in logs if e["event"] == "sd_notify_failed"]
    assert len(failures) == 1 and "not reading its notify socket" in failures[0]["check"], failures
    while path_socket.pending():
        path_socket.receive()
    with capture_logs() as logs:
        assert notifier.watchdog() is True
    assert [e["event"] for e in logs] == ["sd_notify_recovered"]


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier("/x", watchdog_usec="30000000").watchdog_interval() == 15.0


def test_watchdog_interval_honours_watchdog_pid() -> None:
    mine = Notifier("/x", watchdog_usec="30000000", watchdog_pid=str(os.getpid()))
    someone_elses = Notifier("/x", watchdog_usec="30000000", watchdog_pid=str(os.getpid() + 1))
    assert mine.watchdog_interval() == 15.0
    assert someone_elses.watchdog_interval() is None


@pytest.mark.parametrize("usec,pid", [(None, None), ("0", None), ("-5", None), ("abc", None), ("30000000", "nope")])
def test_watchdog_interval_none_for_absent_or_bad_values(usec: str | None, pid: str | None) -> None:
    assert Notifier("/x", watchdog_usec=usec, watchdog_pid=pid).watchdog_interval() is None


def test_watchdog_loop_pings_from_the_event_loop(path_socket: FakeSystemd) -> None:
    notifier = Notifier(path_socket.env_value, watchdog_usec="20000")

    async def run_a_little() -> None:
        task = asyncio.create_task(notifier.watchdog_loop())
        # Each receive waits for the next ping; the loop must keep sending while the event loop runs.
        for _ in range(3):
            assert await asyncio.to_thread(path_socket.receive) == {"WATCHDOG": "1"}
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_a_little())


def test_watchdog_loop_returns_at_once_without_a_watchdog(path_socket: FakeSystemd) -> None:
    asyncio.run(asyncio.wait_for(Notifier(path_socket.env_value).watchdog_loop(), timeout=5))
    assert not path_socket.pending()


def test_module_functions_use_the_process_environment(path_socket: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(sdnotify, "_default", None)
    sdnotify.ready()
    assert path_socket.receive() == {"READY": "1"}
    sdnotify.status("hello")
    assert path_socket.receive() == {"STATUS": "hello"}
    assert sdnotify.watchdog_interval() == 4.0
    monkeypatch.setattr(sdnotify, "_default", None)
