"""The learned offline cache at N entries: memory, fill rate and decision latency offline.

Fills `learned.db` through the real path (`LearnedCache.observe` with online GRANT decisions, one
sealed SQLite row each), reopens it as a restarted daemon would (start-up sweep: every seal
checked), then times `Verifier.decide` for a mix of learned cards (GRANT via the learned path),
learned credential JWTs, and unknown cards (the look-up misses) with no signed bundle at all —
exactly a Frontelio/SNA site with the WAN down. Prints figures on stderr, one JSON object as the
last line. Not a test: nothing here asserts.

    python bench/learned.py                    # 100,000 entries, 20,000 decisions
    python bench/learned.py --entries 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.state.learned import LearnedCache, load_secret  # noqa: E402
from bridge.config.offline import OfflineSection  # noqa: E402
from verifier.cache import GrantCache  # noqa: E402
from verifier.credentials import parse  # noqa: E402
from verifier.decide import Policy, Verifier  # noqa: E402
from verifier.types import AccessDecision, Decision, Source  # noqa: E402

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
READER = "BRIDGE-1"


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


def card(i: int) -> str:
    return f"{i:014X}"


def token(i: int) -> str:
    return jwt.encode({"sub": f"user_{i}", "exp": int((NOW + timedelta(hours=20)).timestamp())},
                      "frontelio-side-secret-32-bytes!!", algorithm="HS256")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--decisions", type=int, default=20_000)
    ap.add_argument("--work-dir", type=Path)
    args = ap.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-learned-"))
    work.mkdir(parents=True, exist_ok=True)
    section = OfflineSection(max_entries=args.entries + 10)
    secret = load_secret(work, section)
    gc.collect()
    rss0 = rss_mb()

    cache = LearnedCache(work, section, secret=secret)
    jwts = max(1, args.entries // 10)
    tokens = [token(i) for i in range(jwts)]
    t0 = time.perf_counter()
    for i in range(args.entries):
        if i < jwts:
            cred, source = parse(tokens[i].encode()), Source.PHONE_NFC
        else:
            cred, source = parse(card(i).encode()), Source.CARD
        d = AccessDecision(Decision.GRANT, None, READER, source, user_id=f"user_{i}", user_name="Layla Hassan",
                           zone_name="Stockroom", online=True, credential_kind=cred.kind)
        cache.observe("frontelio", cred, d, [READER], NOW)
    fill_s = time.perf_counter() - t0
    cache.close()
    db_mb = sum(p.stat().st_size for p in work.glob("learned.db*")) / 1e6

    t0 = time.perf_counter()
    cache = LearnedCache(work, section, secret=secret)
    swept = cache.sweep(NOW)
    sweep_s = time.perf_counter() - t0
    grants = GrantCache(work / "grants.db")  # empty: no signed bundle, as on a Frontelio/SNA site
    verifier = Verifier(grants, Policy(replay_window_s=0), learned=cache.recall)

    rng = random.Random(7)
    lat: dict[str, list[float]] = {"learned_card": [], "learned_jwt": [], "unknown_card": []}
    now = NOW + timedelta(hours=1)
    for n in range(args.decisions):
        r = rng.random()
        if r < 0.6:
            kind, raw, source = "learned_card", card(rng.randrange(jwts, args.entries)), Source.CARD
        elif r < 0.8:
            kind, raw, source = "learned_jwt", tokens[rng.randrange(jwts)], Source.PHONE_NFC
        else:
            kind, raw, source = "unknown_card", card(args.entries + rng.randrange(10**9)), Source.CARD
        now += timedelta(milliseconds=100)  # 20,000 decisions span ~33 min: inside max_age
        t = time.perf_counter()
        d = verifier.decide(parse(raw.encode()), READER, source, now)
        lat[kind].append((time.perf_counter() - t) * 1000)
        if (kind == "unknown_card") == d.granted:
            raise SystemExit(f"unexpected decision {d.decision} {d.reason} for {kind}")
    rss1 = rss_mb()

    def pct(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=1000)[int(q * 10) - 1], 3) if len(values) > 10 else float("nan")

    everything = [v for vs in lat.values() for v in vs]
    result = {
        "entries": args.entries, "decisions": args.decisions, "fill_per_s": round(args.entries / fill_s),
        "sweep_s": round(sweep_s, 2), "refused": swept.refused, "db_mb": round(db_mb, 1),
        "rss_start_mb": round(rss0, 1), "rss_mb": round(rss1, 1), "rss_delta_mb": round(rss1 - rss0, 1),
        "p50_ms": pct(everything, 50), "p99_ms": pct(everything, 99), "max_ms": round(max(everything), 3),
        **{f"{k}_p99_ms": pct(v, 99) for k, v in lat.items()},
    }
    for k, v in result.items():
        print(f"{k:>20}: {v}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
