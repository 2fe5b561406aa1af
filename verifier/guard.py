"""Anti-bounce replay memory and the per-reader DENY rate limiter: small, bounded, clock-injected."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

from verifier.types import AccessDecision


class ReplayMemory:
    """Same credential at the same reader within `window_ms` → the original decision again.

    Frontelio's "sticky-finger anti-bounce": a card left on the reader or a QR held under the
    scanner must not pulse the relay twice, nor count twice against the rate limit.
    """

    def __init__(self, window_ms: int, capacity: int = 4096) -> None:
        self.window_ms = window_ms
        self._seen: OrderedDict[tuple[str, str], tuple[int, AccessDecision]] = OrderedDict()
        self._capacity = capacity

    def recall(self, reader_id: str, fp: str, now_ms: int) -> AccessDecision | None:
        hit = self._seen.get((reader_id, fp))
        if hit is None:
            return None
        at, decision = hit
        if 0 <= now_ms - at < self.window_ms:
            return decision
        return None

    def remember(self, reader_id: str, fp: str, now_ms: int, decision: AccessDecision) -> None:
        key = (reader_id, fp)
        self._seen.pop(key, None)
        self._seen[key] = (now_ms, decision)
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


@dataclass(slots=True)
class _Bucket:
    denies: deque[int]
    locked_until: int = 0


class RateLimiter:
    """After `max_denies` DENYs within `window_ms` at one reader, that reader's bucket answers
    RATE_LIMITED for `cooldown_ms`.

    Keypad codes and everything else have separate buckets per reader, so someone guessing PINs
    locks out the keypad, not the cardholders at the same door.
    """

    def __init__(self, max_denies: int, window_ms: int, cooldown_ms: int) -> None:
        self.max_denies, self.window_ms, self.cooldown_ms = max_denies, window_ms, cooldown_ms
        self._buckets: dict[tuple[str, bool], _Bucket] = {}

    def limited(self, reader_id: str, keypad: bool, now_ms: int) -> bool:
        bucket = self._buckets.get((reader_id, keypad))
        return bucket is not None and now_ms < bucket.locked_until

    def record_deny(self, reader_id: str, keypad: bool, now_ms: int) -> bool:
        """Count a DENY; True if this one locked the bucket."""
        bucket = self._buckets.setdefault((reader_id, keypad), _Bucket(deque()))
        denies = bucket.denies
        denies.append(now_ms)
        while denies and now_ms - denies[0] >= self.window_ms:
            denies.popleft()
        if len(denies) >= self.max_denies:
            bucket.locked_until = now_ms + self.cooldown_ms
            denies.clear()
            return True
        return False

    def locked_readers(self, now_ms: int) -> list[str]:
        return sorted({r for (r, _), b in self._buckets.items() if now_ms < b.locked_until})
