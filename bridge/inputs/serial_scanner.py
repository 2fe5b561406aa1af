"""Serial (USB-CDC / UART) barcode and QR scanners through pyserial.

Lines are framed on CR, LF or CRLF. When the device disappears (unplugged, USB reset) the reader
logs one warning saying what to check, then reopens the same path every `reconnect_s` until it is
back — no restart, no crash.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import serial
import structlog

from bridge.config import SerialReader
from bridge.inputs.base import Emit, InputContext, Scan
from verifier.credentials import MAX_SCAN_BYTES
from verifier.types import Source

log = structlog.get_logger()
_EOL = re.compile(rb"\r\n|\r|\n")


class LineFramer:
    """Bytes in, complete lines out. An over-long line is cut at the cap and still delivered, so
    the verifier answers MALFORMED_CREDENTIAL instead of the rest arriving as a second scan."""

    def __init__(self, cap: int = MAX_SCAN_BYTES + 1) -> None:
        self._buf = b""
        self._cap = cap
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        *lines, self._buf = _EOL.split(self._buf)
        out = []
        for line in lines:
            if self._discarding:
                self._discarding = False
                continue
            if line:
                out.append(line)
        if len(self._buf) > self._cap:
            if not self._discarding:
                out.append(self._buf[: self._cap])
            self._discarding = True
            self._buf = b""
        return out


class SerialScannerInput:
    def __init__(self, cfg: SerialReader) -> None:
        self.reader_id = cfg.id
        self.cfg = cfg
        self._stop = threading.Event()
        self.connected = threading.Event()

    async def run(self, emit: Emit) -> None:
        thread = threading.Thread(target=self._loop, args=(emit,), name=f"serial-{self.reader_id}", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                await asyncio.sleep(0.2)
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 2.0)

    def _loop(self, emit: Emit) -> None:
        lost_since: float | None = None
        while not self._stop.is_set():
            try:
                with serial.Serial(self.cfg.port, self.cfg.baudrate, timeout=0.1) as port:
                    self.connected.set()
                    if lost_since is not None:
                        log.info("reader_reconnected", reader=self.reader_id, port=self.cfg.port,
                                 down_s=round(time.monotonic() - lost_since, 1))
                    else:
                        log.info("reader_connected", reader=self.reader_id, port=self.cfg.port)
                    lost_since = None
                    self._read(port, emit)
            except (serial.SerialException, OSError) as e:
                self.connected.clear()
                if lost_since is None:
                    lost_since = time.monotonic()
                    log.warning("reader_lost", reader=self.reader_id, port=self.cfg.port, error=str(e)[:120],
                                check="cable and power; `ls -l` the port; user in group dialout; door-bridge doctor")
                self._stop.wait(self.cfg.reconnect_s)

    def _read(self, port: serial.Serial, emit: Emit) -> None:
        framer = LineFramer()
        while not self._stop.is_set():
            data = port.read(max(1, port.in_waiting or 1))
            if not data:
                continue
            for line in framer.feed(data):
                emit(Scan(self.reader_id, Source.PHONE_QR, line, None, time.monotonic()))


def create(cfg: SerialReader, context: InputContext = InputContext()) -> SerialScannerInput:
    return SerialScannerInput(cfg)
