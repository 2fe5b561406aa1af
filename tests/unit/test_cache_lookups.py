"""The grant cache's point look-ups return named rows, never tuples read by position."""

from __future__ import annotations

from pathlib import Path

from tests.support.builders import loaded_cache
from verifier.cache import UserRow


def test_a_user_is_a_named_row_with_its_active_flag(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    assert cache.user("user_layla") == UserRow(name="Layla Hassan", active=True)
    assert cache.user("user_ex") == UserRow(name="Former Employee", active=False)
    assert cache.user("nobody") is None
