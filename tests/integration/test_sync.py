"""Bundle sync against a real loopback central: full then delta, 304, 410, refusals, revocation.

The cache is a real SQLite file; decisions come from `verifier.decide.Verifier` on its own
connection, exactly as the daemon's decision worker reads it while sync applies.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.central.sync import BundleSync, SyncOutcome, run_sync
from bridge.config.upstream import CentralSection, HttpSettings, UpstreamSection
from bridge.upstream.central import build_central
from bridge.upstream.errors import (
    UpstreamProtocolError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from tests.support.builders import (
    FOREIGN_KEY,
    NOW,
    READER,
    SIGNING_KEY,
    USER_CARD,
    make_bundle,
    records,
)
from tests.support.fakes.central import FakeCentral
from verifier.cache import GrantCache
from verifier.credentials import parse
from verifier.decide import Verifier
from verifier.types import AccessDecision, Decision, Reason, Source

pytest_plugins = ["tests.support.fakes.fixtures"]

# Fast retries, and a breaker that never opens: these tests are about sync, not the breaker.
FAST = HttpSettings(retry_max_wait_s=0.01, retry_deadline_s=0.3, breaker_failures=1000)
NEW_CARD = "5A5A5A5A01"


class SyncedBridge:
    """A bridge's state dir with a decision-side cache, and a way to run sync against the fake."""

    def __init__(self, fake: FakeCentral, key_file: Path, state_dir: Path, **section: Any) -> None:
        self.fake = fake
        self.state_dir = state_dir
        self.section = CentralSection(base_url=fake.url, api_key_file=key_file, **{"apply_in": "thread", **section})
        self.cache = GrantCache(state_dir / "grants.db")  # the daemon's decision connection
        self.verifier = Verifier(self.cache)

    def decide(self, card: str, at_minutes: int = 0) -> AccessDecision:
        # Minutes apart: past the replay window, so each call is a fresh decision.
        return self.verifier.decide(parse(card.encode(), "card"), READER, Source.CARD, NOW + timedelta(minutes=at_minutes))

    def version(self) -> int:
        self.cache.refresh()  # what the decision connection sees now
        return self.cache.meta.version

    def run(self, body: Callable[[BundleSync], Awaitable[Any]], settings: HttpSettings = FAST) -> Any:
        async def scenario() -> Any:
            client = build_central(self.section, settings, bridge_id=self.fake.bridge_id)
            sync = BundleSync(client, self.section, settings, state_dir=self.state_dir,
                              public_key=SIGNING_KEY.public_key(), clock=lambda: NOW)
            try:
                return await body(sync)
            finally:
                sync.close()
                await client.aclose()

        return asyncio.run(scenario())

    def sync(self, times: int = 1) -> list[SyncOutcome]:
        async def body(sync: BundleSync) -> list[SyncOutcome]:
            return [await sync.sync_once() for _ in range(times)]

        outcomes: list[SyncOutcome] = self.run(body)
        return outcomes


@pytest.fixture
def site(fake_central: FakeCentral, central_key_file: Path, tmp_path: Path) -> SyncedBridge:
    return SyncedBridge(fake_central, central_key_file, tmp_path)


def grant_layla_revoked() -> dict[str, Any]:
    return {**next(r for r in records() if r.get("id") == "g_layla"), "revoked": True}


@pytest.mark.parametrize("apply_in", ["process", "thread"])
def test_full_bundle_then_delta_are_applied_and_decide(
    fake_central: FakeCentral, central_key_file: Path, tmp_path: Path, apply_in: str
) -> None:
    site = SyncedBridge(fake_central, central_key_file, tmp_path, apply_in=apply_in)
    assert site.decide(USER_CARD).reason is Reason.CACHE_STALE  # empty cache before the first sync
    fake_central.publish_full(records())
    assert site.sync() == ["applied"]
    assert site.decide(USER_CARD, 1).decision is Decision.GRANT
    assert site.decide(NEW_CARD, 2).reason is Reason.NO_GRANT

    fake_central.publish_delta([{"type": "card", "number": NEW_CARD, "name": "New badge", "userId": "user_layla"}])
    assert site.sync() == ["applied"]
    assert [(s.since, s.kind, s.version) for s in fake_central.served] == [(0, "full", 1), (1, "delta", 2)]
    assert site.version() == 2
    decision = site.decide(NEW_CARD, 3)
    assert (decision.decision, decision.cache_version) == (Decision.GRANT, 2)
    assert not (tmp_path / "bundle.download").exists()


