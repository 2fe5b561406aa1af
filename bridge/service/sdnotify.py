"""sd_notify(3) without libsystemd: one datagram per state change to `$NOTIFY_SOCKET`.

The protocol is a few `KEY=value` lines in a single AF_UNIX datagram, so a dependency (and a C
library on the Pi) buys nothing. Outside systemd (laptop, tests, `door-bridge demo`) there is no
`$NOTIFY_SOCKET` and every call is a silent no-op, so the daemon calls these unconditionally.

A failed send never raises: losing a STATUS line must not take a door down. If WATCHDOG=1 cannot be
delivered systemd restarts the service, which is the right answer to a broken notify channel.

A send never waits long either. The socket is a datagram queue that PID 1 reads (10 datagrams by
default, `net.unix.max_dgram_qlen`); while nobody reads it, a blocking send waits forever, and it
runs on the event loop: status socket, sync, heartbeats and the watchdog ping itself stopped
(a test harness that read the socket only now and then hung daemons this way, and CI with them).
WATCHDOG=1 and STATUS= are sent without waiting and dropped when the queue is full (the next one
follows); READY=1, STOPPING=1, RELOADING=1 and EXTEND_TIMEOUT_USEC= wait up to
`_STATE_SEND_WAIT_S`, once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger()

# The most a state change (READY=1, STOPPING=1, …) waits for room in systemd's queue.
_STATE_SEND_WAIT_S = 1.0
# Sent often and superseded by the next one: never waited for.
_DROPPABLE = ("WATCHDOG=1", "STATUS=")


def _address(raw: str | None) -> str | None:
    """`/run/systemd/notify` stays a path; `@name` is the abstract name `\\0name`; else unsupported."""
    if not raw:
        return None
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]
    # vsock:… (systemd >= 253, VMs) and anything else: not a Pi's concern.
    return None


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Talks to one notify socket. Safe to call from any thread."""

    def __init__(self, notify_socket: str | None, watchdog_usec: str | None = None, watchdog_pid: str | None = None) -> None:
        self.address = _address(notify_socket)
        if notify_socket and self.address is None:
            log.warning("sd_notify_unsupported_socket", notify_socket=notify_socket)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines as one datagram; True when systemd's socket took it."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode("utf-8", "replace")
        wait_s = 0.0 if assignments[0].startswith(_DROPPABLE) else _STATE_SEND_WAIT_S
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(wait_s)  # 0: non-blocking, BlockingIOError when the queue is full
                self._sock.sendto(payload, self.address)
            except OSError as e:
                if not self._failing:
                    full = isinstance(e, (BlockingIOError, TimeoutError))
                    log.warning("sd_notify_failed", error=f"{type(e).__name__}: {e.strerror or e}", first=assignments[0],
                                effect="dropped; the daemon goes on" if full else "dropped",
                                check="systemd is not reading its notify socket: is PID 1 busy or hung "
                                      "(systemctl status, journalctl -b -p warning)?" if full
                                      else "NOTIFY_SOCKET in the unit's environment")
                self._failing = True
                self._close_locked()
                return False
        if self._failing:
            log.info("sd_notify_recovered")
            self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete: systemd marks the unit active and starts the watchdog clock."""
        return self.notify("READY=1", *([_status_line(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        """One line for `systemctl status` (e.g. "online, cache v42, 1 234 grants")."""
        return self.notify(_status_line(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([_status_line(status)] if status is not None else []))

    def reloading(self, status: str | None = None) -> bool:
        """Re-reading configuration; send `ready()` when done. systemd >= 253 needs MONOTONIC_USEC."""
        lines = ["RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}"]
        return self.notify(*lines, *([_status_line(status)] if status is not None else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (a large bundle still applying) instead of being killed."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None when none is expected.

        `WATCHDOG_PID` names the process systemd watches; a child that inherited the variables
        must not ping on the parent's behalf.
        """
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec or "")
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    async def watchdog_loop(self, interval: float | None = None) -> None:
        """Ping from the event loop itself until cancelled: a hung loop stops pinging and is restarted.

        Returns at once when no watchdog is configured. Run it as a task next to the daemon's work.
        """
        interval = interval if interval is not None else self.watchdog_interval()
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str) -> str:
    # A newline would start a new assignment: a reader name must not be able to send READY=1.
    return "STATUS=" + " ".join(str(text).splitlines())


# Module-level convenience for the daemon: one notifier built from the process environment.
_default: Notifier | None = None
_default_lock = threading.Lock()


def default() -> Notifier:
    global _default
    with _default_lock:
        if _default is None:
            _default = Notifier.from_env()
        return _default


def ready(status: str | None = None) -> bool:
    return default().ready(status)


def status(text: str) -> bool:
    return default().status(text)


def watchdog() -> bool:
    return default().watchdog()


def stopping(status: str | None = None) -> bool:
    return default().stopping(status)


def reloading(status: str | None = None) -> bool:
    return default().reloading(status)


def extend_timeout(seconds: float) -> bool:
    return default().extend_timeout(seconds)


def watchdog_interval() -> float | None:
    return default().watchdog_interval()
