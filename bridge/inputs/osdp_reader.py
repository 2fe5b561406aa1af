"""OSDP readers: the daemon is the Control Panel (libosdp) on an RS-485 bus, each PD a reader.

One `[[readers]]` entry of type "osdp" is one PD (its address on the bus, its reader id, its
door). Entries naming the same `port` share one bus and one `osdp.ControlPanel`; libosdp's own
thread refreshes it every 20 ms (it must run at least every 50 ms) and talks to the port through
`SerialChannel`, which never raises into libosdp: a failing adapter reads as silence and is
reopened by the supervisor.

Secure Channel is enforced (libosdp's ENFORCE_SECURE): a PD that answers only in clear text, or
with another key, never comes online, and the supervisor says which of the two it is and what to
check. Card reads and key presses are taken only from a PD whose session is secure with its own
key, never with the well-known install key SCBK-D.

Install mode (`install = true` on one reader whose key file does not exist yet): a new random key
is written to `<scbk_file>.new` (0600) before the bus starts, libosdp opens a session with the
PD's factory key SCBK-D and hands the new key over (osdp_KEYSET), the next session uses it; then
the file is renamed into place and the reader leaves install mode by itself (enforced Secure
Channel from then on, also across restarts: a present key file wins over `install = true`).

Supervision: libosdp's notifications say when a PD goes online or offline; offline becomes
`READER_OFFLINE` (audit), a warning with the diagnosis, and the reader's health in `status` and
STATUS=; `READER_ONLINE` when it is back. libosdp itself waits 5 minutes before retrying an
offline PD; the supervisor re-enables it sooner (`retry_s`, doubling to `RETRY_MAX_S`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from bridge.config.readers import OSDP_RETRY_MAX_S, OsdpReaderConfig
from bridge.inputs.base import Emit, InputContext, Scan
from bridge.inputs.keypad import KeypadBuffer, feed_logged
from bridge.inputs.nfc import SameCardGate
from bridge.inputs.osdp_logic import (
    KEY_CODES,
    REPLY_PDCAP,
    BuzzerPattern,
    LedPattern,
    Problem,
    ReplyWatch,
    buzzer_pattern,
    diagnose,
    door_patterns,
    led_pattern,
)
from bridge.config.wiegand import format_table
from bridge.inputs.osdp_supervisor import REMIND_EVERY_S, BusSupervisor
from verifier.types import AccessDecision, Reason, Source
from verifier.wiegand_formats import WiegandCard, WiegandFormat, card_key, decode_bytes

if TYPE_CHECKING:
    import serial

log = structlog.get_logger()

# libosdp constants, spelled here so this module imports without libosdp (config loading).
_EVENT_CARDREAD, _EVENT_KEYPRESS, _EVENT_STATUS, _EVENT_NOTIFICATION = 1, 2, 4, 5
_NOTIF_COMMAND, _NOTIF_SC_STATUS, _NOTIF_PD_STATUS = 0, 1, 2
_CMD_KEYSET = 5
_CARD_FMT_RAW, _CARD_FMT_WIEGAND, _CARD_FMT_ASCII = 0, 1, 2
_STATUS_LOCAL, _STATUS_REMOTE = 2, 3
_LED_NONE, _LED_RED, _LED_GREEN, _LED_AMBER = 0, 1, 2, 3

RETRY_MAX_S = OSDP_RETRY_MAX_S
# A key that has worked with a PD since start is not blamed for this many failed handshakes in
# a row: one late reply during the handshake fails it as well (libosdp retries osdp_CHLNG and
# gives up on the answer; seen with libosdp's own PD under CPU load). After that the key is
# suspected again (a PD reset to factory defaults or swapped while the daemon runs).
KEY_TRUSTED_ATTEMPTS = 2


class OsdpKeyError(Exception):
    """A key file the operator must fix; the message names the path and the fix, never the key."""


def load_scbk(cfg: OsdpReaderConfig) -> bytes:
    """The PD's SCBK through the project's secret loader (mode check, credential directory)."""
    from bridge.config.secret_files import ApiKeyError, load_api_key

    try:
        text = load_api_key(key_file=cfg.scbk_file, credential=cfg.scbk_credential).reveal()
    except ApiKeyError as e:
        raise OsdpKeyError(str(e).replace("API key", "SCBK").replace("api_key_credential", "scbk_credential")
                           .replace("api_key_file", "scbk_file")) from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise OsdpKeyError(f"{cfg.key_source}: an SCBK is 32 hex digits (16 bytes); this file holds something else")
    return key


def write_key_file(path: Path, key: bytes) -> None:
    """Create `path` 0600 with the key in hex, durably; never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, key.hex().upper().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ReaderSink(Protocol):
    """What a supervised reader tells the daemon (bridge.service.reader_supervisor implements it)."""

    def reader_event(self, reader_id: str, kind: str, body: dict[str, Any]) -> None: ...

    def reader_offline(self, reader_id: str, problem: str | None) -> None: ...