def test_requests_carry_the_documented_path_auth_and_since(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    (request,) = site.fake.server.requests_to(f"/bridges/{site.fake.bridge_id}/bundle")
    assert request.method == "GET"
    assert request.query == {"since": "0"}
    assert request.headers["authorization"].startswith("Bearer cbk_")
    assert request.headers["accept"] == "application/x-door-bridge-bundle"
    assert "if-none-match" not in request.headers


def test_nothing_newer_is_a_304_and_leaves_the_cache(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    assert site.sync(times=2) == ["applied", "not_modified"]
    assert [s.status for s in site.fake.served] == [200, 304]
    second = site.fake.server.requests[-1]
    assert second.query == {"since": "1"}
    assert site.version() == 1
    assert site.decide(USER_CARD).decision is Decision.GRANT


def test_matching_etag_is_a_304_without_a_body(site: SyncedBridge) -> None:
    """The central makes no delta here, so `since` alone cannot say "nothing new": the ETag does."""
    site.fake.deltas = False
    site.fake.publish_full(records())

    async def body(sync: BundleSync) -> tuple[SyncOutcome, SyncOutcome]:
        first = await sync.sync_once()
        sync.state.etag = None
        # Pretend the cache were still empty: the same full bundle would be sent, unless the tag matches.
        sync.cache_version = lambda: 0  # type: ignore[method-assign]
        sync.state.etag = '"v1-full-from0"'
        return first, await sync.sync_once()

    assert site.run(body) == ("applied", "not_modified")
    assert site.fake.server.requests[-1].headers["if-none-match"] == '"v1-full-from0"'
    assert site.fake.served[-1].status == 304


def test_tampered_bundle_is_refused_and_the_previous_cache_still_decides(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    site.fake.publish_delta([grant_layla_revoked()])
    site.fake.tamper_bundles()
    with capture_logs() as logs:
        outcomes = site.sync(times=2)
    # Refused once; the second poll sends the refused bundle's ETag and gets 304: no re-download.
    assert outcomes == ["rejected", "not_modified"]
    assert [s.status for s in site.fake.served][-2:] == [200, 304]
    errors = [e for e in logs if e["event"] == "bundle_rejected"]
    assert len(errors) == 1 and errors[0]["log_level"] == "error"
    assert "digest" in errors[0]["error"] and "proxy" in errors[0]["check"]
    assert site.version() == 1
    assert site.decide(USER_CARD).decision is Decision.GRANT  # the revocation did not get in either
    assert site.cache.counts()["users"] == 4

    site.fake.publish_delta([grant_layla_revoked()])  # a new, honest bundle is taken at once
    assert site.sync() == ["applied"]
    assert site.version() == 3


def test_tampered_bundle_is_refused_by_the_child_process_too(fake_central: FakeCentral, central_key_file: Path,
                                                             tmp_path: Path) -> None:
    site = SyncedBridge(fake_central, central_key_file, tmp_path, apply_in="process")
    fake_central.publish_full(records())
    fake_central.tamper_bundles()
    assert site.sync() == ["rejected"]
    assert site.version() == 0
    assert site.decide(USER_CARD).reason is Reason.CACHE_STALE


def test_bundle_signed_by_another_key_is_refused_with_what_to_check(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    site.fake.signing_key = FOREIGN_KEY
    site.fake.publish_delta([grant_layla_revoked()])
    with capture_logs() as logs:
        assert site.sync() == ["rejected"]
    (error,) = [e for e in logs if e["event"] == "bundle_rejected"]
    assert "signature" in error["error"] and "cache.public_key" in error["check"]
    assert site.decide(USER_CARD).decision is Decision.GRANT


def test_older_version_from_the_central_is_refused_as_a_rollback(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.fake.publish_full(records())
    site.sync()
    assert site.version() == 2
    site.fake.serve_raw_bundle(make_bundle(records(), version=1), version=3)
    with capture_logs() as logs:
        assert site.sync() == ["rejected"]
    (error,) = [e for e in logs if e["event"] == "bundle_rejected"]
    assert "not newer" in error["error"] and "version counter" in error["check"]
    assert site.version() == 2


def test_revoked_upstream_denies_after_the_next_sync(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    assert site.decide(USER_CARD).decision is Decision.GRANT
    site.fake.publish_delta([grant_layla_revoked()])
    assert site.sync() == ["applied"]
    decision = site.decide(USER_CARD, 5)
    assert (decision.decision, decision.reason) == (Decision.DENY, Reason.GRANT_REVOKED)


def test_deleted_card_upstream_is_no_grant_after_sync(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    site.fake.publish_delta([{"type": "card", "number": USER_CARD, "op": "delete"}])
    site.sync()
    assert site.decide(USER_CARD).reason is Reason.NO_GRANT


def test_gone_delta_falls_back_to_a_full_bundle(site: SyncedBridge) -> None:
    site.fake.deltas = False
    site.fake.gone_when_no_delta = True
    site.fake.publish_full(records())
    site.sync()
    site.fake.publish_delta([grant_layla_revoked()])
    assert site.sync() == ["applied"]
    assert [(s.since, s.status, s.kind) for s in site.fake.served][-2:] == [(1, 410, None), (0, 200, "full")]
    assert site.decide(USER_CARD).reason is Reason.GRANT_REVOKED


def test_refused_bundle_without_etag_is_not_applied_twice(site: SyncedBridge) -> None:
    site.fake.send_etag = False
    site.fake.publish_full(records())
    site.fake.tamper_bundles()
    with capture_logs() as logs:
        assert site.sync(times=2) == ["rejected", "already_rejected"]
    assert len([e for e in logs if e["event"] == "bundle_rejected"]) == 1


def test_oversized_bundle_is_a_protocol_error_and_nothing_is_left_on_disk(
    fake_central: FakeCentral, central_key_file: Path, tmp_path: Path
) -> None:
    site = SyncedBridge(fake_central, central_key_file, tmp_path, max_bundle_bytes=64 * 1024)
    fake_central.publish_full(records() + [{"type": "user", "id": f"u{i}", "name": "x" * 100} for i in range(2000)])
    with pytest.raises(UpstreamProtocolError, match="max_bundle_bytes"):
        site.sync()
    assert not (tmp_path / "bundle.download").exists()
    assert site.version() == 0


def test_html_answer_is_refused_before_writing(site: SyncedBridge) -> None:
    site.fake.server.respond_raw(b"<html>captive portal</html>", content_type="text/html")
    with pytest.raises(UpstreamProtocolError, match="text/html"):
        site.sync()


def test_wrong_key_is_rejected_with_a_hint(site: SyncedBridge) -> None:
    site.fake.api_keys = {"cbk_some_other_key"}
    site.fake.publish_full(records())
    with pytest.raises(UpstreamRejected, match="api_key_file"):
        site.sync()


def test_central_down_is_unavailable_after_retries_and_cache_keeps_deciding(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.sync()
    site.fake.server.fail_with(503)
    with pytest.raises(UpstreamUnavailable, match="503"):
        site.sync()
    assert len(site.fake.server.requests) > 2  # retried with back-off before giving up
    assert site.decide(USER_CARD).decision is Decision.GRANT


def test_connection_dropped_mid_download_is_retried(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.fake.server.drop_connections()

    async def body(sync: BundleSync) -> SyncOutcome:
        async def heal_then_sleep(_: float) -> None:
            site.fake.server.heal()

        return await sync.sync_once(sleep=heal_then_sleep)

    assert site.run(body) == "applied"
    assert site.version() == 1


def test_run_sync_polls_until_cancelled_and_reports_state(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    waits: list[float] = []

    async def body(sync: BundleSync) -> BundleSync:
        done = asyncio.Event()

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 1:
                site.fake.publish_delta([grant_layla_revoked()])
            if len(waits) == 2:
                site.fake.server.fail_with(500)
            if len(waits) >= 3 and sync.state.last_error:
                done.set()
            await asyncio.sleep(0)

        task = asyncio.create_task(run_sync(sync, sleep=sleep))
        await asyncio.wait_for(done.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sync

    sync = site.run(body, settings=HttpSettings(retry_max_wait_s=0.01, retry_deadline_s=0.05, breaker_failures=1000))
    state = sync.state
    assert state.version == 2 and state.last_applied_at == NOW
    assert state.last_error is not None and "500" in state.last_error
    status = state.as_status()
    assert status["version"] == 2 and status["last_sync_at"] == NOW.isoformat(timespec="seconds")
    # Poll waits are poll_interval_s (60) ± 20 % jitter; retry waits are tiny.
    poll_waits = [w for w in waits if w > 1]
    assert poll_waits and all(48 <= w <= 72 for w in poll_waits)
    assert site.decide(USER_CARD).reason is Reason.GRANT_REVOKED


def test_central_section_needs_a_key_and_sane_bounds(central_key_file: Path) -> None:
    with pytest.raises(ValidationError, match="api_key_file"):
        CentralSection(base_url="https://central.example.com/api/bridge/v1")
    with pytest.raises(ValidationError, match="plain http"):
        CentralSection(base_url="http://central.example.com", api_key_file=central_key_file)
    with pytest.raises(ValidationError):
        CentralSection(base_url="https://c.example.com", api_key_file=central_key_file, batch_size=5000)
    upstream = UpstreamSection.model_validate(
        {"central": {"base_url": "https://c.example.com/", "api_key_file": str(central_key_file)}})
    ok = upstream.central
    assert ok is not None
    assert (ok.base_url, ok.poll_interval_s, ok.batch_size, ok.apply_in) == ("https://c.example.com", 60.0, 500, "process")


def test_empty_200_body_is_a_protocol_error(site: SyncedBridge) -> None:
    site.fake.publish_full(records())
    site.fake.server.respond_raw(b"", content_type="application/x-door-bridge-bundle")
    with pytest.raises(UpstreamProtocolError, match="empty bundle"):
        site.sync()
    assert site.version() == 0


def test_a_quarantined_cache_does_not_reset_anti_rollback_for_synced_bundles(tmp_path: Path) -> None:
    """The applier (the sync child's code) keeps the newest applied version beside grants.db."""
    from bridge.central.sync import apply_here
    from verifier.bundle import BundleRejected

    cache_path = tmp_path / "grants.db"
    old, new = tmp_path / "v1.bundle", tmp_path / "v2.bundle"
    old.write_bytes(make_bundle(records(), version=1))
    new.write_bytes(make_bundle([r for r in records() if r.get("number") != USER_CARD], version=2))
    for path in (old, new):
        apply_here(cache_path, path, SIGNING_KEY.public_key())
    cache_path.rename(tmp_path / "grants.db.quarantined")
    with pytest.raises(BundleRejected, match="older than version 2"):
        apply_here(cache_path, old, SIGNING_KEY.public_key())
    assert apply_here(cache_path, new, SIGNING_KEY.public_key()).version == 2
    with pytest.raises(BundleRejected, match="not newer"):
        apply_here(cache_path, old, SIGNING_KEY.public_key())


def test_bundle_addressed_to_another_bridge_is_refused_by_sync_and_the_child(site: SyncedBridge, tmp_path: Path) -> None:
    from bridge.central.sync import apply_in_process
    from verifier.bundle import bundle_bytes

    recs = [r for r in records() if r["type"] != "passcode"]
    other = bundle_bytes(recs, SIGNING_KEY, version=1, issued_at=NOW, not_after=NOW + timedelta(days=7),
                         audience=["BRIDGE-2"])
    site.fake.serve_raw_bundle(other, version=1)

    async def body(sync: BundleSync) -> SyncOutcome:
        sync.audience = ("BRIDGE-1",)
        return await sync.sync_once()

    with capture_logs() as logs:
        assert site.run(body) == "rejected"
    (error,) = [e for e in logs if e["event"] == "bundle_rejected"]
    assert "addressed to BRIDGE-2" in error["error"] and "bridge.id" in error["check"]
    path = tmp_path / "other.bundle"
    path.write_bytes(other)
    from verifier.bundle import BundleRejected

    with pytest.raises(BundleRejected, match="addressed to BRIDGE-2"):
        asyncio.run(apply_in_process(tmp_path / "grants.db", path, SIGNING_KEY.public_key(), ("BRIDGE-1",)))
    assert site.version() == 0


def test_an_upstream_that_echoes_the_api_key_never_puts_it_in_the_error_or_the_log(site: SyncedBridge) -> None:
    from tests.support.fakes.central import API_KEY

    site.fake.server.respond_raw(b"<html>login</html>", content_type=f"text/x-echo-{API_KEY}")

    async def body(sync: BundleSync) -> str:
        with pytest.raises(UpstreamProtocolError) as raised:
            await sync.sync_once()
        return str(raised.value)

    with capture_logs() as logs:
        error = site.run(body)
    assert "answered" in error and "[redacted]" in error
    secret_part = API_KEY.removeprefix("cbk_")
    assert secret_part not in error and secret_part[:16] not in repr(logs)


def test_the_applier_reads_and_writes_through_a_bounded_larger_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full bundle touches index pages all over grants.db: the applier's connection keeps 32 MiB
    of them (SQLite's default is 2 MiB), bounded so a Pi's memory is not. The decision connection
    keeps the default (the applier is a process of its own in "process" mode)."""
    from bridge.central import sync as sync_module

    seen: list[int] = []
    real = sync_module.apply_connection

    def spying(cache_path: Path):  # type: ignore[no-untyped-def]
        conn = real(cache_path)
        seen.append(conn.execute("PRAGMA cache_size").fetchone()[0])
        return conn

    monkeypatch.setattr(sync_module, "apply_connection", spying)
    bundle = tmp_path / "v1.bundle"
    bundle.write_bytes(make_bundle(records(), version=1))
    assert sync_module.apply_here(tmp_path / "grants.db", bundle, SIGNING_KEY.public_key()).version == 1
    assert seen == [-32 * 1024]
