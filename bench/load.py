"""Scan-to-relay latency and "nothing dropped" under load, through a real daemon process.

A real `python -m bridge.cli run` with N serial readers on N pseudo-terminals (one door and one
relay per reader, mock GPIO) and a grant cache built through the real bundle path (BundleWriter →
signed file → apply_file). This process writes scans to the pty masters at a target total rate:
valid cards, credential JWTs and visitor invites (GRANT), unknown cards, cards at the wrong door,
revoked and expired grants (DENY) and malformed scans. Credentials are cycled through pools large
enough that a credential comes back to a reader only after the replay window, so replay
suppression does not hide work (malformed scans are the exception: their fingerprint names only
the kind of garbage, so repeats within 2 s are replays, as they would be at a real door).

Figures come from the daemon's own JSON log (`decision … latency_ms`, measured from the moment the
serial thread framed the line to after the relay pulse) and from its audit DB after a clean stop:
every scan written must be there exactly once, with the decision the grant cache implies.

The rate limiter is set out of reach (`rate_limit_denies`): with 30 % denials per reader a real
limiter would turn most scans into cheap RATE_LIMITED answers and time a shortcut. Its book-keeping
still runs on every decision.

Prints figures, then one JSON object as the last line. Not a test: nothing here asserts
(tests/integration/test_load.py runs the same harness at CI size and asserts correctness).

    python bench/load.py                              # 8 readers, 1,000 scans/s for 60 s
    python bench/load.py --rate 200 --seconds 10 --latencies /tmp/lat.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.state.outbox import Outbox
from bridge.service.status_socket import StatusUnavailable, fetch_status
from verifier.bundle import BundleWriter, apply_file, public_key_text
from verifier.cache import GrantCache
from verifier.credentials import parse
from bridge.state import files as state_files
from verifier.types import fingerprint

# BCM pins for the relays, one door per reader (MockFactory accepts any of these).
RELAY_PINS = (5, 6, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27)
REPLAY_WINDOW_S = 2.0
GRANT = "GRANT"

# What a scan is, how often it occurs, and what the cache must answer.
MIX: tuple[tuple[str, float], ...] = (
    ("card", 0.45), ("jwt", 0.12), ("invite", 0.08), ("unknown_card", 0.10), ("wrong_door", 0.05),
    ("revoked", 0.05), ("expired", 0.05), ("malformed", 0.10),
)
EXPECT = {"card": GRANT, "jwt": GRANT, "invite": GRANT, "unknown_card": "NO_GRANT", "wrong_door": "NO_GRANT",
          "revoked": "GRANT_REVOKED", "expired": "OUT_OF_DATE_WINDOW", "malformed": "MALFORMED_CREDENTIAL"}
# Garbage a scanner really produces: misreads, truncated links, binary noise. No CR/LF inside.
MALFORMED = (b"hello world!", b"vis_short", b"eyJub3Q.json.x", b"\x01\x02\x03abc", b"\xff\xfe\xfd",
             b"https://example.com/not-a-credential", b"https://id.example/verify.php?token=", b"ZZZZ-????")


@dataclass(frozen=True)
class LoadSettings:
    rate: float = 1000.0
    seconds: float = 60.0
    readers: int = 8
    grants: int = 10_000
    seed: int = 7
    # Where state, config and the daemon's log live; a temporary directory (removed) if None.
    work_dir: Path | None = None
    # Waiting for the daemon to finish its backlog ends after this long without a new decision.
    drain_stall_s: float = 20.0
    pulse_s: float = 0.2
    # Metrics (scraped over HTTP every `scrape_s`) and MQTT (to a real mosquitto, with a subscriber)
    # on: the acceptance of issue 18 compares p99 with and without them. `observe_only` turns on
    # one of the two ("metrics" or "mqtt"), to tell their costs apart.
    observe: bool = False
    observe_only: str | None = None
    scrape_s: float = 1.0


@dataclass(frozen=True)
class PlannedScan:
    reader: int
    raw: bytes
    fingerprint: str
    kind: str


@dataclass
class LoadResult:
    settings: LoadSettings
    sent: int = 0
    send_s: float = 0.0
    decided_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    # (reader id, fingerprint) multisets: what was written, what the log decided, what the audit holds.
    sent_keys: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    logged_keys: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    audited_keys: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    expected: dict[tuple[str, str], str] = field(default_factory=dict)
    wrong_decisions: int = 0
    granted: int = 0
    pulsed: int = 0
    replays: int = 0
    replays_not_malformed: int = 0
    planned_grants: int = 0
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_peak_mb: float = 0.0
    status: dict[str, Any] | None = None
    status_error: str | None = None
    exit_code: int | None = None
    outbox_append_ms: float = 0.0
    state_fs: str = "?"
    log_tail: str = ""
    observed: dict[str, Any] | None = None

    @property
    def dropped(self) -> int:
        return sum((self.sent_keys - self.audited_keys).values())

    @property
    def duplicated(self) -> int:
        return sum((self.audited_keys - self.sent_keys).values())

    @property
    def decided(self) -> int:
        return sum(self.logged_keys.values())

    def summary(self) -> dict[str, Any]:
        s = self.settings
        lat = self.latencies_ms
        return {
            "scans": self.sent, "target_rate": s.rate,
            "rate": round(self.decided / self.decided_s, 1) if self.decided_s else 0.0,
            "send_rate": round(self.sent / self.send_s, 1) if self.send_s else 0.0,
            "readers": s.readers, "grants": s.grants,
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(pct(lat, 99), 2) if lat else None,
            "max_ms": round(max(lat), 2) if lat else None,
            "e2e_p50_ms": round(statistics.median(self.e2e_ms), 2) if self.e2e_ms else None,
            "e2e_p99_ms": round(pct(self.e2e_ms, 99), 2) if self.e2e_ms else None,
            "cpu_percent": round(100 * self.cpu_s / self.decided_s, 1) if self.decided_s else None,
            # The daemon's user+system CPU per decided scan: what a scan costs, whatever else runs.
            "cpu_us_per_scan": round(1e6 * self.cpu_s / self.decided) if self.decided else None,
            # Its children's (the MQTT publisher, the metrics exposition, a download or apply): a Pi
            # pays for them on the same cores, so the A/B compares the sum.
            "children_cpu_us_per_scan": round(1e6 * self.children_cpu_s / self.decided) if self.decided else None,
            "total_cpu_us_per_scan": round(1e6 * (self.cpu_s + self.children_cpu_s) / self.decided)
            if self.decided else None,
            "rss_mb": round(self.rss_peak_mb, 1), "rss_start_mb": round(self.rss_start_mb, 1),
            "dropped": self.dropped, "duplicated": self.duplicated, "decided": self.decided,
            "wrong_decisions": self.wrong_decisions, "granted": self.granted, "pulsed": self.pulsed,
            "replays": self.replays, "drain_s": round(max(0.0, self.decided_s - self.send_s), 1),
            "outbox_append_ms": round(self.outbox_append_ms, 2), "state_fs": self.state_fs,
            "healthy": self.status is not None and self.exit_code == 0,
            "observe": (s.observe_only or "both") if s.observe else False,
            "scrape_s": s.scrape_s if s.observe else None, "observed": self.observed,
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def reader_id(i: int) -> str:
    return f"LOAD-R{i}"


# --- the site ------------------------------------------------------------------------------------


@dataclass
class Pools:
    """Per reader (= per zone), the credentials of each kind, cycled by the planner."""

    by_kind: dict[str, list[list[bytes]]]


def build_site(state: Path, settings: LoadSettings, key: Ed25519PrivateKey) -> Pools:
    """Writes and applies a signed full bundle of `grants` holders; returns their credentials.

    Holder i belongs to zone i % readers. Per 10 holders: 5 with a valid card, one with a card
    but a revoked grant, one with a card outside its validity window, two carrying a credential
    JWT and one visitor invite.
    """
    n, readers = settings.grants, settings.readers
    now = datetime.now(UTC)
    cred_key = Ed25519PrivateKey.generate()
    w = BundleWriter(version=1, issued_at=now, not_after=now + timedelta(days=7))
    for z in range(readers):
        w.add({"type": "zone", "id": f"zone_{z}", "name": f"Door {z}", "readers": [reader_id(z)]})
    w.add({"type": "key", "kid": "load", "jwk": json.loads(OKPAlgorithm.to_jwk(cred_key.public_key()))})
    pools: dict[str, list[list[bytes]]] = {k: [[] for _ in range(readers)] for k in ("card", "revoked", "expired", "jwt", "invite")}
    far, past = iso(now + timedelta(days=365)), iso(now - timedelta(days=2))
    exp = int((now + timedelta(days=1)).timestamp())
    for i in range(n):
        z, kind = i % readers, i % 10
        if kind == 9:
            code = f"vis_load{i:020d}"
            w.add({"type": "visitor", "inviteCode": code, "zoneIds": [f"zone_{z}"],
                   "validFrom": iso(now - timedelta(days=1)), "validUntil": far})
            pools["invite"][z].append(code.encode())
            continue
        user = f"user_{i}"
        w.add({"type": "user", "id": user, "name": f"Holder {i}"})
        w.add({"type": "grant", "id": f"g{i}", "userId": user, "zoneId": f"zone_{z}", "endsAt": far,
               "revoked": kind == 5})
        if kind in (7, 8):
            token = jwt.encode({"sub": user, "exp": exp}, cred_key, algorithm="EdDSA", headers={"kid": "load"})
            pools["jwt"][z].append(token.encode())
            continue
        number = f"{0x6B06C2A25E000000 + i:016X}"
        card: dict[str, Any] = {"type": "card", "number": number, "userId": user}
        if kind == 6:
            card.update(start_at=iso(now - timedelta(days=30)), end_at=past)
        w.add(card)
        pools["revoked" if kind == 5 else "expired" if kind == 6 else "card"][z].append(number.encode())
    bundle = state / "full.bundle"
    w.write_file(key, bundle)
    cache = GrantCache(state / "grants.db")
    try:
        apply_file(cache.conn, bundle, key.public_key())
    finally:
        cache.close()
    bundle.unlink()
    return Pools(pools)


def plan(pools: Pools, settings: LoadSettings, fp_key: bytes) -> list[PlannedScan]:
    """The scan sequence: reader i % N, kind drawn from MIX, credentials cycled per reader."""
    rng = random.Random(settings.seed)
    total = int(settings.rate * settings.seconds)
    kinds, weights = zip(*MIX)
    cursor: collections.Counter[tuple[str, int]] = collections.Counter()
    unknown = 0
    out: list[PlannedScan] = []
    for i in range(total):
        r = i % settings.readers
        kind = rng.choices(kinds, weights)[0]
        if kind == "unknown_card":
            unknown += 1
            raw = f"{0xDEAD00000000 + unknown:012X}".encode()
        elif kind == "malformed":
            raw = rng.choice(MALFORMED)
        else:
            source_kind, zone = ("card", (r + 1) % settings.readers) if kind == "wrong_door" else (kind, r)
            pool = pools.by_kind[source_kind][zone]
            if not pool or (kind == "wrong_door" and settings.readers < 2):
                kind, unknown = "unknown_card", unknown + 1
                raw = f"{0xDEAD00000000 + unknown:012X}".encode()
            else:
                raw = pool[cursor[(kind, r)] % len(pool)]
                cursor[(kind, r)] += 1
        out.append(PlannedScan(r, raw, fingerprint(parse(raw), fp_key), kind))
    return out


# --- the daemon ----------------------------------------------------------------------------------


class PtyPair:
    """A pseudo-terminal: the daemon opens `path` as its serial port; we write to `master`."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        os.close(slave)

    def close(self) -> None:
        os.close(self.master)


