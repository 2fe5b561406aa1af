"""The bundle body is parsed with pydantic-core's `from_json`, not `json.loads` (issue 17: a third
of the cost of a record in a 1M apply). These hold the two parsers to the same answers on what a
central can send, and pin the few places where they differ on what no central should."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import from_json

from tests.support.builders import SIGNING_KEY, make_bundle, records
from tests.support.fuzz_checks import signed_bundle
from verifier.bundle import BundleRejected, apply_bundle
from verifier.cache import GrantCache

PUBLIC = SIGNING_KEY.public_key()

# Text as a central holds it: any code point but a lone surrogate (UTF-8 cannot carry one).
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=False) | _text
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(record=st.dictionaries(_text, _json, max_size=8), ascii_only=st.booleans())
def test_from_json_reads_every_record_a_central_can_write_as_json_loads_does(record: dict[str, Any],
                                                                             ascii_only: bool) -> None:
    line = json.dumps(record, ensure_ascii=ascii_only, separators=(",", ":")).encode() + b"\n"
    assert from_json(line) == json.loads(line.decode())


@pytest.fixture
def cache(tmp_path: Any) -> Any:
    c = GrantCache(tmp_path / "grants.db")
    yield c
    c.close()


def test_every_escape_of_a_name_is_stored_as_json_loads_reads_it(cache: GrantCache) -> None:
    name = "Zo\u00eb \U0001f511 \u200b\t\"quoted\" back\\slash"
    users = [{"type": "user", "id": "u_esc", "name": name}]
    apply_bundle(cache.conn, io.BytesIO(signed_bundle(users)), PUBLIC)  # json.dumps: \u escapes, surrogate pairs
    assert cache.conn.execute("SELECT name FROM users WHERE id = 'u_esc'").fetchone() == (name,)


@pytest.mark.parametrize("depth", [150, 250, 5000])
def test_a_record_nested_deeper_than_the_parser_allows_is_refused_naming_its_line(cache: GrantCache, depth: int) -> None:
    """json.loads took 250 levels and refused 5000 with RecursionError; from_json stops at 200
    with a ValueError. Both are refusals of the whole bundle; no record of ours nests past 3."""
    head, body = make_bundle(records(), version=2).split(b"\n", 1)
    nested = b'{"type":"user","id":"u_deep","x":' + b"[" * depth + b"]" * depth + b"}\n"
    data = head + b"\n" + nested + body
    if depth < 200:  # parsed, then refused by the signed digest like any other extra line
        with pytest.raises(BundleRejected, match="digest"):
            apply_bundle(cache.conn, io.BytesIO(data), PUBLIC)
    else:
        with pytest.raises(BundleRejected, match="record on line 2 is invalid: recursion limit"):
            apply_bundle(cache.conn, io.BytesIO(data), PUBLIC)
    assert cache.conn.execute("SELECT count(*) FROM users WHERE id = 'u_deep'").fetchone() == (0,)
