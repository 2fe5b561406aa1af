"""Standard input as a reader: one line per scan, exactly as a keyboard-wedge scanner types it.

Used by `door-bridge demo`, by `tap`-style tests, and on a bench with a USB scanner in a terminal.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import BinaryIO, Callable

from bridge.config import ConsoleReader
from bridge.inputs.base import Emit, Scan
from verifier.credentials import MAX_SCAN_BYTES
from verifier.types import Source


class ConsoleInput:
    def __init__(self, reader_id: str, stream: BinaryIO | None = None, on_eof: Callable[[], None] | None = None) -> None:
        self.reader_id = reader_id
        self._stream = stream
        self._on_eof = on_eof

    async def run(self, emit: Emit) -> None:
        stream = self._stream or sys.stdin.buffer
        done = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            try:
                while True:
                    # Read one byte past the cap so an over-long line still arrives (and is refused
                    # as MALFORMED_CREDENTIAL) instead of being silently split into two scans.
                    line = stream.readline(MAX_SCAN_BYTES + 2)
                    if not line:
                        break
                    while not line.endswith(b"\n"):
                        more = stream.readline(MAX_SCAN_BYTES + 2)
                        if not more:
                            break
                        line = (line + more)[: MAX_SCAN_BYTES + 2]
                    if line.strip(b"\r\n"):
                        emit(Scan(self.reader_id, Source.PHONE_QR, line.rstrip(b"\r\n"), None, time.monotonic()))
            finally:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        threading.Thread(target=pump, name=f"console-{self.reader_id}", daemon=True).start()
        await done
        if self._on_eof:
            self._on_eof()


def create(cfg: ConsoleReader, **_: object) -> ConsoleInput:
    return ConsoleInput(cfg.id)
