"""Door-mode gate cost, A/B in one process: the same card decisions on the same --schedules cache,
alternating a Verifier without modes and one with them (Europe/Berlin), so machine load hits both
alike. Prints p50/p99 in µs. Not a test.

    python bench/modes_ab.py 1000000
"""
import random
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo
sys.path.insert(0, str(Path(__file__).resolve().parent.parent)); sys.path.insert(0, str(Path(__file__).resolve().parent))
import decide as b
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from verifier.cache import GrantCache
from verifier.decide import Policy, Verifier
from verifier.door_mode import ModeSettings
from verifier.credentials import parse
from verifier.types import Source
from datetime import timedelta
n = int(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    k, c = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    b.build(Path(tmp), n, b._raw(k), b._raw(c), True)
    cache = GrantCache(Path(tmp) / "grants.db")
    off = Verifier(cache, Policy(rate_limit_denies=10**9))
    on = Verifier(cache, Policy(rate_limit_denies=10**9), modes=ModeSettings(ZoneInfo("Europe/Berlin")))
    rng = random.Random(1); lat = {"off": [], "on": []}; now = b.NOW
    for j in range(60000):
        i = rng.randrange(n); i -= i % 5
        raw = b.card_number(i).encode(); r = f"R{i % b.ZONES}"
        now += timedelta(seconds=2.5)
        for name, v in (("off", off), ("on", on)) if j % 2 else (("on", on), ("off", off)):
            t = time.perf_counter_ns(); v.decide(parse(raw), r, Source.CARD, now); lat[name].append((time.perf_counter_ns() - t) / 1000)
    for name, vs in lat.items():
        print(name, "p50", round(b.pct(vs, 50), 1), "p99", round(b.pct(vs, 99), 1))
