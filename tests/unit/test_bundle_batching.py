"""The apply batches writes with executemany: the cache must end exactly as if every record had
been applied on its own, in bundle order, whatever the mix of upserts and deletes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier.bundle as bundle_module
from tests.support.builders import NOW, SIGNING_KEY, iso, make_bundle
from verifier import schema
from verifier.bundle import apply_bundle

FAR = iso(NOW.replace(year=NOW.year + 5))
CARDS = ["0A1B2C3D", "DEADBEEF01", "04A22C1A7B3F80"]


def _dump(records: list[dict[str, Any]], *, batch: int, tmp: Path, base: list[dict[str, Any]] | None) -> list[str]:
    """Apply (a full `base`, then) `records` as a full bundle or a delta, batching `batch` rows."""
    path = tmp / f"grants-{batch}.db"
    conn = schema.connect(str(path))
    schema.migrate(conn)
    old = bundle_module._BATCH
    bundle_module._BATCH = batch
    try:
        if base is None:
            apply_bundle(conn, io.BytesIO(make_bundle(records, version=1)), SIGNING_KEY.public_key())
        else:
            apply_bundle(conn, io.BytesIO(make_bundle(base, version=1)), SIGNING_KEY.public_key())
            apply_bundle(conn, io.BytesIO(make_bundle(records, version=2, kind="delta", base_version=1)),
                         SIGNING_KEY.public_key())
        # Sorted: which rowid a row got is no part of what the cache says.
        return sorted(line for line in conn.iterdump() if "INSERT INTO \"meta\"" not in line)
    finally:
        bundle_module._BATCH = old
        conn.close()
        for p in tmp.glob(f"grants-{batch}.db*"):
            p.unlink()


def _one_by_one_and_batched(records: list[dict[str, Any]], tmp: Path, base: list[dict[str, Any]] | None = None,
                            batch: int = 2000) -> tuple[list[str], list[str]]:
    return (_dump(records, batch=1, tmp=tmp, base=base), _dump(records, batch=batch, tmp=tmp, base=base))


USER = {"type": "user", "id": "u1", "name": "Layla", "roles": ["night", "cleaning"]}
USER_AGAIN = {"type": "user", "id": "u1", "name": "Layla"}  # no roles: the upsert clears them
ROLES = [{"type": "role", "id": "night"}, {"type": "role", "id": "cleaning"}]


@pytest.mark.parametrize("delta", [False, True], ids=["full", "delta"])
def test_a_user_upserted_again_without_roles_holds_none(tmp_path: Path, delta: bool) -> None:
    base = [*ROLES, USER] if delta else None
    body = [USER_AGAIN] if delta else [*ROLES, USER, USER_AGAIN]
    one, batched = _one_by_one_and_batched(body, tmp_path, base)
    assert batched == one
    assert [line for line in batched if 'INSERT INTO "user_roles"' in line] == []
    assert [line for line in batched if 'INSERT INTO "users"' in line] == ['INSERT INTO "users" VALUES(\'u1\',\'Layla\',1);']


def test_the_last_record_for_a_card_number_wins_whatever_its_spelling(tmp_path: Path) -> None:
    """SNA `card` and Sifely `ic_card` write the same table: the batches keep their order."""
    body = [
        {"type": "ic_card", "cardNumber": CARDS[0], "devices": ["R1"], "endDate": FAR},
        {"type": "card", "number": CARDS[1], "devices": ["R1"], "end_at": FAR},
        {"type": "ic_card", "cardNumber": CARDS[1], "devices": ["R2"], "endDate": FAR},
    ]
    one, batched = _one_by_one_and_batched(body, tmp_path)
    assert batched == one
    assert any("'sifely'" in line and "R2" in line for line in batched)


def test_a_zone_listed_twice_keeps_only_its_last_reader_list(tmp_path: Path) -> None:
    body = [{"type": "zone", "id": "z", "readers": ["R1", "R2"]}, {"type": "zone", "id": "z", "readers": ["R3"]}]
    one, batched = _one_by_one_and_batched(body, tmp_path)
    assert batched == one
    assert [line for line in batched if "zone_readers" in line and "INSERT" in line] == [
        'INSERT INTO "zone_readers" VALUES(\'R3\',\'z\');']


# --- any sequence --------------------------------------------------------------------------------

_ids = st.sampled_from(["a", "b", "c"])
_roles = st.lists(st.sampled_from(["night", "day"]), max_size=2, unique=True)
_records = st.one_of(
    st.builds(lambda i, r: {"type": "user", "id": f"u{i}", "roles": r}, _ids, _roles),
    st.builds(lambda i: {"type": "user", "op": "delete", "id": f"u{i}"}, _ids),
    st.builds(lambda i: {"type": "role", "id": i}, st.sampled_from(["night", "day"])),
    st.builds(lambda i: {"type": "role", "op": "delete", "id": i}, st.sampled_from(["night", "day"])),
    st.builds(lambda g, u: {"type": "grant", "id": f"g{g}", "userId": f"u{u}", "zoneId": "z"}, _ids, _ids),
    st.builds(lambda g: {"type": "grant", "id": f"g{g}", "roleId": "night", "zoneId": "z"}, _ids),
    st.builds(lambda g: {"type": "grant", "op": "delete", "id": f"g{g}"}, _ids),
    st.builds(lambda z, rs: {"type": "zone", "id": f"z{z}", "readers": rs}, _ids,
              st.lists(st.sampled_from(["R1", "R2", "R3"]), max_size=2, unique=True)),
    st.builds(lambda z: {"type": "zone", "op": "delete", "id": f"z{z}"}, _ids),
    st.builds(lambda n, d: {"type": "card", "number": n, "devices": [d], "end_at": FAR}, st.sampled_from(CARDS),
              st.sampled_from(["R1", "R2"])),
    st.builds(lambda n, d: {"type": "ic_card", "cardNumber": n, "devices": [d], "endDate": FAR}, st.sampled_from(CARDS),
              st.sampled_from(["R1", "R2"])),
    st.builds(lambda n: {"type": "card", "op": "delete", "number": n}, st.sampled_from(CARDS)),
    st.builds(lambda i: {"type": "visitor", "id": f"v{i}", "inviteCodeSha256": f"{ord(i):064x}", "zoneIds": ["z"]}, _ids),
    st.builds(lambda i: {"type": "visitor", "op": "delete", "id": f"v{i}"}, _ids),
)
_base = [{"type": "user", "id": "ua", "roles": ["night"]}, {"type": "zone", "id": "za", "readers": ["R1"]},
         {"type": "grant", "id": "ga", "userId": "ua", "zoneId": "z"},
         {"type": "card", "number": CARDS[0], "devices": ["R1"], "end_at": FAR}]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.lists(_records, max_size=25), delta=st.booleans(), batch=st.sampled_from([3, 2000]))
def test_batched_apply_equals_applying_each_record_alone(tmp_path: Path, body: list[dict[str, Any]],
                                                         delta: bool, batch: int) -> None:
    one, batched = _one_by_one_and_batched(body, tmp_path, _base if delta else None, batch)
    assert batched == one


def test_window_edges_parsed_once_keep_their_meaning_and_a_bad_one_still_names_its_field() -> None:
    """Edges are remembered by their exact text: two spellings of one instant, or one spelling
    in two fields, come out as opt_ms says; a bad edge is refused whatever was seen before."""
    from verifier.timeutil import MAX_MS, MIN_MS, TimeFormatError, opt_ms

    spellings = ["2026-06-01T12:00:00Z", "2026-06-01T14:00:00+02:00", "2026-06-01T12:00:00", 1780315200000]
    for _ in range(2):  # the second round comes from what the first remembered
        for s in spellings:
            assert bundle_module._window({"startsAt": s, "endsAt": FAR}, "startsAt", "endsAt") == (
                opt_ms(s, "startsAt", MIN_MS), opt_ms(FAR, "endsAt", MAX_MS))
    with pytest.raises(TimeFormatError, match="endsAt"):
        bundle_module._window({"startsAt": spellings[0], "endsAt": "2026-13-01T00:00:00Z"}, "startsAt", "endsAt")
