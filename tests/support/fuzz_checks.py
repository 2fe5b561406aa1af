"""The fuzz checks: plain `check_*` functions and the strategies that feed them, shared by
tests/unit/test_fuzz.py (hypothesis) and bench/fuzz.py (many more examples, and atheris).

See tests/unit/test_fuzz.py for the rule they all check.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import os
import shutil
import sqlite3
import tomllib
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from evdev import InputEvent, ecodes
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bridge.config import Config, ConfigError, from_dict, load
from bridge.config.secret_files import ApiKey
from bridge.config.upstream import DigitalIdSection, SnaSection
from bridge.inputs import keymap
from bridge.inputs.evdev_scanner import DiscardedScan, TypedScan, WedgeDecoder
from bridge.upstream.breaker import CircuitBreaker
from bridge.upstream.digital_id import DigitalIdAdapter
from bridge.upstream.errors import UpstreamError, UpstreamNotApplicable
from bridge.upstream.frontelio import FrontelioAdapter
from bridge.upstream.http import UpstreamHttp
from bridge.upstream.sna import SnaAdapter
from tests.support.builders import (
    DEVICE_CARD,
    IC_CARD,
    INVITE,
    NOW,
    PIN,
    PIN_HASHING,
    READER,
    SIGNING_KEY,
    USER_CARD,
    loaded_cache,
    make_bundle,
    make_jwt,
    records,
    user_claims,
)
from verifier.bundle import BundleRejected, Manifest, apply_bundle
from verifier.cache import GrantCache
from verifier.credentials import MAX_SCAN_BYTES, parse
from verifier.decide import Policy, Verifier
from verifier.timeutil import to_ms
from verifier.types import (
    AccessDecision,
    CardNumber,
    Credential,
    CredentialJwt,
    Decision,
    DigitalIdToken,
    InviteCode,
    Malformed,
    Pin,
    Reason,
    Source,
    fingerprint,
    secret_of,
)
from verifier.wiegand_formats import (
    FORMATS,
    WiegandCard,
    WiegandError,
    WiegandKey,
    card_key,
    decode,
)

ROOT = Path(__file__).resolve().parents[2]


_SUPPRESS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
             HealthCheck.function_scoped_fixture, HealthCheck.large_base_example]


settings.register_profile("door-bridge-ci", deadline=None, suppress_health_check=_SUPPRESS, print_blob=True)


settings.register_profile("door-bridge-bench", deadline=None, suppress_health_check=_SUPPRESS, print_blob=True,
                          max_examples=int(os.environ.get("DOOR_BRIDGE_FUZZ_EXAMPLES", "5000")))


PROFILE = os.environ.get("DOOR_BRIDGE_FUZZ_PROFILE", "door-bridge-ci")


_BENCH = PROFILE == "door-bridge-bench"


def fuzz(ci_examples: int) -> settings:
    """CI: `ci_examples` (a few seconds per target on 2 cores); bench: the profile's count."""
    base = settings.get_profile(PROFILE)
    return settings(base, max_examples=base.max_examples if _BENCH else ci_examples)


CASES: Counter[str] = Counter()


# Every credential that may GRANT on `READER` in `records()`: a random scan granted anything else
# would be a hole.
GRANTABLE = {USER_CARD, DEVICE_CARD, IC_CARD, INVITE, PIN}


POLICY = Policy(jwt_algorithms=frozenset({"EdDSA", "ES256", "HS256"}))


FP_KEY = bytes(range(32))


_SITE: dict[str, GrantCache] = {}


def site_cache(tmp_dir: Path | None = None) -> GrantCache:
    """One loaded cache per process, shared by the scan properties (they only read it)."""
    if "cache" not in _SITE:
        import tempfile

        _SITE["cache"] = loaded_cache(Path(tmp_dir or tempfile.mkdtemp(prefix="fuzz-site-")))
    return _SITE["cache"]


CREDENTIAL_TYPES = (CardNumber, CredentialJwt, DigitalIdToken, InviteCode, Pin, Malformed)


