"""The grant cache's point look-ups return named rows, never tuples read by position."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.builders import loaded_cache
from verifier.cache import CardListing, GrantListing, UserRow, count_credentials


def test_a_user_is_a_named_row_with_its_active_flag(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    assert cache.user("user_layla") == UserRow(name="Layla Hassan", active=True)
    assert cache.user("user_ex") == UserRow(name="Former Employee", active=False)
    assert cache.user("nobody") is None


def test_operator_listings_and_look_ups_are_named_rows(tmp_path: Path) -> None:
    cache = loaded_cache(tmp_path)
    grants = cache.list_grants(100)
    assert grants and all(isinstance(g, GrantListing) for g in grants)
    assert [g.id for g in grants] == sorted(g.id for g in grants)
    first = grants[0]
    assert cache.grant(first.id) == first and cache.grant("no-such-grant") is None
    cards = cache.list_cards(100)
    assert cards and all(isinstance(c, CardListing) for c in cards)
    assert cache.has_card(cards[0].number) and not cache.has_card("00000000")
    assert not cache.has_jwk("no-such-kid")
    assert count_credentials(tmp_path / "grants.db") == cache.counts()["grants"] + cache.counts()["cards"]


def test_only_the_stores_write_sql() -> None:
    """One owner per database: outside bridge/state (the outbox, learned and emergency stores) and
    verifier/ (the grant cache), no module of bridge/ holds a SQL statement."""
    root = Path(__file__).resolve().parents[2] / "bridge"
    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b")
    offenders = [f"{p.relative_to(root.parent)}:{n}" for p in sorted(root.rglob("*.py")) if p.parent.name != "state"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if sql.search(line)]
    assert offenders == []
