"""Fuzzing every place hostile or broken bytes enter: scans, key events, Wiegand frames, bundles,
config, upstream answers. The rule is the same everywhere: a value or a typed, clear refusal —
never another exception, never a GRANT that no grant explains.

Each property is a plain `check_*` function (in tests/support/fuzz_checks.py) plus a hypothesis
test here that feeds it, so the bench (`bench/fuzz.py`) can drive the same checks with many more examples and with atheris. Example
counts come from a settings profile: "door-bridge-ci" (seconds per target) unless
DOOR_BRIDGE_FUZZ_PROFILE=door-bridge-bench. Every check counts the cases it tried (`CASES`); the
counts are written as JSON next to pytest's temp dir (and to $DOOR_BRIDGE_FUZZ_COUNTS if set).

Upstream answers are fuzzed through httpx's MockTransport (adapter parsing only: the wire,
timeouts and the breaker are covered against loopback servers in test_upstream_*.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import Config
from tests.support.builders import (
    DEVICE_CARD,
    IC_CARD,
    INACTIVE_CARD,
    INVITE,
    PIN,
    READER,
    REVOKED_CARD,
    SHIFT_CARD,
    USER_CARD,
    make_bundle,
    records,
)
from tests.support.fuzz_checks import (
    CASES,
    CLAIM_VALUES,
    CREDENTIALS,
    DOCUMENTED_ANSWERS,
    EXAMPLE_CONFIG,
    EXAMPLE_TEXT,
    GOOD_BODY,
    GOOD_CLAIMS,
    GOOD_HEAD,
    NEAR_MISS,
    PROFILE,
    SITE_FORMATS,
    TYPING_TABLES,
    BundleSite,
    Upstreams,
    answer_headers,
    answer_statuses,
    bundle_record,
    check_bundle,
    check_config_dict,
    check_config_text,
    check_scan,
    check_upstream,
    check_wedge_events,
    check_wedge_typing,
    check_wiegand,
    event_tuples,
    fuzz,
    json_values,
    mutated,
    mutated_config,
    sign_manifest,
    signed_bundle,
    toml_lines,
    upstream_answer,
    wiegand_bits,
)
from verifier.credentials import MAX_SCAN_BYTES
from verifier.types import (
    Source,
)
from verifier.wiegand_formats import (
    FORMATS,
    WiegandError,
    decode,
    encode,
)


@pytest.fixture(scope="module", autouse=True)
def _write_case_counts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    text = json.dumps({"profile": PROFILE, "cases": dict(sorted(CASES.items()))})
    (tmp_path_factory.getbasetemp() / "fuzz-cases.json").write_text(text + "\n")
    if target := os.environ.get("DOOR_BRIDGE_FUZZ_COUNTS"):
        Path(target).write_text(text + "\n")



@fuzz(300)
@given(raw=st.binary(max_size=MAX_SCAN_BYTES + 64), hint=st.sampled_from([None, "pin", "card"]))
def test_any_bytes_scanned_decide_deny_or_a_known_grant(raw: bytes, hint: str | None) -> None:
    check_scan(raw, hint)



@fuzz(300)
@given(text=st.text(max_size=300), hint=st.sampled_from([None, "pin", "card"]),
       ending=st.sampled_from(["", "\r\n", "\n", "\r", " "]))
def test_any_text_scanned_decides(text: str, hint: str | None, ending: str) -> None:
    check_scan((text + ending).encode("utf-8", "surrogatepass"), hint)



@fuzz(400)
@given(text=NEAR_MISS, source=st.sampled_from(list(Source)))
def test_near_miss_credentials_decide_without_granting_strangers(text: str, source: Source) -> None:
    check_scan(text.encode("utf-8", "surrogatepass"), None, source)



def test_every_known_credential_still_grants_through_the_same_check() -> None:
    """The fuzz check must be able to see a GRANT at all (else it proves nothing)."""
    for scan, hint in ((USER_CARD, None), (DEVICE_CARD, None), (IC_CARD, "card"), (INVITE, None), (PIN, "pin")):
        assert check_scan(scan.encode(), hint).granted, scan
    for scan in (REVOKED_CARD, INACTIVE_CARD, SHIFT_CARD):  # known, but not here / not now
        assert not check_scan(scan.encode()).granted



@fuzz(200)
@given(data=st.data(), layout=st.sampled_from(sorted(TYPING_TABLES)))
def test_typed_text_in_any_layout_decodes_exactly(data: st.DataObject, layout: str) -> None:
    text = data.draw(st.text(alphabet=sorted(TYPING_TABLES[layout]), max_size=120), label="text")
    gaps = data.draw(st.lists(st.floats(0, 0.49), max_size=8), label="gaps")
    noise = data.draw(st.lists(st.integers(0, 2), max_size=8), label="noise")
    check_wedge_typing(layout, text, gaps, noise)



@fuzz(200)
@given(layout=st.sampled_from(sorted(TYPING_TABLES)), events=st.lists(event_tuples, max_size=300),
       max_bytes=st.sampled_from([8, 64, MAX_SCAN_BYTES]))
def test_any_event_stream_gives_bounded_scans_that_decide(layout: str, events: list[tuple[float, int, int, int]],
                                                          max_bytes: int) -> None:
    check_wedge_events(layout, events, max_bytes)



@fuzz(300)
@given(bits=wiegand_bits, formats=st.sampled_from(SITE_FORMATS))
def test_any_wiegand_frame_of_any_length_decodes_to_a_value(bits: tuple[Any, ...], formats: tuple[str, ...]) -> None:
    check_wiegand(bits, formats)



@fuzz(200)
@given(data=st.data(), fmt=st.sampled_from(sorted(f for f in FORMATS if FORMATS[f].parity)))
def test_one_flipped_bit_in_a_valid_card_frame_is_never_another_card(data: st.DataObject, fmt: str) -> None:
    """Parity guards every bit: line noise on one wire never becomes someone else's card.
    (RAW32 has no parity by definition; tests/unit/test_wiegand_formats.py says so.)"""
    CASES["wiegand_flip"] += 1
    spec = FORMATS[fmt]  # type: ignore[index]
    number = data.draw(st.integers(0, (1 << len(spec.card)) - 1))
    facility = data.draw(st.integers(0, (1 << len(spec.facility)) - 1)) if spec.facility else None
    frame = list(encode(fmt, number, facility))  # type: ignore[arg-type]
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= 1
    result = decode(tuple(frame), formats=[fmt])  # type: ignore[list-item]
    assert isinstance(result, WiegandError) and result.parity is not None



@pytest.fixture(scope="module")
def bundle_site(tmp_path_factory: pytest.TempPathFactory) -> BundleSite:
    return BundleSite(tmp_path_factory.mktemp("bundles"))



@fuzz(150)
@given(drop=st.sets(st.sampled_from(sorted(GOOD_CLAIMS))),
       change=st.dictionaries(st.sampled_from(sorted(GOOD_CLAIMS) + ["base_version", "pin_hash", "x"]), CLAIM_VALUES, max_size=3),
       body=st.sampled_from([b"", GOOD_BODY]))
def test_signed_manifests_with_mutated_claims_apply_or_are_refused_cleanly(
        bundle_site: BundleSite, drop: set[str], change: dict[str, Any], body: bytes) -> None:
    CASES["bundle_manifest"] += 1
    claims = {k: v for k, v in GOOD_CLAIMS.items() if k not in drop} | change
    check_bundle(bundle_site, sign_manifest(claims) + b"\n" + body)



@fuzz(150)
@given(data=st.data())
def test_mutated_bodies_under_a_good_signature_are_refused(bundle_site: BundleSite, data: st.DataObject) -> None:
    CASES["bundle_body"] += 1
    body = bytearray(GOOD_BODY)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "line", "truncate"]))
        i = data.draw(st.integers(0, len(body)))
        if op == "flip" and i < len(body):
            body[i] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            body[i:i] = data.draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del body[i:i + data.draw(st.integers(1, 20))]
        elif op == "line":
            body[i:i] = json.dumps(data.draw(json_values)).encode() + b"\n"
        else:
            del body[i:]
    if bytes(body) == GOOD_BODY:
        return
    check_bundle(bundle_site, GOOD_HEAD + b"\n" + bytes(body), must_reject=True)



@fuzz(100)
@given(recs=st.lists(st.one_of(bundle_record, st.sampled_from(records())), max_size=8),
       kind=st.sampled_from(["full", "delta"]), escaped=st.booleans())
def test_any_records_with_a_valid_signature_apply_or_are_refused_cleanly(
        bundle_site: BundleSite, recs: list[dict[str, Any]], kind: str, escaped: bool) -> None:
    """The signature is good (we sign whatever the fuzzer made), so this reaches every record
    validator, then decisions over whatever they let in."""
    CASES["bundle_records"] += 1
    base = 1 if kind == "delta" else None
    if escaped:
        data = signed_bundle(recs, kind=kind, base_version=base)
    else:
        data = make_bundle(recs, version=2, kind=kind, base_version=base)
    check_bundle(bundle_site, data)



@fuzz(200)
@given(data=st.one_of(mutated_config(), st.dictionaries(st.sampled_from(sorted(EXAMPLE_CONFIG) + ["x"]), json_values, max_size=5), json_values))
def test_any_config_data_is_a_config_or_a_config_error(data: Any) -> None:
    check_config_dict(data)



@fuzz(200)
@given(text=st.one_of(
    st.lists(toml_lines, max_size=25).map("\n".join),
    mutated(st.just(EXAMPLE_TEXT)),
    st.binary(max_size=200),
))
def test_any_toml_document_is_a_config_or_a_config_error(tmp_path_factory: pytest.TempPathFactory, text: str | bytes) -> None:
    check_config_text(tmp_path_factory.getbasetemp() / "fuzz-config.toml", text)



def test_the_example_config_loads_through_the_same_checks(tmp_path: Path) -> None:
    assert isinstance(check_config_dict(EXAMPLE_CONFIG), Config)
    assert isinstance(check_config_text(tmp_path / "c.toml", EXAMPLE_TEXT), Config)



@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    u = Upstreams()
    yield u
    u.close()



@pytest.mark.parametrize("name", sorted(DOCUMENTED_ANSWERS))
def test_upstream_answers_of_any_shape_are_a_decision_or_an_upstream_error(upstreams: Upstreams, name: str) -> None:
    @fuzz(120)
    @given(status=answer_statuses, body=upstream_answer(name), headers=answer_headers)
    def run(status: int, body: bytes, headers: dict[str, str]) -> None:
        check_upstream(upstreams, name, status, body, headers)

    run()



def test_the_documented_answers_decide_through_the_same_check(upstreams: Upstreams) -> None:
    """Sanity for the property above: the documented GRANT bodies are decisions, not errors."""
    for name, doc in DOCUMENTED_ANSWERS.items():
        upstreams.reply = lambda request, doc=doc: httpx.Response(200, json=doc)
        adapter = upstreams.adapters[name]
        credential, source = CREDENTIALS[name]
        assert upstreams.runner.run(adapter.verify(credential, READER, source)).granted, name