def check_scan(raw: bytes, hint: str | None = None, source: Source = Source.PHONE_QR, *, count: bool = True) -> AccessDecision:
    """parse → decide on a loaded cache: always a credential value and a decision, and a GRANT
    only for a credential the site really grants. (`count=False`: called by another check.)"""
    CASES["scan"] += count
    credential = parse(raw, hint)
    assert isinstance(credential, CREDENTIAL_TYPES)
    if not isinstance(credential, Malformed):
        assert secret_of(credential) not in repr(credential)
    decision = Verifier(site_cache(), POLICY, fingerprint_key=FP_KEY).decide(credential, READER, source, NOW)
    assert isinstance(decision, AccessDecision)
    assert decision.fingerprint == fingerprint(credential, FP_KEY)
    if isinstance(credential, Malformed):
        assert (decision.decision, decision.reason) == (Decision.DENY, Reason.MALFORMED_CREDENTIAL)
    if decision.granted:
        assert decision.reason is None
        assert isinstance(credential, CredentialJwt) or secret_of(credential) in GRANTABLE, \
            f"granted a {credential.kind} the site does not know"
    else:
        assert isinstance(decision.reason, Reason)
    return decision


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12))


json_values = st.recursive(_json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


_jwt_shaped = st.builds(
    lambda header, claims, sig: f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{sig}",
    st.one_of(st.fixed_dictionaries({"alg": st.sampled_from(["EdDSA", "ES256", "HS256", "RS256", "none", "NONE", ""])},
                                    optional={"kid": st.one_of(st.sampled_from(["okp-1", "ec-1", "hs-1", "../../etc/passwd", "' OR 1=1 --"]), st.text(max_size=10)),
                                              "typ": st.text(max_size=5), "jwk": json_values, "jku": st.text(max_size=20)}),
              st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
    st.one_of(st.fixed_dictionaries({"sub": st.one_of(st.sampled_from(["user_layla", "user_ex"]), json_values)},
                                    optional={"exp": json_values, "nbf": json_values, "zoneIds": json_values, "name": json_values}), json_values),
    st.text(alphabet=_B64, max_size=90),
)


_real_jwt = st.sampled_from([make_jwt(user_claims()), make_jwt(user_claims(), alg="ES256"), make_jwt(user_claims(), alg="HS256")])


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid credential with a few characters changed, inserted or deleted."""
    text = list(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        ch = draw(st.one_of(st.sampled_from(list(_B64 + ".:-#?&=/% ")), st.characters()))
        if op == "replace" and text:
            text[i] = ch
        elif op == "insert":
            text.insert(i, ch)
        elif text:
            del text[i]
    return "".join(text)


_url = st.builds(
    lambda scheme, host, path, query, frag: f"{scheme}://{host}{path}?{query}{frag}",
    st.sampled_from(["https", "http", "HTTPS", "hTTp"]),
    st.one_of(st.sampled_from(["id.example", "app.frontelio.com", "[::1]", "a:b@c", "xn--e1a.example:443"]), st.text(max_size=12)),
    st.sampled_from(["/verify.php", "/api/verify-token.php", "/x/verify.php/", "/visitor/" + INVITE, "/visitor/vis_x", "/", ""]),
    st.lists(st.one_of(
        st.builds(lambda t: f"token={t}", st.text(alphabet=_B64 + "%+=&;", max_size=600)),
        st.builds(lambda k, v: f"{k}={v}", st.text(max_size=6), st.text(max_size=10)),
    ), max_size=4).map("&".join),
    st.sampled_from(["", "#", "#token=abc", "#frag"]),
)


_invite = st.builds(lambda s: "vis_" + s, st.text(alphabet=_B64 + "+/=. ", max_size=80))


_hex_groups = st.builds(
    lambda groups, seps: "".join(g + s for g, s in zip(groups, seps)),
    st.lists(st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=5), min_size=1, max_size=12),
    st.lists(st.sampled_from([":", "-", " ", "", ".", "::", "0x"]), min_size=12, max_size=12),
)


_pin = st.builds(lambda d, tail: d + tail, st.text(alphabet="0123456789", max_size=16), st.sampled_from(["", "#", "##", "*", " #"]))


NEAR_MISS = st.one_of(
    _jwt_shaped, mutated(_real_jwt), _url, _invite, mutated(st.just(INVITE)), _hex_groups,
    mutated(st.sampled_from([USER_CARD, DEVICE_CARD, "04:a2:2c:1a:7b:3f:80", "123:4567"])), _pin,
)


def _typing_table(layout: keymap.Layout) -> dict[str, tuple[str, bool, bool]]:
    """char → (key, shift, altgr) for every character the layout types without a dead key."""
    table: dict[str, tuple[str, bool, bool]] = {}
    for key, chars in layout.keys.items():
        for level, char in enumerate(chars):
            if char not in layout.dead and char not in table:
                table[char] = (key, level == 1, level == 2)
    return table


TYPING_TABLES = {name: _typing_table(layout) for name, layout in keymap.LAYOUTS.items()}


def _ev(t: float, type_: int, code: int, value: int) -> InputEvent:
    sec = int(t)
    return InputEvent(sec, int((t - sec) * 1e6), type_, code, value)


def check_wedge_typing(layout: str, text: str, gaps: list[float], noise: list[int]) -> None:
    """Typing `text` as a scanner does (modifiers, SYN/MSC noise, autorepeat, gaps under the
    timeout) yields exactly `text` once, and that scan decides."""
    CASES["wedge_typing"] += 1
    table = TYPING_TABLES[layout]
    decoder = WedgeDecoder(layout, inter_key_timeout_s=0.5)
    t = 1_700_000_000.0
    events: list[InputEvent] = []
    for i, char in enumerate(text):
        key, shift, altgr = table[char]
        mods = (["KEY_LEFTSHIFT"] if shift else []) + (["KEY_RIGHTALT"] if altgr else [])
        t += gaps[i % len(gaps)] if gaps else 0.004
        for m in mods:
            events.append(_ev(t, ecodes.EV_KEY, ecodes.ecodes[m], 1))
        events.append(_ev(t, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70004))
        events.append(_ev(t, ecodes.EV_KEY, ecodes.ecodes[key], 1))
        if noise and noise[i % len(noise)] == 2:
            events.append(_ev(t, ecodes.EV_KEY, ecodes.ecodes[key], 2))  # autorepeat: ignored
        events.append(_ev(t, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
        events.append(_ev(t, ecodes.EV_KEY, ecodes.ecodes[key], 0))
        for m in reversed(mods):
            events.append(_ev(t, ecodes.EV_KEY, ecodes.ecodes[m], 0))
    events.append(_ev(t + 0.004, ecodes.EV_KEY, ecodes.KEY_ENTER, 1))
    events.append(_ev(t + 0.004, ecodes.EV_KEY, ecodes.KEY_ENTER, 0))
    outcomes = [o for o in map(decoder.feed, events) if o is not None]
    if not text:
        assert outcomes == []
        return
    assert len(outcomes) == 1 and isinstance(outcomes[0], TypedScan)
    assert outcomes[0].text == text and not outcomes[0].too_long
    check_scan(outcomes[0].text.encode(), count=False)


def check_wedge_events(layout: str, events: list[tuple[float, int, int, int]], max_bytes: int) -> None:
    """Any event stream (time going backwards, unknown codes, odd values): scans stay bounded and
    whatever comes out decides."""
    CASES["wedge_events"] += 1
    decoder = WedgeDecoder(layout, inter_key_timeout_s=0.5, max_bytes=max_bytes)
    for t, type_, code, value in events:
        outcome = decoder.feed(_ev(t, type_, code, value))
        assert outcome is None or isinstance(outcome, (TypedScan, DiscardedScan))
        if isinstance(outcome, TypedScan):
            assert outcome.text and len(outcome.text.encode()) <= max_bytes + 8
            decision = check_scan(outcome.text.encode(), count=False)
            if outcome.too_long or outcome.unknown_keys:
                assert decision.reason is Reason.MALFORMED_CREDENTIAL or len(outcome.text.encode()) <= MAX_SCAN_BYTES


_known_codes = sorted({ecodes.ecodes[k] for k in keymap.US.keys} | {ecodes.KEY_ENTER, ecodes.KEY_KPENTER,
                       ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTALT, ecodes.KEY_CAPSLOCK, ecodes.KEY_LEFTCTRL})


event_tuples = st.tuples(
    st.one_of(st.floats(1e9, 1e9 + 100), st.floats(0, 2**31), st.just(1e9)),
    st.sampled_from([ecodes.EV_KEY] * 4 + [ecodes.EV_SYN, ecodes.EV_MSC, 0x1F]),
    st.one_of(st.sampled_from(_known_codes), st.integers(0, 0x2FF), st.just(ecodes.SYN_DROPPED)),
    st.one_of(st.sampled_from([0, 1, 1, 2]), st.integers(-(2**31), 2**31 - 1)),
)


SITE_FORMATS: list[tuple[str, ...]] = [("H10301", "H10306", "H10304"), ("H10301", "H10306", "H10302"), ("H10302",), ()]


def check_wiegand(bits: tuple[Any, ...], formats: tuple[str, ...]) -> None:
    """Any frame: a value; a card's canonical key is a card number the scan parser accepts
    unchanged (the cache and the reader agree on one spelling) and then decides."""
    CASES["wiegand"] += 1
    result = decode(bits, formats=formats)  # type: ignore[arg-type]
    assert isinstance(result, (WiegandCard, WiegandKey, WiegandError))
    if isinstance(result, WiegandError):
        assert result.length == len(bits) and result.reason
    elif isinstance(result, WiegandKey):
        assert len(bits) in (4, 8) and result.symbol in "0123456789*#"
    else:
        assert len(bits) == FORMATS[result.format].length and result.format in formats
        key = card_key(result)
        credential = parse(key.encode(), "card")
        assert credential == CardNumber(key), f"{result.format} key does not survive normalise_card"
        check_scan(key.encode(), "card", Source.CARD, count=False)


wiegand_bits = st.one_of(
    st.integers(0, 130).flatmap(lambda n: st.lists(st.integers(0, 1), min_size=n, max_size=n)),
    st.sampled_from([4, 8, 26, 34, 37]).flatmap(lambda n: st.lists(st.integers(0, 1), min_size=n, max_size=n)),
    st.lists(st.one_of(st.integers(0, 1), st.integers(-2, 3), st.booleans(), st.floats(0, 1), st.none(), st.text(max_size=1)),
             max_size=40),
).map(tuple)


class BundleSite:
    """A loaded cache file copied per example, so each case starts from the same version 1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "template").mkdir()
        template = loaded_cache(root / "template")
        template.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        template.close()
        self.template = root / "template" / "grants.db"
        self.n = 0

    def fresh(self) -> GrantCache:
        self.n += 1
        d = self.root / f"c{self.n % 4}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        shutil.copyfile(self.template, d / "grants.db")
        return GrantCache(d / "grants.db")


def _dump(conn: sqlite3.Connection) -> list[str]:
    return list(conn.iterdump())


def check_bundle(site: BundleSite, data: bytes, *, must_reject: bool = False) -> bool:
    """Apply `data` to a version-1 cache: it applies, or BundleRejected leaves the cache exactly as
    it was and the old grants still decide. Returns True if applied."""
    cache = site.fresh()
    try:
        before = _dump(cache.conn)
        try:
            apply_bundle(cache.conn, io.BytesIO(data), SIGNING_KEY.public_key())
        except BundleRejected as e:
            assert str(e) and USER_CARD not in str(e) and PIN not in str(e)
            assert not cache.conn.in_transaction
            assert _dump(cache.conn) == before, "a refused bundle changed the cache"
            cache.invalidate()
            verdict = Verifier(cache).decide(parse(USER_CARD.encode()), READER, Source.CARD, NOW)
            assert verdict.granted and verdict.cache_version == 1
            return False
        assert not must_reject, "a tampered bundle was applied"
        cache.invalidate()
        cache.refresh()
        assert cache.meta.version > 1
        # Whatever the bundle held, decisions on it are still total.
        v = Verifier(cache, POLICY)
        for scan, hint in ((USER_CARD, None), (PIN, "pin"), (INVITE, None), (make_jwt(user_claims()), None),
                           (make_jwt(user_claims(), alg="ES256"), None), (make_jwt(user_claims(), alg="HS256"), None)):
            assert isinstance(v.decide(parse(scan.encode(), hint), READER, Source.CARD, NOW), AccessDecision)
        return True
    finally:
        cache.close()


def sign_manifest(claims: dict[str, Any]) -> bytes:
    import jwt

    return jwt.encode(claims, SIGNING_KEY, algorithm="EdDSA").encode()


_GOOD = make_bundle(records(), version=2)


GOOD_HEAD, GOOD_BODY = _GOOD.split(b"\n", 1)


GOOD_CLAIMS: dict[str, Any] = json.loads(base64.urlsafe_b64decode(GOOD_HEAD.split(b".")[1] + b"=="))


CLAIM_VALUES = st.one_of(json_values, st.integers(-(2**70), 2**70), st.sampled_from(
    ["full", "delta", "door-bridge-bundle/1", "2026-06-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
     "9999-12-31T23:59:59-14:00", "a" * 64, "A" * 64]))


_FIELDS = ["id", "name", "readers", "scheduleAware", "active", "userId", "zoneId", "startsAt", "endsAt", "revoked",
           "number", "devices", "start_at", "end_at", "cardNumber", "cardName", "startDate", "endDate",
           "inviteCode", "inviteCodeSha256", "displayName", "zoneIds", "validFrom", "validUntil",
           "keyboardPwdHash", "keyboardPwdName", "kid", "jwk", "op"]


_field_values = st.one_of(
    json_values, st.text(max_size=70), st.integers(-(2**64), 2**64),
    st.sampled_from(["zone_stock", READER, "user_layla", USER_CARD, "04:a2:2c", "upsert", "delete",
                     "2026-06-01T12:00:00Z", "2026-06-01T12:00:00", "+275760-09-13T00:00:00Z", "",
                     253402300799999, -62135596800000, 2**63, True, [READER], ["zone_stock"], [""]]),
    st.fixed_dictionaries({"kty": st.sampled_from(["OKP", "EC", "oct", "RSA", "x"])},
                          optional={"crv": st.sampled_from(["Ed25519", "P-256", "X25519", "P-384"]),
                                    "x": json_values, "y": json_values, "k": st.one_of(json_values, st.just("c2VjcmV0")), "d": json_values,
                                    "alg": json_values}),
)


bundle_record = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.one_of(st.sampled_from(["zone", "user", "grant", "shift", "card", "ic_card", "visitor", "passcode", "key"]), json_values),
    st.dictionaries(st.sampled_from(_FIELDS), _field_values, max_size=7),
)


