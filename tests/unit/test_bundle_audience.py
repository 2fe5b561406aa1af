"""The optional signed `audience`: a bundle for another bridge never applies here (issue 10)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.builders import NOW, SIGNING_KEY, records
from verifier.bundle import BundleRejected, apply_bundle, bundle_bytes, read_manifest
from verifier.cache import GrantCache

PUBLIC = SIGNING_KEY.public_key()


def _bundle(audience: list[str]) -> bytes:
    recs = [r for r in records() if r["type"] != "passcode"]
    return bundle_bytes(recs, SIGNING_KEY, version=1, issued_at=NOW, not_after=NOW + timedelta(days=7), audience=audience)


def test_a_bundle_addressed_to_another_bridge_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    cache = GrantCache(tmp_path / "grants.db")
    with pytest.raises(BundleRejected, match="addressed to BRIDGE-2, not to this bridge"):
        apply_bundle(cache.conn, io.BytesIO(_bundle(["BRIDGE-2"])), PUBLIC, audience=("BRIDGE-1",))
    cache.refresh()
    assert cache.meta.version == 0
    assert apply_bundle(cache.conn, io.BytesIO(_bundle(["BRIDGE-2", "BRIDGE-1"])), PUBLIC,
                        audience=("BRIDGE-1",)).version == 1


def test_a_caller_that_names_no_bridge_cannot_take_an_addressed_bundle(tmp_path: Path) -> None:
    cache = GrantCache(tmp_path / "grants.db")
    with pytest.raises(BundleRejected, match="addressed to"):
        apply_bundle(cache.conn, io.BytesIO(_bundle(["BRIDGE-1"])), PUBLIC)


def test_the_audience_is_signed(tmp_path: Path) -> None:
    manifest = read_manifest(_bundle(["BRIDGE-7"]).split(b"\n", 1)[0], PUBLIC)
    assert manifest.audience == ("BRIDGE-7",)