def write_config(path: Path, state: Path, key: Ed25519PrivateKey, ptys: list[PtyPair], settings: LoadSettings,
                 observe: "Observers | None" = None) -> None:
    lines = [
        "[bridge]", 'id = "BRIDGE-LOAD"', f'state_dir = "{state}"', 'mode = "local-only"', 'log_format = "json"',
        "[cache]", f'public_key = "{public_key_text(key.public_key())}"', 'staleness = "warn"',
        "[policy]", "rate_limit_denies = 1000000000",
        "[gpio]", 'pin_factory = "mock"',
    ]
    for i in range(len(ptys)):
        lines += [f"[doors.door{i}]", f"relay_pin = {RELAY_PINS[i]}", f"pulse_s = {settings.pulse_s}"]
    for i, p in enumerate(ptys):
        lines += ["[[readers]]", 'type = "serial"', f'id = "{reader_id(i)}"', f'door = "door{i}"',
                  f'port = "{p.path}"', "baudrate = 115200", "reconnect_s = 0.2"]
    if observe is not None and settings.observe_only != "mqtt":
        lines += ["[metrics]", "http = true", f"port = {observe.metrics_port}"]
    if observe is not None and settings.observe_only != "metrics":
        lines += ["[mqtt]", "enabled = true", f"port = {observe.broker.port}", "queue_size = 10000"]
    path.write_text("\n".join(lines) + "\n")


