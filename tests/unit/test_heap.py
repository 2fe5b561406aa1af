"""The start-up heap is frozen, so a full collection on the decision worker does not traverse it."""

from __future__ import annotations

import gc

from bridge.service.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector could ever free it


def test_objects_alive_at_freeze_are_outside_every_collected_generation():
    node = _Node()
    assert any(o is node for o in gc.get_objects())
    try:
        frozen = freeze_startup_heap()
        assert frozen > 0
        assert not any(o is node for o in gc.get_objects()), "a full collection would still scan it"
        later = _Node()
        assert any(o is later for o in gc.get_objects()), "objects made after READY are collected as usual"
    finally:
        gc.unfreeze()