def signed_bundle(recs: list[dict[str, Any]], *, version: int = 2, kind: str = "full", base_version: int | None = None,
                  key: Any = SIGNING_KEY) -> bytes:
    """A bundle as a central that escapes non-ASCII (`json.dumps` defaults) would send it: the
    body may hold any JSON string escape, which `BundleWriter` (raw UTF-8) never writes."""
    import hashlib

    import jwt

    body = b"".join(json.dumps(r).encode() + b"\n" for r in recs)
    manifest = Manifest(version=version, kind=kind, base_version=base_version, issued_at_ms=to_ms(NOW),
                        not_after_ms=to_ms(NOW + timedelta(days=7)), body_sha256=hashlib.sha256(body).hexdigest(),
                        records=len(recs), pin_hashing=PIN_HASHING)
    return jwt.encode(manifest.claims(), key, algorithm="EdDSA").encode() + b"\n" + body


EXAMPLE_TEXT = (ROOT / "config.example.toml").read_text()


EXAMPLE_CONFIG: dict[str, Any] = tomllib.loads(EXAMPLE_TEXT)


def check_config_dict(data: Any) -> Config | None:
    CASES["config_dict"] += 1
    try:
        return from_dict(data, source="<fuzz>")
    except ConfigError as e:
        assert str(e).startswith("<fuzz>: ")
        return None


