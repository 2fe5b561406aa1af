"""bench/sync.py's own bookkeeping must not be what it measures (figures are the bench's job)."""

from __future__ import annotations

import gc
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.sync import Decider, GcPauses, write_bundle
from verifier.bundle import apply_file
from verifier.cache import GrantCache


def test_the_decision_threads_record_leaves_the_garbage_collector_nothing_to_walk(tmp_path: Path) -> None:
    """A tuple per decision made the bench's full collections walk half a million objects, 36-48
    ms each, and those pauses were the worst "decision during a 1M sync" (issue 17)."""
    key = Ed25519PrivateKey.generate()
    write_bundle(tmp_path / "v1.bundle", key, 1000, version=1)
    cache = GrantCache(tmp_path / "grants.db")
    apply_file(cache.conn, tmp_path / "v1.bundle", key.public_key())
    cache.close()
    decider = Decider(tmp_path / "grants.db")
    gc.disable()  # nothing is untracked behind the test's back
    try:
        decider.start()
        time.sleep(0.3)
        decider.stop.set()
        decider.join()
        decisions = sum(1 for _ in decider.samples)
        tracked = [o for o in gc.get_referents(*vars(decider).values()) if gc.is_tracked(o)]
    finally:
        gc.enable()
    assert decisions > 100
    assert len(tracked) < decisions / 10


def test_collections_are_recorded_with_their_generation_and_length() -> None:
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    try:
        gc.collect(2)
    finally:
        gc.callbacks.remove(pauses)
    assert [gen for _, _, gen in pauses.pauses] == [2]
    assert pauses.pauses[0][1] > 0
