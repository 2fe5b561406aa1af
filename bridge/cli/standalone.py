"""Grants without a central: records signed with a local key and applied as delta bundles.

Standalone sites (and USB provisioning) use exactly the same signed-bundle path as a central, so
there is one way into the cache and one set of checks. Each change is kept as a bundle file under
`state_dir/bundles/`, which is also the site's history of who was given what, when.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from verifier.bundle import BundleWriter, apply_bundle
from verifier.cache import GrantCache
from verifier.hashing import PinHashing

# A standalone site has no central to refresh from: its bundles stay valid until replaced.
STANDALONE_VALIDITY = timedelta(days=3650)


def pin_hashing_for(cache: GrantCache) -> PinHashing:
    return cache.meta.pin_hashing or PinHashing(os.urandom(16))


def apply_records(cache: GrantCache, key: Ed25519PrivateKey, records: Iterable[dict[str, Any]], *,
                  now: datetime, pin_hashing: PinHashing | None = None, archive: Path | None = None) -> int:
    """Sign `records` as a delta on top of the cache's version, apply it, return the new version."""
    cache.refresh()
    base = cache.meta.version
    writer = BundleWriter(version=base + 1, kind="delta", base_version=base, issued_at=now,
                          not_after=now + STANDALONE_VALIDITY, pin_hashing=pin_hashing or cache.meta.pin_hashing)
    writer.add_all(records)
    buf = io.BytesIO()
    writer.finish(key, buf)
    data = buf.getvalue()
    apply_bundle(cache.conn, io.BytesIO(data), key.public_key())
    cache.invalidate()
    if archive is not None:
        archive.mkdir(parents=True, exist_ok=True)
        (archive / f"{base + 1:08d}.bundle").write_bytes(data)
    return base + 1