def check_config_text(path: Path, text: str | bytes) -> Config | None:
    CASES["config_toml"] += 1
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    try:
        return load(path)
    except ConfigError as e:
        assert str(e).startswith(str(path))
        return None


@st.composite
def mutated_config(draw: st.DrawFn) -> Any:
    """config.example.toml's data with a few keys deleted, retyped, renamed or added."""
    data = json.loads(json.dumps(EXAMPLE_CONFIG))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = data
        path: list[Any] = []
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node))) if isinstance(node, dict) else draw(st.integers(0, len(node) - 1))
            path.append(key)
            node = node[key]
        if not path:
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["delete", "retype", "add"]))
        if op == "delete":
            del parent[path[-1]]
        # Copies: `sampled_from` hands out the same list objects every time, and a later mutation in
        # this loop must not change the strategy's constants (hypothesis calls that flaky data).
        elif op == "retype":
            parent[path[-1]] = copy.deepcopy(draw(_field_values))
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = copy.deepcopy(draw(_field_values))
    return data


toml_lines = st.one_of(
    st.sampled_from(EXAMPLE_TEXT.splitlines()),
    st.builds(lambda s: f"[{s}]", st.sampled_from(sorted(EXAMPLE_CONFIG) + ["doors.main", "[readers]", "upstream.http", "x"])),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(["id", "mode", "relay_pin", "pulse_s", "type", "port", "door",
                                                          "public_key", "base_url", "api_key_file", "layout", "x"]),
              st.sampled_from(['"a"', "1", "-1", "1e400", "nan", "inf", "true", "[]", "{}", '"\\u0000"', "1979-05-27",
                               '"/dev/ttyUSB0"', '"main"', '"serial"', "99999999999999999999", '"""x"""', "[1, "])),
    st.text(max_size=30),
)


