"""What the door knows about itself: upstream state, staleness, counters, and the views built on them.

One owner for every figure `door-bridge status`, STATUS= and the metrics show, so the journal
line, the status JSON and the LED that winks offline can never disagree. The scan pipeline, the
reader supervisor and the heartbeats report into it; nothing here moves a relay or writes SQL
(the storage figures come from the stores' own read-only helpers, off the event loop).
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

import structlog

from bridge import __version__
from bridge.service.clock_watch import Clock, ClockWatch, utc_now
from verifier.timeutil import from_ms, iso, iso_seconds

if TYPE_CHECKING:
    from bridge.config import Config
    from bridge.service.parts import Parts
    from bridge.upstream.adapter import UpstreamAdapter
    from bridge.upstream.errors import UpstreamError

log = structlog.get_logger()


@dataclass
class ReaderState:
    type: str = "unknown"
    last_scan_at: str | None = None
    last_decision: str | None = None
    last_reason: str | None = None
    scans: int = 0
    # Reader health (docs/operations.md, "When a reader fails"): set when its input raised or ended,
    # cleared once a retry has run READER_HEALTHY_AFTER_S without failing.
    last_error: str | None = None
    failures: int = 0
    # A supervised reader (OSDP) whose device stopped answering, with what to check; set and
    # cleared by the reader itself (READER_OFFLINE / READER_ONLINE), not by the retry loop.
    offline: str | None = None

    @property
    def failed(self) -> bool:
        return self.last_error is not None or self.offline is not None


@dataclass
class UpstreamSeen:
    online: bool
    last_success: datetime | None = None


@dataclass
class UpstreamState:
    """What the door knows about the central: for logs, STATUS= and `door-bridge status`."""

    configured: bool = False
    online: bool | None = None
    since: datetime | None = None
    last_error: str | None = None
    last_heartbeat: datetime | None = None
    # Per adapter (by its name), for metrics: is it answering, and when did it last.
    by_name: dict[str, UpstreamSeen] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.configured:
            return "none"
        return {True: "online", False: "offline", None: "unknown"}[self.online]


@dataclass
class Stats:
    started_at: datetime = field(default_factory=utc_now)
    decisions: int = 0
    grants: int = 0
    online_decisions: int = 0
    learned_decisions: int = 0
    readers: dict[str, ReaderState] = field(default_factory=dict)


@dataclass
class StorageView:
    """Figures read off SQLite by a background refresher, so the status socket never touches disk."""

    oldest_pending_at: str | None = None
    grants: int = 0
    counted_version: int = -1
    learned: dict[str, dict[str, int | str | None]] = field(default_factory=dict)  # per upstream: entries, oldest


class Health:
    """Upstream state, staleness, stats and the storage view; `status_line`, `report`, `snapshot`."""

    def __init__(self, config: Config, parts: Parts, clock_watch: ClockWatch, clock: Clock,
                 mqtt_status: Callable[[], dict[str, Any] | None],
                 metrics_status: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        self.config = config  # the daemon replaces it on reload
        self.parts = parts
        self.clock_watch = clock_watch
        self.clock = clock
        self._mqtt_status = mqtt_status
        self._metrics_status = metrics_status
        self.stats = Stats(readers={rid: ReaderState(type=kind) for rid, kind in parts.reader_types.items()})
        self.upstream = UpstreamState(configured=bool(parts.adapters) or config.upstream.central is not None)
        self.storage = StorageView()
        self.stale = parts.verifier.is_stale(clock())

    # --- upstream and staleness ------------------------------------------------------------------

    def mark_upstream(self, ok: bool, error: str | None = None, check: str | None = None,
                      name: str | None = None) -> None:
        """Logged on every change: one warning when the upstream is lost, one more whenever the
        cause of failure changes (401 → 500, DNS → refused), one info line when it is back."""
        up = self.upstream
        up.configured = True
        if name is not None:
            seen = up.by_name.setdefault(name, UpstreamSeen(ok))
            seen.online = ok
            if ok:
                seen.last_success = self.clock()
        if ok != up.online:
            self.show_offline(upstream_ok=ok)
        if ok and up.online is not True:
            if up.online is False:
                log.info("upstream_restored", offline_since=up.since.isoformat(timespec="seconds") if up.since else "-")
            up.online, up.since, up.last_error = True, self.clock(), None
        elif not ok:
            check = check or "network/DNS from the Pi, the upstream URL and TLS; decisions continue from the cache"
            if up.online is not False:
                log.warning("upstream_lost", error=error or "-", mode=self.config.bridge.mode, check=check)
                up.online, up.since = False, self.clock()
            elif _cause(error) != _cause(up.last_error):
                log.warning("upstream_error_changed", error=error or "-", previous=up.last_error or "-", check=check)
            up.last_error = error

    def heartbeat_result(self, adapter: UpstreamAdapter, reader_id: str, error: UpstreamError | None) -> None:
        if error is None:
            self.upstream.last_heartbeat = self.clock()
            self.mark_upstream(True, name=adapter.name)
        else:
            self.mark_upstream(False, str(error), check=check_for(error),  # names the heartbeat path
                               name=adapter.name)

    def show_offline(self, upstream_ok: bool | None = None) -> None:
        """Every LED a technician looks at — the door's GPIO LED and the readers' own (OSDP) —
        winks between decisions while the door decides offline: the upstream unreachable *or* the
        cache stale. One rule for both, told at start and on every change of either input."""
        up = self.upstream.online if upstream_ok is None else upstream_ok
        offline = self.stale or up is False
        for monitor in self.parts.door_monitors.values():
            with contextlib.suppress(Exception):
                monitor.set_offline(offline)
        for reader in self.parts.reader_feedback.values():
            with contextlib.suppress(Exception):
                reader.set_offline(offline)

    def note_staleness(self) -> None:
        """On the worker. One warning when the cache goes stale while running (the clock passes the
        bundle's not_after), one info line when a fresh bundle ends it — with either staleness policy."""
        stale = self.parts.verifier.is_stale(self.clock())
        if stale == self.stale:
            return
        self.stale = stale
        self.show_offline()
        meta = self.parts.cache.meta
        if stale:
            log.warning("cache_stale", cache_version=meta.version, not_after=iso(from_ms(meta.not_after_ms)),
                        policy=self.config.cache.staleness,
                        effect="every decision is CACHE_STALE" if self.config.cache.staleness == "deny" else "still deciding",
                        check="is the central reachable (door-bridge status)? is the clock right (timedatectl)?")
        else:
            log.info("cache_fresh", cache_version=meta.version)

    # --- storage figures (off the loop) ------------------------------------------------------------

    def read_storage(self) -> None:
        """Own read-only connections (the stores' helpers): never contends with the decision worker's writers."""
        from bridge.state.outbox import oldest_unsent_at
        from verifier.cache import count_credentials

        view, state_dir = self.storage, self.parts.state_dir
        view.oldest_pending_at = oldest_unsent_at(state_dir / "audit.db")
        version = self.parts.cache.meta.version
        if version != view.counted_version:
            view.grants = count_credentials(state_dir / "grants.db")
            view.counted_version = version
        if self.parts.learned is not None:
            view.learned = {name: {"entries": u.entries, "oldest_learned_at": iso_seconds(from_ms(u.oldest_learned_ms)) if u.oldest_learned_ms is not None else None}
                            for name, u in sorted(self.parts.learned.summary().items())}

    # --- views -------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """What makes this door degraded (docs/operations.md): `status` exits 3 when not ok."""
        readers = self.stats.readers
        failed = sorted(r for r, st in readers.items() if st.failed)
        problems = [f"reader {r} offline: {readers[r].offline}" if readers[r].last_error is None
                    else f"reader {r} failed" for r in failed]
        problems += [f"{a.replace('_', ' ')} input in alarm" for a in sorted(self.parts.emergency.emergency.alarms)]
        return {"state": "degraded" if problems else "ok", "problems": problems}

    def _prefix(self) -> str:
        readers = self.stats.readers
        failed = sorted(r for r, st in readers.items() if st.failed)
        if not failed:
            return ""
        broken = [r for r in failed if readers[r].last_error is not None]
        offline = [r for r in failed if r not in broken]
        what = "; ".join(part for part in (f"{', '.join(broken)} failed" if broken else "",
                                            f"{', '.join(offline)} offline" if offline else "") if part)
        if len(failed) == len(readers):
            return f"DEGRADED: no reader working ({what}); "
        return f"DEGRADED: reader {what}; "

    def status_line(self) -> str:
        meta = self.parts.cache.meta
        age = _age_s(meta.issued_at_ms / 1000, self.clock()) if meta.version else None
        r = self.clock_watch.reading
        clock = "" if r.trusted else f"CLOCK UNTRUSTED (behind the floor by {human(r.behind_ms / 1000)}, deciding with the floor); "
        emergency = self.parts.emergency.emergency.status_words()
        emergency = f"{emergency}; " if emergency else ""
        return (f"{emergency}{self._prefix()}{clock}{self.config.bridge.mode}; upstream {self.upstream.label}; cache v{meta.version}"
                f"{f' age {human(age)}' if age is not None else ''}; outbox {self.parts.outbox.depth()}; "
                f"{self.stats.decisions} decisions")

    def snapshot(self) -> dict[str, Any]:
        """The status socket's document (on the loop, from memory only)."""
        p, cfg, watch = self.parts, self.config, self.clock_watch
        now = self.clock()
        meta = p.cache.meta
        up = self.upstream
        oldest = self.storage.oldest_pending_at
        return {
            "bridge_id": cfg.bridge.id, "version": __version__, "mode": cfg.bridge.mode,
            "started_at": self.stats.started_at.isoformat(timespec="seconds"), "now": now.isoformat(timespec="seconds"),
            "previous_exit": p.previous_exit.get("reason"), "health": self.report(),
            "clock": {"trusted": watch.reading.trusted, "behind_floor_s": round(watch.reading.behind_ms / 1000),
                      "floor": iso(from_ms(watch.trusted_time.floor_now(time.monotonic()))),
                      "wall": watch.wall_clock().isoformat(timespec="seconds")},
            "mqtt": self._mqtt_status(), "metrics": self._metrics_status(),
            "upstream": ({"online": bool(up.online), "since": iso_seconds(up.since), "last_heartbeat": iso_seconds(up.last_heartbeat),
                          "last_error": up.last_error} if up.configured else {"state": "none (standalone)"}),
            "cache": {"version": meta.version, "issued_at": iso(from_ms(meta.issued_at_ms)) if meta.version else None,
                      "age_s": _age_s(meta.issued_at_ms / 1000, now) if meta.version else None,
                      "not_after": iso(from_ms(meta.not_after_ms)), "grants": self.storage.grants,
                      "stale": meta.version == 0 or now.timestamp() * 1000 >= meta.not_after_ms},
            "outbox": {"depth": p.outbox.depth(),
                       "oldest_age_s": _age_s(datetime.fromisoformat(oldest.replace("Z", "+00:00")).timestamp(), now) if oldest else None},
            "central": ({"sync": p.sync.state.as_status(), "replication": p.replicator.state.as_status(now)}
                        if p.sync is not None and p.replicator is not None else None),
            "decisions": {"total": self.stats.decisions, "granted": self.stats.grants, "online": self.stats.online_decisions,
                          "learned": self.stats.learned_decisions},
            "learned": ({"enabled": cfg.offline.learn, "entries": p.learned.store.count(),
                         "max_entries": cfg.offline.max_entries, "refused": p.learned.refused,
                         "upstreams": self.storage.learned}
                        if p.learned is not None else None),
            "handback": p.handback.state.as_status() if p.handback is not None else None,
            "emergency": p.emergency.status(),
            "readers": {rid: {"type": r.type, "last_scan_at": r.last_scan_at, "last_decision": r.last_decision,
                              "last_reason": r.last_reason, "scans": r.scans, "state": "failed" if r.failed else "ok",
                              "last_error": r.last_error, "failures": r.failures, "offline": r.offline}
                        for rid, r in self.stats.readers.items()},
            "doors": {name: {**(p.door_monitors[name].state() if name in p.door_monitors else
                                {"relay": "energised" if door.energised else "released", "position": "unknown", "alarm": None}),
                             **p.modes.view.get(name, {})}
                      for name, door in p.doors.items()},
        }


_REQUEST = re.compile(r" (?:GET|POST|PUT|PATCH|DELETE) /\S*:")


def _cause(error: str | None) -> str | None:
    """A failure's cause without the request it happened on: a verify and a heartbeat failing
    for the same reason are one cause, a 401 and a 500 (or DNS and refused) are two."""
    return _REQUEST.sub("", error) if error else error


def check_for(error: Exception) -> str:
    """What a technician checks for this upstream failure: the adapter's own hint for a refusal,
    the answer's shape for a protocol error, the network for the rest."""
    from bridge.upstream.errors import UpstreamProtocolError, UpstreamRejected

    if isinstance(error, UpstreamRejected):
        return error.hint
    if isinstance(error, UpstreamProtocolError):
        return ("the upstream answered, but not in its documented format: check base_url and the path point at "
                "that service (not a proxy or captive portal); decisions continue from the cache")
    return "network/DNS from the Pi, the upstream URL and TLS; decisions continue from the cache"


def _age_s(epoch_s: float, now: datetime) -> float:
    return round(now.timestamp() - epoch_s, 1)


def human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