class _NullSink:
    def reader_event(self, reader_id: str, kind: str, body: dict[str, Any]) -> None:
        pass

    def reader_offline(self, reader_id: str, problem: str | None) -> None:
        pass


# --- the serial line --------------------------------------------------------------------------


class SerialChannel:
    """libosdp's channel (`osdp.Channel` duck type) over pyserial. Never raises: libosdp calls it
    from its refresh thread, and an exception there would leave a Python error set inside C. A
    failing port reads as silence; `broken` tells the supervisor to reopen it."""

    def __init__(self, port: str, baudrate: int, watch: ReplyWatch) -> None:
        self.id = 0
        self.port = port
        self.baudrate = baudrate
        self.watch = watch
        self._lock = threading.Lock()
        self._serial: serial.Serial | None = None
        self.broken: str | None = "not opened yet"
        self.rx_bytes = 0
        self.tx_bytes = 0

    def open(self) -> None:
        import serial

        with self._lock:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.close()
                self._serial = None
            try:
                self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0.2, exclusive=True)
            except (OSError, ValueError, serial.SerialException) as e:
                self.broken = f"{type(e).__name__}: {e}"[:200]
                raise
            self.broken = None

    def close(self) -> None:
        with self._lock:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.close()
                self._serial = None
            self.broken = "closed"

    def read(self, max_bytes: int) -> bytes:
        with self._lock:
            port = self._serial
            if port is None:
                return b""
            try:
                waiting = port.in_waiting
                data = port.read(min(waiting, max_bytes)) if waiting else b""
            except Exception as e:  # noqa: BLE001 - must never reach libosdp
                self._fail(e)
                return b""
        if data:
            self.rx_bytes += len(data)
            self.watch.feed(data)
        return bytes(data)

    def write(self, buf: bytes) -> int:
        with self._lock:
            port = self._serial
            if port is None:
                return 0
            try:
                written = port.write(buf) or 0
            except Exception as e:  # noqa: BLE001 - must never reach libosdp
                self._fail(e)
                return 0
        self.tx_bytes += written
        return int(written)

    def flush(self) -> None:
        with self._lock:
            if self._serial is not None:
                with contextlib.suppress(Exception):
                    self._serial.reset_input_buffer()

    def _fail(self, e: Exception) -> None:
        self.broken = f"{type(e).__name__}: {e}"[:200]
        with contextlib.suppress(Exception):
            assert self._serial is not None
            self._serial.close()
        self._serial = None


# --- one PD -----------------------------------------------------------------------------------


@dataclass
class PdState:
    """What the bus knows about one PD; touched on the event loop only."""

    online: bool = False
    secure: bool = False  # a session with this PD's own key is up
    scbkd: bool = False  # the session is with the install key: nothing it sends counts
    ever_online: bool = False
    offline_since: float | None = None
    next_retry_at: float | None = None
    retry_s: float = 2.0
    problem: Problem | None = None
    reported: bool = False  # READER_OFFLINE was recorded for this episode
    warned_at: float | None = None
    tamper: bool | None = None
    power_failure: bool | None = None
    key_sent: bool = False  # install mode: the PD acknowledged osdp_KEYSET
    failed_attempts: int = 0  # attempts to bring it back that failed since it was last online
    # From its PDCAP: commands it does not announce are never sent (a NAK takes a PD offline).
    has_led: bool = False
    has_buzzer: bool = False


