"""The decision worker: one thread that owns the verifier and the SQLite writers.

Scans that queue up while the worker is busy are decided together and their audit rows committed
in ONE transaction (group commit): one fsync for the batch instead of one per scan, so throughput
is bounded by the disk's fsync rate times the batch size rather than by the fsync rate alone. The
rule stays the same: no relay moves before the rows of its batch are on disk.

Other work (door events, policy swaps, shutdown) runs on the same thread, in order, so SQLite and
the verifier's replay/rate-limit state are only ever touched from here.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Batchable(Generic[T]):
    """A job the worker may group with its neighbours."""

    item: T
    future: Future[Any] = field(default_factory=Future)


@dataclass
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] = field(default_factory=Future)


class Worker(Generic[T]):
    def __init__(self, process_batch: Callable[[list[T]], list[Any]], *, max_batch: int = 64,
                 name: str = "decide") -> None:
        self._process = process_batch
        self._max_batch = max_batch
        self._jobs: deque[Batchable[T] | _Call | None] = deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.batches = 0
        self.largest_batch = 0
        self._closing = False

    def submit_batchable(self, item: T) -> Future[Any]:
        job = Batchable(item)
        with self._cond:
            self._refuse_if_stopped()
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        job = _Call(fn, args)
        with self._cond:
            self._refuse_if_stopped()
            self._jobs.append(job)
            self._cond.notify()
        return job.future

    def _refuse_if_stopped(self) -> None:
        """A job after shutdown would wait forever: say so instead (a programmer's error)."""
        if self._closing:
            raise RuntimeError("the decision worker has shut down")

    def pending(self) -> int:
        return len(self._jobs)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        with self._cond:
            self._closing = True
            self._jobs.append(None)
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.popleft()
                batch: list[Batchable[T]] = []
                if isinstance(job, Batchable):
                    batch.append(job)
                    while self._jobs and isinstance(self._jobs[0], Batchable) and len(batch) < self._max_batch:
                        batch.append(self._jobs.popleft())  # type: ignore[arg-type]
            if job is None:
                return
            if isinstance(job, _Call):
                self._call(job)
            else:
                self._batch(batch)

    @staticmethod
    def _call(job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            job.future.set_result(job.fn(*job.args))
        except BaseException as e:  # handed to whoever awaits it
            job.future.set_exception(e)

    def _batch(self, batch: list[Batchable[T]]) -> None:
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            results = self._process([b.item for b in batch])
        except BaseException as e:
            for b in batch:
                b.future.set_exception(e)
            return
        for b, result in zip(batch, results):
            if isinstance(result, BaseException):
                b.future.set_exception(result)
            else:
                b.future.set_result(result)
