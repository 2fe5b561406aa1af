"""Timed on/off patterns for the door's outputs (relay, aux relay, LED, buzzer) on one long-lived thread.

gpiozero's `blink()`/`beep()` start a thread for every pattern and join the previous one first. The
daemon calls them from the decision worker, inside a batch: a profile under load showed about a
quarter of the worker's samples there, before the next scans were decided. Here the caller writes
the first level on its own thread (so "the row is on disk before the relay moves" stays true, in
that order, on the caller's thread) and the rest of the pattern is a deadline on `Timeline`: one
thread for the whole process, started once, that sleeps until the next deadline. Starting or
replacing a pattern costs a heap push, never a thread start or join.

Every step checks a generation number under the output's lock, so `on()`, `off()` or a newer
pattern supersede a pattern at once: a stop in the middle of a pulse releases the relay now, and
no late step can energise it again.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from gpiozero import OutputDevice

log = structlog.get_logger()


@dataclass(order=True, slots=True)
class Scheduled:
    """A pending callback; `cancel()` makes the timeline skip it when its time comes."""

    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timeline:
    """Runs short callbacks at their due time, one at a time, on one daemon thread.

    Callbacks must be quick (a GPIO write): they share the thread with every door's outputs. An
    exception from one is logged and does not stop the others.
    """

    def __init__(self, name: str = "door_outputs", clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[Scheduled] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Idempotent; called at device set-up, so the first pulse does not start the thread."""
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def call_later(self, delay_s: float, fn: Callable[[], None]) -> Scheduled:
        entry = Scheduled(self._clock() + max(0.0, delay_s), next(self._seq), fn)
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self.start()
            elif self._heap[0] is entry:
                self._cond.notify()  # an earlier deadline than the one the thread sleeps towards
        return entry

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._heap and self._heap[0].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0].due - self._clock()
                    if wait <= 0:
                        entry = heapq.heappop(self._heap)
                        break
                    self._cond.wait(wait)
            try:
                entry.fn()
            except Exception as e:  # noqa: BLE001 - one door's dead GPIO line must not stop the others
                log.error("door_output_step_failed", error=f"{type(e).__name__}: {e}"[:200],
                          check="GPIO wiring and permissions; door-bridge doctor")


_shared: Timeline | None = None
_shared_lock = threading.Lock()


def shared_timeline() -> Timeline:
    """The process's one timeline for door outputs, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Timeline()
        _shared.start()
        return _shared


class TimedOutput:
    """One gpiozero output device and the pattern it is playing."""

    def __init__(self, device: OutputDevice, timeline: Timeline | None = None) -> None:
        self.device = device
        self._timeline = timeline if timeline is not None else shared_timeline()
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: Scheduled | None = None
        self._closed = False

    def blink(self, on_s: float, off_s: float, n: int | None) -> None:
        """`n` cycles of on/off ending off (n=None: until replaced). The first `on` happens here,
        on the caller's thread; a failure to write it propagates (the caller releases)."""
        with self._lock:
            self._supersede()
            if self._closed:
                return
            self.device.on()
            self._schedule(on_s, False, n, on_s, off_s)

    def on(self) -> None:
        with self._lock:
            self._supersede()
            if not self._closed:
                self.device.on()

    def off(self) -> None:
        with self._lock:
            self._supersede()
            if not self._closed:
                self.device.off()

    def close(self) -> None:
        """Off, and no later step touches the device; the caller closes the device itself."""
        with self._lock:
            self._supersede()
            if not self._closed:
                self._closed = True
                self.device.off()

    @property
    def value(self) -> bool:
        return bool(self.device.value)

    def _supersede(self) -> None:
        self._generation += 1
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _schedule(self, delay_s: float, turn_on: bool, remaining: int | None, on_s: float, off_s: float) -> None:
        generation = self._generation
        self._pending = self._timeline.call_later(
            delay_s, lambda: self._step(generation, turn_on, remaining, on_s, off_s))

    def _step(self, generation: int, turn_on: bool, remaining: int | None, on_s: float, off_s: float) -> None:
        with self._lock:
            if generation != self._generation or self._closed:
                return
            self._pending = None
            try:
                if turn_on:
                    self.device.on()
                    self._schedule(on_s, False, remaining, on_s, off_s)
                    return
                self.device.off()
            except Exception:
                self._generation += 1
                with contextlib.suppress(Exception):
                    self.device.off()
                raise
            left = None if remaining is None else remaining - 1
            if left is None or left > 0:
                self._schedule(off_s, True, left, on_s, off_s)
