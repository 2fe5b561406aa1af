"""Standard input as a reader: one line per scan, exactly as a keyboard-wedge scanner types it.

Used by `door-bridge demo`, on a bench with a USB scanner in a terminal, and in tests. Reads the
raw file descriptor (no buffered reader whose lock a daemon thread could hold at exit) and frames
lines with the same framer as the serial scanner, so an over-long line is one MALFORMED scan.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import BinaryIO, Callable

from bridge.config import ConsoleReader
from bridge.inputs.base import Emit, InputContext, Scan
from bridge.inputs.serial_scanner import LineFramer
from verifier.types import Source


class ConsoleInput:
    # Standard input ends (a piped file, Ctrl-D): that is the end of the demo or the test, not a
    # reader that failed, so the daemon does not retry it or report the door degraded.
    finite = True

    def __init__(self, reader_id: str, stream: BinaryIO | None = None, on_eof: Callable[[], None] | None = None,
                 *, accept_pins: bool = False) -> None:
        self.reader_id = reader_id
        self.accept_pins = accept_pins  # the demo's terminal is its keypad too
        self._stream = stream
        self._on_eof = on_eof

    async def run(self, emit: Emit) -> None:
        fd = (self._stream or sys.stdin).fileno()
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def pump() -> None:
            framer = LineFramer()
            try:
                while chunk := os.read(fd, 65536):
                    for line in framer.feed(chunk):
                        emit(Scan(self.reader_id, Source.PHONE_QR, line, None, time.monotonic()))
                for line in framer.feed(b"\n"):  # a last line without a newline still counts
                    emit(Scan(self.reader_id, Source.PHONE_QR, line, None, time.monotonic()))
            except OSError:
                pass
            finally:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=pump, name=f"console-{self.reader_id}", daemon=True).start()
        await done
        if self._on_eof:
            self._on_eof()


def create(cfg: ConsoleReader, context: InputContext = InputContext()) -> ConsoleInput:
    return ConsoleInput(cfg.id)