API_KEY = "mk_FuzzKeyZ9y8x7w6v5u4t3s2r1q0p"


DIGITAL_ID_KEY = "did_FuzzKey_0123456789abcdef"


JWT = make_jwt(user_claims())


DIGITAL_ID_TOKEN = "dIdTok3n_abcdefghijklmnop"


MAX_BODY = 4096


class Upstreams:
    """One adapter per upstream on a shared loop; `reply` is what the next request gets."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.reply: Callable[[httpx.Request], httpx.Response] = lambda r: httpx.Response(500)
        self.adapters = {
            "frontelio": FrontelioAdapter(self._http("frontelio", "http://127.0.0.1:9/api/v1"), ApiKey(API_KEY), 1.0),
            "sna": SnaAdapter(self._http("sna", "http://127.0.0.1:9"), SnaSection(device_sn="SN-1"), 1.0,
                              now=lambda: NOW),
            "digital_id": DigitalIdAdapter(self._http("digital_id", "http://127.0.0.1:9"),
                                           DigitalIdSection(base_url="http://127.0.0.1:9"), ApiKey(DIGITAL_ID_KEY), 1.0),
        }

    def _http(self, name: str, base: str) -> UpstreamHttp:
        transport = httpx.MockTransport(lambda request: self.reply(request))
        client = httpx.AsyncClient(base_url=base, transport=transport)
        return UpstreamHttp(name, client, CircuitBreaker(name, 1000, 1.0), MAX_BODY)

    def close(self) -> None:
        for adapter in self.adapters.values():
            self.runner.run(adapter.aclose())
        self.runner.close()


CREDENTIALS: dict[str, tuple[Credential, Source]] = {
    "frontelio": (CredentialJwt(JWT), Source.PHONE_QR),
    "sna": (CardNumber(USER_CARD), Source.CARD),
    "digital_id": (DigitalIdToken(DIGITAL_ID_TOKEN), Source.PHONE_QR),
}


SECRETS = (API_KEY, DIGITAL_ID_KEY, JWT, JWT.split(".")[2], USER_CARD, DIGITAL_ID_TOKEN)


def check_upstream(u: Upstreams, name: str, status: int, body: bytes, headers: dict[str, str]) -> None:
    """Whatever the upstream answers: an online AccessDecision, or an UpstreamError naming no secret."""
    CASES[f"upstream_{name}"] += 1
    u.reply = lambda request: httpx.Response(status, content=body, headers=headers)
    adapter = u.adapters[name]
    adapter._http.breaker = CircuitBreaker(name, 1000, 1.0)  # every case reaches the parser
    credential, source = CREDENTIALS[name]
    try:
        result = u.runner.run(adapter.verify(credential, READER, source))
    except UpstreamNotApplicable:
        raise AssertionError("the adapter accepted this credential, then said not applicable") from None
    except UpstreamError as e:
        text = f"{e} {e!r} {getattr(e, 'hint', '')}"
        assert not any(s in text for s in SECRETS), "an upstream error quotes a secret"
        assert e.upstream == name
        return
    assert isinstance(result, AccessDecision) and result.online
    assert result.fingerprint == "" and result.credential_kind == credential.kind  # the daemon keys it
    assert (result.reason is None) == result.granted
    assert not any(s in repr(result) for s in SECRETS)


DOCUMENTED_ANSWERS = {
    "frontelio": {"decision": "GRANT", "userId": "usr_1", "userName": "Layla", "zoneName": "Stock", "reason": None, "replay": False},
    "sna": {"command": "unlock", "card": {"number": USER_CARD, "name": "Guest", "start_at": "2026-01-01T00:00:00",
                                          "end_at": "2027-01-01T00:00:00Z"}},
    "digital_id": {"success": True, "valid": True, "error": None, "employee": {"id": 1, "full_name": "Jane Doe"}},
}


_wire_values = st.one_of(json_values, st.sampled_from(
    ["GRANT", "DENY", "NO_GRANT", "RATE_LIMITED", "MALFORMED_CREDENTIAL", "unlock", "deny", "expired", "revoked",
     "server_error", "unauthorized", "token_not_found", "2026-13-01", "2026-06-01T12:00:00+25:00", 10**30, -1]))


@st.composite
def upstream_answer(draw: st.DrawFn, name: str) -> bytes:
    kind = draw(st.sampled_from(["mutated", "json", "raw", "huge", "nested"]))
    if kind == "mutated":
        doc = json.loads(json.dumps(DOCUMENTED_ANSWERS[name]))
        for key in draw(st.sets(st.sampled_from(sorted(doc) + ["extra"]), max_size=3)):
            if draw(st.booleans()):
                doc.pop(key, None)
            else:
                doc[key] = draw(_wire_values)
        if isinstance(doc.get("card"), dict) and draw(st.booleans()):
            doc["card"][draw(st.sampled_from(["number", "start_at", "end_at", "name"]))] = draw(_wire_values)
        return json.dumps(doc).encode()
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "raw":
        return draw(st.binary(max_size=300))
    if kind == "huge":
        return b'{"decision": "GRANT", "pad": "' + b"x" * draw(st.integers(MAX_BODY - 40, MAX_BODY * 4)) + b'"}'
    return b"[" * draw(st.integers(900, 20000)) + b"]" * draw(st.integers(0, 10))


answer_statuses = st.one_of(st.sampled_from([200, 200, 200, 201, 204, 400, 401, 402, 403, 404, 409, 422, 429, 500, 503]),
                      st.integers(100, 599))


answer_headers = st.one_of(st.just({}), st.just({"Content-Type": "text/html"}),
                     st.builds(lambda n: {"Content-Length": str(n)}, st.integers(0, 10**12)))