class LogTail:
    """Reads the daemon's JSON log incrementally; decisions are kept, other lines counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.decisions: list[dict[str, Any]] = []
        self.events: collections.Counter[str] = collections.Counter()
        self.readers_connected: set[str] = set()

    def poll(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        before = len(self.decisions)
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                self.events["<not json>"] += 1
                continue
            name = entry.get("event", "?")
            self.events[name] += 1
            if name == "decision":
                self.decisions.append(entry)
            elif name == "reader_connected":
                self.readers_connected.add(entry.get("reader", ""))
        return len(self.decisions) - before

    def tail(self, chars: int = 3000) -> str:
        return self.path.read_text(errors="replace")[-chars:]


class DaemonProcess:
    def __init__(self, work: Path, config: Path) -> None:
        self.log_path = work / "daemon.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the daemon writes it until stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "RUNTIME_DIRECTORY"):
            env.pop(name, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(config)],
                                     cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.proc.pid)
        self.tail = LogTail(self.log_path)

    def wait_ready(self, readers: list[str], events: tuple[str, ...] = (), timeout: float = 60.0) -> None:
        """Until READY, every reader connected and each of `events` logged once."""
        deadline = time.monotonic() + timeout
        while not (self.tail.events["started"] and self.tail.readers_connected >= set(readers)
                   and all(self.tail.events[e] for e in events)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready (exit {self.proc.poll()}):\n{self.tail.tail()}")
            time.sleep(0.05)
            self.tail.poll()

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def children_cpu(self) -> dict[int, float]:
        """User+system CPU of each live child process, by pid: the daemon's niced helpers run
        beside it, and `cpu_s` (the daemon's own) does not see them."""
        out: dict[int, float] = {}
        for child in self.ps.children(recursive=True):
            try:
                t = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            out[child.pid] = float(t.user + t.system)
        return out

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 2**20

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._log.close()
        self.tail.poll()
        return code


# --- measuring -----------------------------------------------------------------------------------


def probe_outbox_append(directory: Path, n: int = 200) -> float:
    """Median ms of one fsync'd audit append on the state dir's filesystem: the daemon's ceiling."""
    directory.mkdir(parents=True, exist_ok=True)
    outbox = Outbox(directory / "probe.db")
    times = []
    try:
        for i in range(n):
            t = time.perf_counter()
            outbox.append("VERIFY", {"probe": i, "credentialFingerprint": "card:00000000"})
            times.append((time.perf_counter() - t) * 1000)
    finally:
        outbox.close()
        shutil.rmtree(directory, ignore_errors=True)
    return statistics.median(times)


def filesystem_of(path: Path) -> str:
    best = ("", "?")
    resolved = str(path.resolve())
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") + "/"
        if (resolved + "/").startswith(mount) and len(mount) > len(best[0]):
            best = (mount, part.fstype)
    return best[1]


def send(daemon: DaemonProcess, ptys: list[PtyPair], scans: list[PlannedScan], rate: float,
         result: LoadResult) -> list[float]:
    """Paced writes to the pty masters; returns each scan's send wall time. Polls the log as it goes."""
    sent_at = [0.0] * len(scans)
    start = time.monotonic()
    next_sample = start
    i = 0
    while i < len(scans):
        due = min(len(scans), int((time.monotonic() - start) * rate) + 1)
        batches: dict[int, list[bytes]] = collections.defaultdict(list)
        first = i
        while i < due:
            batches[scans[i].reader].append(scans[i].raw + b"\r\n")
            i += 1
        now_wall = time.time()
        for reader, lines in batches.items():
            os.write(ptys[reader].master, b"".join(lines))
        for k in range(first, i):
            sent_at[k] = now_wall
        if time.monotonic() >= next_sample:
            result.rss_peak_mb = max(result.rss_peak_mb, daemon.rss_mb())
            daemon.tail.poll()
            next_sample += 0.5
        time.sleep(max(0.0, min(0.005, start + i / rate - time.monotonic())))
    result.send_s = time.monotonic() - start
    return sent_at


def drain(daemon: DaemonProcess, expected: int, stall_s: float, result: LoadResult) -> float:
    """Wait for the backlog; returns the monotonic time the last decision was seen."""
    last_progress = time.monotonic()
    while len(daemon.tail.decisions) < expected and daemon.proc.poll() is None:
        if daemon.tail.poll():
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            break
        result.rss_peak_mb = max(result.rss_peak_mb, daemon.rss_mb())
        time.sleep(0.02)
    return last_progress


def read_audit(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [json.loads(row[0]) for row in conn.execute("SELECT body FROM events WHERE type = 'VERIFY' ORDER BY seq")]


def account(result: LoadResult, scans: list[PlannedScan], sent_at: list[float], decisions: list[dict[str, Any]],
            audit: list[dict[str, Any]]) -> None:
    pending: dict[tuple[str, str], collections.deque[float]] = collections.defaultdict(collections.deque)
    for scan, at in zip(scans, sent_at):
        key = (reader_id(scan.reader), scan.fingerprint)
        result.sent_keys[key] += 1
        result.expected[key] = EXPECT[scan.kind]
        result.planned_grants += EXPECT[scan.kind] == GRANT
        pending[key].append(at)
    for d in decisions:
        key = (d.get("reader", ""), d.get("cred", ""))
        result.logged_keys[key] += 1
        result.latencies_ms.append(float(d["latency_ms"]))
        result.pulsed += d.get("relay") == "pulsed"
        if d.get("replay"):
            result.replays += 1
            result.replays_not_malformed += not str(d.get("cred", "")).startswith("malformed:")
        if pending.get(key) and "timestamp" in d:
            logged = datetime.fromisoformat(d["timestamp"]).timestamp()
            result.e2e_ms.append((logged - pending[key].popleft()) * 1000)
    for row in audit:
        key = (row.get("readerId", ""), row.get("credentialFingerprint", ""))
        result.audited_keys[key] += 1
        outcome = row.get("decision") if row.get("decision") == GRANT else row.get("reason")
        result.granted += outcome == GRANT and not row.get("replay")
        result.wrong_decisions += key in result.expected and outcome != result.expected[key]


def helpers_up(settings: LoadSettings) -> tuple[str, ...]:
    """The log lines that say the outward helpers are up. The daemon says READY before its
    metrics and MQTT processes have imported their libraries and connected (0.3-0.6 s after it,
    niced, on these two cores: they must never hold READY back for a broker), so a load started
    at READY put their start into the first ~600 scans of a 1,000/s run, 4 % of a 15 s run: the
    "on" arm's p99 then measured the helpers' start, not what they cost while running. The
    start-up bench (bench/startup.py) is where a start is measured."""
    if not settings.observe:
        return ()
    return {"metrics": ("metrics_listening",), "mqtt": ("mqtt_connected",)}.get(
        settings.observe_only or "", ("metrics_listening", "mqtt_connected"))


def children_cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the children spent between two snapshots; a child born in between counts from
    zero. One that ended in between is not seen (its CPU went with it): the daemon's helpers live
    for the whole run unless one is killed."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def as_other_machine(pid: int) -> None:
    """The observers stand for other machines (the broker's host, the building system,
    Prometheus): here they share the daemon's 2 cores. Niced 10 they still took CPU from it at every
    wake-up (1,000/s p50 2.15 → 6.84 ms at the same daemon CPU per scan, bench/results/
    observe_ab_pooled.txt), so the "on" arm measured the observers. SCHED_IDLE runs them only on
    a core nothing else wants, which is what a second machine's cost to the Pi is: none. The
    daemon's own helpers (MQTT publisher, metrics exposition) keep their real priority and count
    in total_cpu_us_per_scan."""
    os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))


