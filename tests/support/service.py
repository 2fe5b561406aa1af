"""A real `door-bridge run` process for service-level tests: pty reader, notify socket, runtime dir."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.support.harness import Site, door_records

READER = "BRIDGE-svc"
ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, state: Path, site: Site, port: str, **extra: str) -> None:
    lines = [
        "[bridge]", 'id = "BRIDGE-SVC"', f'state_dir = "{state}"',
        "[cache]", f'public_key = "{site.public_key}"', 'staleness = "warn"',
        "[gpio]", 'pin_factory = "mock"',
        "[doors.main]", "relay_pin = 17", f"pulse_s = {extra.get('pulse_s', '0.2')}",
        "[[readers]]", 'type = "serial"', f'id = "{READER}"', f'port = "{port}"', "reconnect_s = 0.1",
    ]
    path.write_text("\n".join(lines) + "\n" + extra.get("tail", ""))


def central_section(url: str, key_file: Path, **settings: float | str) -> str:
    """`[upstream.central]` (plus `[upstream.http]` for fast retries) as TOML, for `write_config(tail=...)`.

    Numbers and strings only: enough for poll, batch and idle settings of the bridge protocol."""
    http: dict[str, float | str] = {"retry_max_wait_s": 0.2, "retry_deadline_s": 3.0}
    central: dict[str, float | str] = {"base_url": url, "api_key_file": str(key_file), "poll_jitter": 0.0,
                                       "apply_in": "thread", **settings}

    def table(name: str, values: dict[str, float | str]) -> str:
        return "\n".join([f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]) + "\n"

    return table("upstream.http", http) + table("upstream.central", central)


def datagram_queue_length() -> int:
    """What the kernel queues for an unread AF_UNIX datagram socket (10; 512 where systemd's sysctl.d set it)."""
    return int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())


class NotifySocket:
    """The receiving end of $NOTIFY_SOCKET, read all the time as PID 1 reads it. A socket read only
    now and then fills its queue (10 datagrams, net.unix.max_dgram_qlen) within seconds of
    WATCHDOG=1 pings, which is a hung systemd, not the systemd a test means: `pause()` says so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._reading = threading.Event()
        self._reading.set()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read_forever, name="notify-socket", daemon=True)
        self._thread.start()

    def _read_forever(self) -> None:
        while not self._closed.is_set():
            if not self._reading.wait(0.1):
                continue
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def pause(self) -> None:
        """PID 1 stops reading (busy or hung): the queue fills."""
        self._reading.clear()

    def resume(self) -> None:
        self._reading.set()

    def received(self) -> list[str]:
        return list(self.messages)

    def wait_for(self, needle: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [m for m in self.received() if needle in m]
            if len(hits) >= count:
                return hits
            time.sleep(0.02)
        raise AssertionError(f"no {count}× {needle!r} on the notify socket; got {self.messages[-10:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self.sock.close()


class Pty:
    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r\n")

    def close(self) -> None:
        os.close(self.master)


class Service:
    """The daemon as systemd would run it (environment included), minus systemd itself."""

    def __init__(self, tmp: Path, site: Site | None = None, watchdog_usec: int = 600_000) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.runtime = tmp / "run"
        self.runtime.mkdir(exist_ok=True)
        self.site = site or Site()
        if not (self.state / "grants.db").exists():
            self.state.mkdir(exist_ok=True)
            now = datetime.now(timezone.utc)
            self.site.install(self.state, door_records(READER, now), now=now)
        self.pty = Pty()
        self.config = tmp / "door.toml"
        write_config(self.config, self.state, self.site, self.pty.path)
        self.notify = NotifySocket(tmp / f"notify-{time.monotonic_ns()}.sock")
        self.env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), "WATCHDOG_USEC": str(watchdog_usec),
                    "RUNTIME_DIRECTORY": str(self.runtime), "JOURNAL_STREAM": "8:1234", "PYTHONUNBUFFERED": "1"}
        self.env.pop("WATCHDOG_PID", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / f"daemon-{time.monotonic_ns()}.log"
        # Runs the daemon's command line inside another, e.g. tests.support.unit_seccomp.command.
        self.wrap: Callable[[list[str]], list[str]] = lambda argv: argv

    def start(self) -> "Service":
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(self.wrap([sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config)]),
                                     env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.notify.wait_for("READY=1")
        return self

    def restart(self) -> Service:
        """Start again after a kill or stop: a fresh output file per run, READY awaited anew."""
        if getattr(self, "_log", None) is not None:
            self._log.close()
        self.log = self.tmp / f"daemon-{time.monotonic_ns()}.log"
        self.notify.messages.clear()
        return self.start()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge.cli", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    def status(self) -> dict[str, Any]:
        proc = self.cli("status", "--json", "--config", str(self.config))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def wait_log(self, needle: str, timeout: float = 20.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(needle) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the daemon's output:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self.pty.close()
        self.notify.close()