class OsdpReader:
    """Implements `bridge.inputs.base.Input` for one PD; the bus it is on does the work."""

    def __init__(self, cfg: OsdpReaderConfig, formats: dict[int, WiegandFormat], bus: OsdpBus) -> None:
        self.reader_id = cfg.id
        self.cfg = cfg
        self.formats = formats
        self.bus = bus
        self.sink: ReaderSink = _NullSink()
        self.state = PdState(retry_s=cfg.retry_s)
        self.entry = KeypadBuffer(cfg.max_pin_length, cfg.pin_timeout_s)
        self.gate = SameCardGate(cfg.rescan_gap_s)
        self.emit: Emit | None = None
        self.scbk = b""
        self.install_key: bytes | None = None
        self.install_path: Path | None = None
        self._offline_idle = False
        self.grant_led_s = 3.0
        self.log = log.bind(reader=cfg.id, address=cfg.address, port=cfg.port)

    def attach(self, sink: ReaderSink, *, grant_led_s: float = 3.0) -> None:
        """The daemon's event sink, and how long the door's relay pulses (the GRANT light)."""
        self.sink = sink
        self.grant_led_s = grant_led_s

    @property
    def installing(self) -> bool:
        return self.install_key is not None

    def prepare_key(self) -> None:
        """Load the key, or in install mode make the new one (before the bus starts)."""
        cfg = self.cfg
        if cfg.install and cfg.scbk_file is not None and not cfg.scbk_file.exists():
            pending = cfg.scbk_file.with_name(cfg.scbk_file.name + ".new")
            if pending.exists():  # an earlier start made it; the PD may already have it
                self.install_key = load_scbk(cfg.model_copy(update={"scbk_file": pending}))
            else:
                self.install_key = secrets.token_bytes(16)
                write_key_file(pending, self.install_key)
            self.install_path = pending
            self.scbk = self.install_key
            return
        if cfg.install:
            self.log.warning("osdp_install_ignored", key_file=str(cfg.scbk_file),
                             why="the key file exists: this PD has its key, Secure Channel is enforced",
                             check="remove install = true from the config")
        self.scbk = load_scbk(cfg)

    async def run(self, emit: Emit) -> None:
        self.emit = emit
        self.log = log.bind(reader=self.cfg.id, address=self.cfg.address, port=self.cfg.port)
        await self.bus.serve(self)

    # --- decisions → LED and buzzer --------------------------------------------------------------

    def feedback(self, decision: AccessDecision) -> None:
        """Thread-safe (called from the decision worker): LED and buzzer as the GPIO ones do —
        GRANT green for the relay pulse and one beep; DENY red blinks and two beeps; locked out
        (RATE_LIMITED) red blinks and one long beep."""
        from bridge.door.feedback import Blink

        patterns = door_patterns()
        if decision.granted:
            self.bus.submit_feedback(self, led_pattern(Blink(self.grant_led_s, 0.0, 1), _LED_GREEN, _LED_GREEN),
                                     buzzer_pattern(patterns["grant_beep"]))
        elif decision.reason is Reason.RATE_LIMITED:
            self.bus.submit_feedback(self, led_pattern(patterns["deny_led"], _LED_RED, _LED_NONE),
                                     buzzer_pattern(patterns["locked_out_beep"]))
        else:
            self.bus.submit_feedback(self, led_pattern(patterns["deny_led"], _LED_RED, _LED_NONE),
                                     buzzer_pattern(patterns["deny_beeps"]))

    def set_offline(self, offline: bool) -> None:
        """Offline or stale cache: the reader's LED winks amber between decisions."""
        if offline == self._offline_idle:
            return
        self._offline_idle = offline
        self.bus.submit_idle(self)

    def idle_pattern(self) -> LedPattern:
        if self._offline_idle:
            return led_pattern(door_patterns()["offline_idle"], _LED_AMBER, _LED_NONE, permanent=True)
        return LedPattern(0, 1, 0, _LED_NONE, _LED_NONE)  # steady off (libosdp refuses 0/0)

    # --- events from the PD (event loop) ---------------------------------------------------------

    def on_card(self, event: dict[str, Any], at: float) -> None:
        data = bytes(event.get("data") or b"")
        fmt = event.get("format")
        if fmt == _CARD_FMT_ASCII:
            text = data.decode("ascii", errors="replace").strip()
            self._emit_card(text.encode(), text.encode(), at)
            return
        length = int(event.get("length") or 0)
        if self.cfg.card_bits == "hex":
            if length <= 0 or (length + 7) // 8 != len(data):
                self.log.warning("osdp_card_rejected", bits=length, why="data length does not match the bit count")
                return
            value = int.from_bytes(data, "big") >> (len(data) * 8 - length)
            number = f"{value:0{(length + 3) // 4}X}"
            self._emit_card(number.encode(), data + bytes([length & 0xFF]), at)
            return
        frame = decode_bytes(data, length, self.formats)
        if isinstance(frame, WiegandCard):
            self.log.debug("osdp_card", format=frame.format, bits=length)
            self._emit_card(card_key(frame).encode(), data + bytes([length & 0xFF]), at)
        else:
            self.log.warning("osdp_card_rejected", bits=length, format=getattr(frame, "format", None),
                             parity=getattr(frame, "parity", None), why=getattr(frame, "reason", "not a card"),
                             check="the formats of this reader (card_bits, formats) and the PD's card format setting")

    def _emit_card(self, raw: bytes, identity: bytes, at: float) -> None:
        if not self.gate.is_new(identity, at):
            self.gate.released(identity, at)
            self.log.debug("osdp_same_card_again")
            return
        self.gate.released(identity, at)
        assert self.emit is not None
        # No fingerprint here: only the decision line carries one (keyed with the bridge's secret).
        self.log.debug("osdp_scan", digits=len(raw))
        self.emit(Scan(self.reader_id, Source.CARD, raw, hint="card", at_monotonic=at))

    def on_keys(self, event: dict[str, Any], at: float) -> None:
        buffer = self.entry
        for code in bytes(event.get("data") or b""):
            symbol = KEY_CODES.get(code)
            if symbol is None:
                buffer.ignored += 1
                continue
            pin = feed_logged(buffer, symbol, at, self.log)
            if pin is not None:
                assert self.emit is not None
                self.emit(Scan(self.reader_id, Source.KEYPAD, pin.encode(), hint="pin", at_monotonic=at))

    def on_status(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        report = bytes(event.get("report") or b"")
        if kind not in (_STATUS_LOCAL, _STATUS_REMOTE) or not report:
            return
        where = "local" if kind == _STATUS_LOCAL else "remote"
        tamper = bool(report[0] & 1)
        if tamper != self.state.tamper:
            if self.state.tamper is not None or tamper:
                self.sink.reader_event(self.reader_id, "READER_TAMPER", {"tamper": tamper, "where": where})
                say = self.log.warning if tamper else self.log.info
                say("osdp_tamper" if tamper else "osdp_tamper_cleared", where=where,
                    check="the reader's housing and mounting; who was there: door-bridge events tail")
            self.state.tamper = tamper
        if len(report) > 1:
            failure = bool(report[1] & 1)
            if failure != self.state.power_failure:
                if self.state.power_failure is not None or failure:
                    self.sink.reader_event(self.reader_id, "READER_POWER", {"powerFailure": failure, "where": where})
                    say = self.log.warning if failure else self.log.info
                    say("osdp_power_failure" if failure else "osdp_power_restored", where=where,
                        check="the reader's supply voltage and cable")
                self.state.power_failure = failure


# --- the bus ----------------------------------------------------------------------------------


class OsdpBus:
    """One serial port, one ControlPanel, the PDs on it. Started by the first member's `run`,
    stopped when the last one is cancelled."""

    def __init__(self, port: str, baudrate: int) -> None:
        self.port = port
        self.baudrate = baudrate
        self.watch = ReplyWatch()
        self.channel = SerialChannel(port, baudrate, self.watch)
        self.readers: list[OsdpReader] = []
        self.cp: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._serving = 0
        self._started: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self.supervisor = BusSupervisor(self)
        self.card_reads = 0

    def add(self, reader: OsdpReader) -> None:
        if self.cp is not None:
            raise RuntimeError(f"OSDP bus {self.port} is already running; PDs are added before it starts")
        for other in self.readers:
            if other.cfg.address == reader.cfg.address:
                raise ValueError(f"readers {other.reader_id} and {reader.reader_id} both use address "
                                 f"{reader.cfg.address} on {self.port}")
            if other.cfg.baudrate != reader.cfg.baudrate:
                raise ValueError(f"readers on {self.port} must share one baudrate")
        if reader.cfg.install and any(r.cfg.install for r in self.readers):
            raise ValueError(f"install mode is for one reader at a time ({self.port})")
        self.readers.append(reader)

    async def serve(self, reader: OsdpReader) -> None:
        self._serving += 1
        try:
            if self._started is None:
                self._started = asyncio.get_running_loop().create_future()
                try:
                    await self._start()
                except BaseException as e:
                    self._started.set_exception(e)
                    self._started = None
                    raise
                self._started.set_result(None)
            else:
                await asyncio.shield(self._started)
            await asyncio.Event().wait()  # runs until cancelled
        finally:
            self._serving -= 1
            if self._serving == 0:
                await self._stop()

    # --- start / stop ---------------------------------------------------------------------------

    async def _start(self) -> None:
        import osdp

        self.loop = asyncio.get_running_loop()
        for reader in self.readers:
            reader.prepare_key()
        try:
            self.channel.open()
        except Exception as e:  # noqa: BLE001 - reported and retried by the supervisor
            self.supervisor.port_problem(str(e))
        infos = []
        for reader in self.readers:
            flags = [osdp.LibFlag.EnableNotification]
            if not reader.installing:
                flags.append(osdp.LibFlag.EnforceSecure)
            infos.append(osdp.PDInfo(reader.cfg.address, self.channel, scbk=reader.scbk, flags=flags,
                                     name=f"PD-{reader.cfg.address}"))
            if reader.installing:
                reader.log.warning("osdp_install_mode", key_file=str(reader.cfg.scbk_file),
                                   effect="this PD may take a new key with the well-known default key (SCBK-D); "
                                          "its card reads are ignored until it has its own key",
                                   check="do this on the bench or with the PD alone on the bus; it ends by itself")
                reader.state.warned_at = time.monotonic()
        # libosdp logs to stdout in its own format; our lines say what matters (see docs/osdp.md).
        self.cp = osdp.ControlPanel(infos, log_level=osdp.LogLevel.Emergency, event_handler=self._from_refresh_thread)
        self.cp.start()
        for reader in self.readers:
            reader.state.offline_since = time.monotonic()
            reader.log.info("osdp_ready", baudrate=self.baudrate, secure="install" if reader.installing else "enforced")
        self._supervisor = asyncio.create_task(self.supervisor.run(), name=f"osdp-{self.port}")

    async def _stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if self.cp is not None:
            cp, self.cp = self.cp, None
            await asyncio.to_thread(cp.stop)
        self.channel.close()
        self._started = None
        _BUSES.pop((self.port, id(self.loop)), None)

    # --- libosdp's thread → the event loop ------------------------------------------------------

    def _from_refresh_thread(self, pd: int, event: dict[str, Any]) -> int:
        """Called inside ControlPanel.refresh with its lock held: hand over and return at once."""
        at = time.monotonic()
        cp = self.cp
        if cp is not None and 0 <= pd < len(self.readers):
            # libosdp's ControlPanel also queues every event it hands a handler, for get_event();
            # nothing reads that queue here, so it would grow with every card read and command
            # for the life of the daemon. Take this event back out of it.
            with contextlib.suppress(Exception):
                cp.get_event(self.readers[pd].cfg.address, timeout=-1)
        loop = self.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._on_event, pd, event, at)
        return 0

    def _on_event(self, pd: int, event: dict[str, Any], at: float) -> None:
        if not 0 <= pd < len(self.readers):
            return
        reader = self.readers[pd]
        try:
            kind = event.get("event")
            if kind == _EVENT_NOTIFICATION:
                self._on_notification(reader, event)
                return
            if not (reader.state.secure and not reader.state.scbkd):
                # ENFORCE_SECURE keeps clear-text PDs offline; this also covers install mode.
                reader.log.warning("osdp_insecure_event_dropped", event=kind,
                                   why="no Secure Channel with this PD's own key")
                return
            if kind == _EVENT_CARDREAD:
                self.card_reads += 1
                reader.on_card(event, at)
            elif kind == _EVENT_KEYPRESS:
                reader.on_keys(event, at)
            elif kind == _EVENT_STATUS:
                reader.on_status(event)
        except Exception as e:  # noqa: BLE001 - one odd event must not stop the bus
            reader.log.exception("osdp_event_failed", error=f"{type(e).__name__}: {e}"[:200])

    def _on_notification(self, reader: OsdpReader, event: dict[str, Any]) -> None:
        kind, arg0, arg1 = event.get("type"), event.get("arg0"), event.get("arg1")
        state = reader.state
        if kind == _NOTIF_SC_STATUS:
            state.secure, state.scbkd = bool(arg0), bool(arg0) and bool(arg1)
            if state.secure and not state.scbkd and reader.installing:
                self._install_done(reader)
        elif kind == _NOTIF_PD_STATUS:
            if arg0:
                self._online(reader)
            else:
                self.offline(reader)
        elif kind == _NOTIF_COMMAND and arg0 == _CMD_KEYSET and reader.installing:
            state.key_sent = bool(arg1)

    # --- online / offline -----------------------------------------------------------------------

    def _online(self, reader: OsdpReader) -> None:
        state = reader.state
        if not state.secure or state.scbkd:
            # Only possible in install mode (ENFORCE_SECURE is off for that one PD): a PD that
            # came online without its own key is not online for us.
            self._problem(reader, Problem("clear_text_only" if not state.secure else "wrong_key",
                                          "the PD came online without a session on its own key",
                                          "the PD's Secure Channel setting; docs/osdp.md, install mode"))
            assert self.cp is not None
            with contextlib.suppress(Exception):
                self.cp.disable_pd(reader.cfg.address)
            return
        was_reported = state.reported
        state.online, state.ever_online = True, True
        state.offline_since, state.next_retry_at, state.problem = None, None, None
        state.retry_s, state.reported, state.warned_at = reader.cfg.retry_s, False, None
        state.failed_attempts = 0
        self.watch.reset(reader.cfg.address)
        info = self._pd_info(reader)
        caps = str(info.get("capabilities", "")).split(",")
        state.has_led, state.has_buzzer = "led" in caps, "buzzer" in caps
        if was_reported:
            reader.sink.reader_event(reader.reader_id, "READER_ONLINE", {"address": reader.cfg.address, **info})
            reader.sink.reader_offline(reader.reader_id, None)
        reader.log.info("osdp_online", secure=True, **info)
        self.submit_idle(reader)

    def offline(self, reader: OsdpReader) -> None:
        state = reader.state
        now = time.monotonic()
        was_online = state.online
        state.online = False
        if state.offline_since is None or was_online:
            state.offline_since = now
        if was_online:
            # A session that was up is lost by one late or garbled reply (libosdp retries after
            # 200 + 800 ms and its own PD cannot answer a retry in Secure Channel): ask again at
            # once; the back-off is for a PD that keeps failing. Report at once all the same.
            state.next_retry_at = now
            self._problem(reader, Problem("no_answer", "the PD stopped answering",
                                          "the PD's power and RS-485 cable; then its address and baud rate"))
        else:
            state.next_retry_at = now + state.retry_s
            state.retry_s = min(state.retry_s * 2, RETRY_MAX_S)
            state.failed_attempts += 1
            sc_capable = self._sc_capable(reader)
            worked = state.ever_online and state.failed_attempts <= KEY_TRUSTED_ATTEMPTS
            self._problem(reader, diagnose(self.watch.seen(reader.cfg.address), sc_capable,
                                           install_mode=reader.installing, key_source=reader.cfg.key_source,
                                           key_worked=worked))

    def _problem(self, reader: OsdpReader, problem: Problem) -> None:
        state = reader.state
        now = time.monotonic()
        changed = state.problem is None or state.problem.kind != problem.kind
        state.problem = problem
        if not state.reported:
            state.reported = True
            reader.sink.reader_event(reader.reader_id, "READER_OFFLINE",
                                     {"address": reader.cfg.address, "problem": problem.kind, "detail": problem.text})
        reader.sink.reader_offline(reader.reader_id, f"{problem.text}; check {problem.check}")
        if changed or state.warned_at is None or now - state.warned_at >= REMIND_EVERY_S:
            state.warned_at = now
            say = reader.log.error if problem.kind in ("wrong_key", "clear_text_only") else reader.log.warning
            say("osdp_offline", problem=problem.kind, detail=problem.text, check=problem.check,
                retry_s=round(state.retry_s, 1))

    def _sc_capable(self, reader: OsdpReader) -> bool | None:
        return sc_capable(self.cp, self.watch, reader.cfg.address)

    def _pd_info(self, reader: OsdpReader) -> dict[str, Any]:
        return pd_info(self.cp, reader.cfg.address)

    def _install_done(self, reader: OsdpReader) -> None:
        """A session on the new key is up: keep the key, leave install mode, enforce from now on."""
        import osdp

        assert reader.install_path is not None and reader.cfg.scbk_file is not None
        try:
            os.replace(reader.install_path, reader.cfg.scbk_file)
            _fsync_dir(reader.cfg.scbk_file.parent)
        except OSError as e:
            reader.log.error("osdp_key_not_saved", key_file=str(reader.cfg.scbk_file), error=e.strerror,
                             check=f"the PD has the key in {reader.install_path}; move it to {reader.cfg.scbk_file}")
            return
        reader.install_key, reader.install_path = None, None
        assert self.cp is not None
        with contextlib.suppress(Exception):
            self.cp.set_flag(reader.cfg.address, osdp.LibFlag.EnforceSecure)
        reader.sink.reader_event(reader.reader_id, "OSDP_KEY_INSTALLED", {"address": reader.cfg.address})
        reader.log.info("osdp_key_installed", key_file=str(reader.cfg.scbk_file), install_mode="ended",
                        next_step="remove install = true from the config (a present key file wins anyway)")

    # --- feedback (any thread) ------------------------------------------------------------------

    def submit_feedback(self, reader: OsdpReader, led: LedPattern, buzzer: BuzzerPattern) -> None:
        import osdp

        cp = self.cp
        state = reader.state
        if cp is None or not state.online:
            return
        with contextlib.suppress(Exception):
            if state.has_led:
                cp.submit_command(reader.cfg.address, _led_command(osdp, led, temporary=True))
        with contextlib.suppress(Exception):
            if state.has_buzzer:
                cp.submit_command(reader.cfg.address, {"command": osdp.Command.Buzzer, "reader": 0, "control_code": 2,
                                                   "on_count": buzzer.on, "off_count": buzzer.off,
                                                   "rep_count": buzzer.repeat})

    def submit_idle(self, reader: OsdpReader) -> None:
        import osdp

        cp = self.cp
        if cp is None or not reader.state.online or not reader.state.has_led:
            return
        with contextlib.suppress(Exception):
            cp.submit_command(reader.cfg.address, _led_command(osdp, reader.idle_pattern(), temporary=False))

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "broken": self.channel.broken, "rx_bytes": self.channel.rx_bytes,
                "tx_bytes": self.channel.tx_bytes, "noise_bytes": self.watch.noise_bytes}