def _observe(port: int, topic: str, metrics_port: int, scrape_s: float, ready: Any, stop: Any, out: Any) -> None:
    """The building system's subscriber and the Prometheus-like scraper, in a process of their
    own: paho's per-message bytecode and httpx's per-scrape work (a new connection, the text)
    sharing the load generator's GIL bunched up the scans it paces, which put the bench's own
    cost into the "on" arm."""
    from types import SimpleNamespace

    import httpx

    from tests.support.mqtt_broker import Listener

    as_other_machine(0)
    listener = Listener(SimpleNamespace(port=port), topic)  # type: ignore[arg-type]
    ready.set()
    scrapes, last = 0, ""
    while not stop.wait(scrape_s):
        try:
            last = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            scrapes += 1
        except httpx.HTTPError:
            pass
    drain_subscriber(lambda: len(listener.messages), published_in(last))
    listener.close()
    out.put((len(listener.messages), scrapes, last))


def mqtt_samples(exposition: str) -> dict[str, float]:
    """The door_bridge_mqtt_* samples of a /metrics text, by name."""
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name: s.value for f in text_string_to_metric_families(exposition) for s in f.samples
            if s.name.startswith("door_bridge_mqtt_")}


def published_in(exposition: str) -> int | None:
    """door_bridge_mqtt_published_total in a /metrics text, None if it is not there."""
    value = mqtt_samples(exposition).get("door_bridge_mqtt_published_total")
    return None if value is None else int(value)


