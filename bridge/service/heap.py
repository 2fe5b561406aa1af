"""Keeping the start-up heap out of the garbage collector's full collections.

By READY the process holds hundreds of thousands of long-lived objects (pydantic models and
validators, gpiozero, httpx, structlog, the config). CPython's full (generation 2) collection
traverses all of them; it runs every few thousand surviving allocations, on whichever thread
allocates — under load that is the decision worker, mid-batch. On this 2-core machine under load a
full collection measured 65-130 ms inside a `Relay.pulse()` loop; with the start-up heap frozen
the same collection took ≤ 13 ms (bench/startup.py and bench/load.py are the place to see the
daemon's figures). `gc.freeze()` moves every object tracked now into the permanent generation,
which collections never scan; it is a list splice, so it costs nothing measurable before READY.
Cyclic garbage present at that moment is kept for the process's life: start-up makes little.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Freeze what start-up built; returns how many objects are now frozen (for the log)."""
    gc.freeze()
    return gc.get_freeze_count()