def sc_capable(cp: Any, watch: ReplyWatch, address: int) -> bool | None:
    """Whether the PD announced Secure Channel in its PDCAP; None before it sent one."""
    import osdp

    if REPLY_PDCAP not in watch.seen(address).codes or cp is None:
        return None
    with contextlib.suppress(Exception):
        level, _ = cp.check_capability(address, osdp.Capability.CommunicationSecurity)
        return bool(level & 1)
    return None


def pd_info(cp: Any, address: int) -> dict[str, Any]:
    """Who the PD is (its PDID) and what it can do (its PDCAP), as libosdp recorded them; the
    journal's `osdp_online` line, `READER_ONLINE` and `door-bridge doctor` spell them alike."""
    import osdp

    info: dict[str, Any] = {}
    assert cp is not None
    with contextlib.suppress(Exception):
        pd_id = cp.get_pd_id(address)
        info.update(vendor=f"{pd_id.vendor_code & 0xFFFFFF:06X}", model=pd_id.model, version=pd_id.version,
                    serial=f"{pd_id.serial_number & 0xFFFFFFFF:08X}", firmware=f"{pd_id.firmware_version & 0xFFFFFF:06X}")
    caps = []
    for name, cap in (("led", osdp.Capability.LEDControl), ("buzzer", osdp.Capability.AudibleControl),
                      ("card_format", osdp.Capability.CardDataFormat), ("text", osdp.Capability.TextOutput)):
        with contextlib.suppress(Exception):
            if cp.check_capability(address, cap)[0]:
                caps.append(name)
    info["capabilities"] = ",".join(caps) or "-"
    return info


def _led_command(osdp: Any, p: LedPattern, *, temporary: bool) -> dict[str, Any]:
    cmd: dict[str, Any] = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "temporary": temporary,
                           "control_code": 2 if temporary else 1, "on_count": p.on, "off_count": p.off,
                           "on_color": p.on_color, "off_color": p.off_color}
    if temporary:
        cmd["timer_count"] = p.timer
    return cmd


# Buses of this process, per (port, event loop): every reader naming a port joins its bus.
_BUSES: dict[tuple[str, int], OsdpBus] = {}


def create(cfg: OsdpReaderConfig, context: InputContext = InputContext()) -> OsdpReader:
    key = (cfg.port, id(_current_loop()))
    bus = _BUSES.get(key)
    if bus is None or bus.cp is not None:
        bus = _BUSES[key] = OsdpBus(cfg.port, cfg.baudrate)
    reader = OsdpReader(cfg, format_table(cfg.formats, context.site_formats or {}), bus)
    bus.add(reader)
    return reader


def _current_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