def drain_subscriber(received: Callable[[], int], expected: int | None, quiet_s: float = 1.0, limit_s: float = 15.0,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> int:
    """Wait for the subscriber to have what the daemon published, before counting it.

    Under SCHED_IDLE the subscriber can lag the broker, and it was closed as soon as the run
    ended. It now waits until it has `expected` (the last scrape's published count), or until
    nothing arrived for `quiet_s` (nothing more is coming), at most `limit_s`."""
    start = last_change = clock()
    seen = received()
    while (expected is None or seen < expected) and clock() - last_change < quiet_s and clock() - start < limit_s:
        sleep(0.05)
        now_seen = received()
        if now_seen != seen:
            seen, last_change = now_seen, clock()
    return seen


class Observers:
    """A real mosquitto, and one process holding a subscriber that counts what arrives and a
    Prometheus-like scraper fetching /metrics every `scrape_s` (1 s: a worst case; Prometheus's
    usual is 15 s): the outward tools doing real work during the run."""

    def __init__(self, work: Path, scrape_s: float = 1.0) -> None:
        import multiprocessing

        from tests.support.mqtt_broker import Broker, free_port

        self.broker = Broker(work / "broker", verbose=False).start()  # another machine's log, not our disk's
        assert self.broker.proc is not None
        as_other_machine(self.broker.proc.pid)
        self.metrics_port = free_port()
        self.scrape_s = scrape_s
        self.scrapes = 0
        self.last_scrape = ""
        self._mp = multiprocessing.get_context("spawn")
        self._stop = self._mp.Event()
        self._out = self._mp.Queue()
        self._observer: Any = None
        self.received: int | None = None

    def start(self) -> None:
        ready = self._mp.Event()
        self._observer = self._mp.Process(target=_observe, daemon=True, args=(
            self.broker.port, "door-bridge/#", self.metrics_port, self.scrape_s, ready, self._stop, self._out))
        self._observer.start()
        if not ready.wait(20):
            raise RuntimeError("the observer process did not subscribe")

    def _finish(self) -> None:
        if self.received is None and self._observer is not None:
            self._stop.set()
            self.received, self.scrapes, self.last_scrape = self._out.get(timeout=30)
            self._observer.join(10)

    def figures(self) -> dict[str, Any]:
        self._finish()
        values = mqtt_samples(self.last_scrape)
        return {"scrapes": self.scrapes, "mqtt_received": self.received,
                "mqtt_published": values.get("door_bridge_mqtt_published_total"),
                "mqtt_dropped": values.get("door_bridge_mqtt_dropped_total")}

    def close(self) -> None:
        if self._observer is not None and self._observer.is_alive():
            self._stop.set()
            self._observer.join(10)
        self.broker.kill()


def run_load(settings: LoadSettings) -> LoadResult:
    """The whole run: site, daemon, paced scans, drain, status, clean stop, audit check."""
    if not 1 <= settings.readers <= len(RELAY_PINS):
        raise ValueError(f"--readers must be 1..{len(RELAY_PINS)}")
    owned = settings.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="door-bridge-load-")) if owned else settings.work_dir
    assert work is not None
    state = work / "state"
    state.mkdir(parents=True, exist_ok=True)
    result = LoadResult(settings)
    ptys = [PtyPair() for _ in range(settings.readers)]
    daemon: DaemonProcess | None = None
    observers: Observers | None = None
    try:
        if settings.observe:
            observers = Observers(work, settings.scrape_s)
        key = Ed25519PrivateKey.generate()
        pools = build_site(state, settings, key)
        # The daemon's own key source (state_dir/fingerprint.key), so planned fingerprints match its lines.
        scans = plan(pools, settings, state_files.fingerprint_key(state))
        result.outbox_append_ms = probe_outbox_append(work / "probe")
        result.state_fs = filesystem_of(state)
        config = work / "load.toml"
        write_config(config, state, key, ptys, settings, observers)
        if observers is not None:
            # Subscribed before the daemon starts: its publisher sends each door's position and
            # alarm (not retained) as soon as it connects, and a subscriber that came after READY
            # missed them (15-23 messages fewer than published in 6 of 30 runs).
            observers.start()
        daemon = DaemonProcess(work, config)
        daemon.wait_ready([reader_id(i) for i in range(settings.readers)], helpers_up(settings))
        result.rss_start_mb = result.rss_peak_mb = daemon.rss_mb()
        cpu0, children0, t0 = daemon.cpu_s(), daemon.children_cpu(), time.monotonic()
        sent_at = send(daemon, ptys, scans, settings.rate, result)
        result.sent = len(scans)
        last_decision = drain(daemon, len(scans), settings.drain_stall_s, result)
        result.cpu_s = daemon.cpu_s() - cpu0
        result.children_cpu_s = children_cpu_spent(children0, daemon.children_cpu())
        result.decided_s = max(last_decision, t0 + result.send_s) - t0
        try:
            result.status = fetch_status(state / "status.sock")
        except StatusUnavailable as e:
            result.status_error = str(e)
        if observers is not None:
            time.sleep(observers.scrape_s + 0.5)  # one more scrape after the last decision
            result.observed = observers.figures()
        result.exit_code = daemon.stop()
        daemon.tail.poll()
        result.log_tail = daemon.tail.tail()
        account(result, scans, sent_at, daemon.tail.decisions, read_audit(state / "audit.db"))
        return result
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait(10)
        for p in ptys:
            p.close()
        if observers is not None:
            observers.close()
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def write_latencies(path: Path, result: LoadResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result.settings).items()}
    path.write_text(json.dumps({"settings": settings, "summary": result.summary(),
                                "scan_to_relay_ms": result.latencies_ms, "e2e_ms": result.e2e_ms}))


