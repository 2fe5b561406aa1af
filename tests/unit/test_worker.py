"""Group commit: queued scans share one transaction; order and errors are preserved."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from bridge.state.outbox import Outbox
from bridge.service.worker import Worker


def test_jobs_queued_while_busy_are_processed_together_in_order():
    gate = threading.Event()
    seen: list[list[int]] = []

    def process(items):
        gate.wait(5)
        seen.append(list(items))
        return [i * 10 for i in items]

    worker: Worker[int] = Worker(process, max_batch=8)
    futures = [worker.submit_batchable(i) for i in range(20)]
    gate.set()
    assert [f.result(5) for f in futures] == [i * 10 for i in range(20)]
    assert [i for batch in seen for i in batch] == list(range(20))
    assert max(len(b) for b in seen) > 1 and all(len(b) <= 8 for b in seen)
    worker.shutdown()


def test_a_call_between_scans_keeps_its_place():
    gate = threading.Event()
    order: list[str] = []
    worker: Worker[str] = Worker(lambda items: (gate.wait(5), order.extend(items), list(items))[2])
    a = worker.submit_batchable("a")
    c = worker.submit(lambda: order.append("call"))
    b = worker.submit_batchable("b")
    gate.set()
    a.result(5), c.result(5), b.result(5)
    assert order == ["a", "call", "b"]
    worker.shutdown()


def test_a_failing_batch_fails_every_scan_in_it():
    worker: Worker[int] = Worker(lambda items: (_ for _ in ()).throw(OSError("disk full")))
    future = worker.submit_batchable(1)
    with pytest.raises(OSError, match="disk full"):
        future.result(5)
    worker.shutdown()


def test_append_many_is_all_or_nothing(tmp_path):
    box = Outbox(tmp_path / "audit.db")
    box.append_many([("VERIFY", {"n": 1}), ("VERIFY", {"n": 2})])
    with pytest.raises(sqlite3.IntegrityError):  # NOT NULL type: the whole batch is rolled back
        box.append_many([("VERIFY", {"n": 3}), (None, {"n": 4})])  # type: ignore[list-item]
    assert [e.body["n"] for e in box.pending()] == [1, 2]
    assert box.depth() == 2