def describe(result: LoadResult) -> Iterator[str]:
    s = result.summary()
    yield (f"sent {s['scans']} scans to {s['readers']} readers at {s['send_rate']}/s (target {s['target_rate']}/s); "
           f"decided {s['decided']} at {s['rate']}/s; drain after the last write {s['drain_s']} s")
    yield (f"scan-to-relay (daemon's latency_ms): p50 {s['p50_ms']} ms  p99 {s['p99_ms']} ms  max {s['max_ms']} ms; "
           f"pty write to decision logged: p50 {s['e2e_p50_ms']} ms  p99 {s['e2e_p99_ms']} ms")
    yield f"daemon CPU {s['cpu_percent']} % of one core ({s['cpu_us_per_scan']} µs per scan); RSS {s['rss_start_mb']} MB at start, {s['rss_mb']} MB peak"
    yield (f"audit: dropped {s['dropped']}, duplicated {s['duplicated']}, wrong decisions {s['wrong_decisions']}; "
           f"granted {s['granted']} of {result.planned_grants} planned, relay pulses {s['pulsed']}, replays {s['replays']}")
    ceiling = 1000 / result.outbox_append_ms if result.outbox_append_ms else 0
    yield (f"one fsync'd audit append on {s['state_fs']}: {s['outbox_append_ms']} ms (median) → at most "
           f"~{ceiling:.0f} decisions/s from the outbox alone")
    if s["rate"] < 0.95 * s["target_rate"]:
        yield ("NOT KEEPING UP: the decision worker commits one fsync'd audit row per scan before the relay moves; "
               "scans queue behind it and latency grows with the backlog")
    if not s["healthy"]:
        yield f"daemon unhealthy: status {result.status_error or 'ok'}, exit code {result.exit_code}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="total scans per second over all readers")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--grants", type=int, default=10_000, help="holders in the grant cache")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work-dir", type=Path, help="keep state, config and daemon log here (default: a temp dir, removed)")
    ap.add_argument("--latencies", type=Path, help="write the raw latencies (JSON) here, for bench/report.py")
    ap.add_argument("--observe", nargs="?", const="both", choices=("both", "metrics", "mqtt"),
                    help="metrics on (scraped every --scrape-s) and MQTT on (a real mosquitto, needs the Debian "
                         "package); 'metrics' or 'mqtt' turns on only that one")
    ap.add_argument("--scrape-s", type=float, default=1.0,
                    help="with --observe: seconds between two scrapes of /metrics (1: worst case; Prometheus: 15)")
    args = ap.parse_args()
    settings = LoadSettings(rate=args.rate, seconds=args.seconds, readers=args.readers, grants=args.grants,
                            seed=args.seed, work_dir=args.work_dir, observe=args.observe is not None,
                            observe_only=None if args.observe in (None, "both") else args.observe,
                            scrape_s=args.scrape_s)
    result = run_load(settings)
    for line in describe(result):
        print(line, file=sys.stderr)
    if args.latencies:
        write_latencies(args.latencies, result)
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
