"""`door-bridge`: the command line a technician and a systemd unit use.

Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage (the message names the file,
the key and what is wrong).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from bridge import __version__
from bridge.service import logsetup
from bridge.config import Config, ConfigError, load
from bridge.service.heap import freeze_startup_heap

import structlog

log = structlog.get_logger()

DEFAULT_CONFIG = "/etc/door-bridge/config.toml"
EXIT_CONFIG = 2


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("DOOR_BRIDGE_CONFIG") or DEFAULT_CONFIG


def _load(args: argparse.Namespace) -> Config:
    return load(_config_path(args))


# --- run / demo / check-config -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = load(path)
    _check_keys(config, path)
    logsetup.configure(config.bridge.log_level, config.bridge.log_format)
    from bridge.service.daemon import Daemon
    from bridge.door.pins import GpioUnavailable
    from bridge.state.outbox import OutboxOpenError
    from bridge.state.files import StateFileError

    async def main() -> int:
        daemon = Daemon(config)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload(daemon, path)))
        try:
            await daemon.start()
        except GpioUnavailable as e:
            log.error("gpio_unavailable", error=str(e))
            for door in daemon.doors.values():
                door.release()
            return 1
        except (OutboxOpenError, StateFileError) as e:
            # One line with the cause and what to check; the relays were released before this.
            log.error("state_unusable", error=str(e))
            for door in daemon.doors.values():
                door.release()
            return 1
        log.debug("startup_heap_frozen", objects=freeze_startup_heap())  # full GCs skip it: bridge/service/heap.py
        try:
            await stop.wait()
        finally:
            await daemon.stop("SIGTERM")
        return 0

    return asyncio.run(main())


async def _reload(daemon, path: str) -> None:
    """SIGHUP: re-read the file; a bad file changes nothing (the running config stays)."""
    daemon.notifier.reloading("reloading configuration")
    try:
        new = load(path)
        _check_keys(new, path)
    except ConfigError as e:
        log.error("reload_failed", error=str(e), check="fix the file, then systemctl reload door-bridge; the old config stays in force")
    else:
        restart = daemon.reload(new)
        log.info("reloaded", config=path, needs_restart=",".join(restart) or "-")
        if restart:
            log.warning("reload_needs_restart", changed=",".join(restart), check="systemctl restart door-bridge to apply these")
    daemon.notifier.ready(daemon.health.status_line())


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge.cli.demo import run_demo

    return asyncio.run(run_demo())


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.file or _config_path(args)
    config = load(path)
    _check_keys(config, path)
    print(f"{path}: ok — bridge {config.bridge.id}, mode {config.bridge.mode}, "
          f"{len(config.readers)} reader(s), {len(config.doors)} door(s)")
    return 0


def _check_keys(config: Config, source: str) -> None:
    """Every file the config names, with the loaders `run` uses (bridge/service/config_files.py)."""
    from bridge.service.config_files import check_files

    check_files(config, source)


# --- grants ----------------------------------------------------------------------------------------


def _cache(config: Config):
    from verifier.cache import GrantCache

    state = Path(config.bridge.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    return GrantCache(state / "grants.db")


def cmd_grants_import(args: argparse.Namespace) -> int:
    from bridge.state import bundle_floor
    from verifier.bundle import BundleRejected, apply_file

    config = _load(args)
    from bridge.service.config_files import bundle_public_key

    key = bundle_public_key(config, _config_path(args))
    cache = _cache(config)
    state_dir = Path(config.bridge.state_dir)
    try:
        result = apply_file(cache.conn, Path(args.bundle), key, bundle_floor.load(state_dir, key),
                            audience=(config.bridge.id,))
        bundle_floor.record(state_dir, key, result)
    except BundleRejected as e:
        print(f"{args.bundle}: refused: {e}; the cache stays at version {cache.meta.version}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{args.bundle}: cannot read: {e.strerror}", file=sys.stderr)
        return 1
    print(f"applied {result.kind} bundle version {result.version}: {result.records} records")
    return 0


def cmd_grants_list(args: argparse.Namespace) -> int:
    from verifier.timeutil import from_ms, iso

    config = _load(args)
    cache = _cache(config)
    meta = cache.meta
    print(f"cache version {meta.version}, issued {iso(from_ms(meta.issued_at_ms)) or '-'}, "
          f"not after {iso(from_ms(meta.not_after_ms)) or '-'}")
    for table, n in cache.counts().items():
        print(f"  {table:<10} {n}")
    limit = args.limit
    print("grants:")
    for g in cache.list_grants(limit):
        w = g.window
        print(f"  {g.id}  {g.user_id} ({g.user_name or '?'}) → {g.zone_id}  [{iso(from_ms(w.starts_ms)) or '…'}, "
              f"{iso(from_ms(w.ends_ms)) or '…'}){'  REVOKED' if w.revoked else ''}")
    print("cards (number shown as its last 4 characters):")
    for c in cache.list_cards(limit):
        w = c.window
        print(f"  …{c.number[-4:]}  {c.name or '-'}  user={c.user_id or '-'} devices={c.devices or '-'} "
              f"[{iso(from_ms(w.starts_ms)) or '…'}, {iso(from_ms(w.ends_ms)) or '…'}){'  REVOKED' if w.revoked else ''}")
    return 0


def _signing_key(config: Config, source: str):
    from verifier.bundle import load_signing_key

    path = config.cache.signing_key_file
    if path is None:
        raise ConfigError(f"{source}: cache.signing_key_file: required for standalone grants "
                          "(create one with `door-bridge grants keygen --out FILE`)")
    try:
        return load_signing_key(Path(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{source}: cache.signing_key_file: cannot use {path}: {e}") from None


def cmd_grants_keygen(args: argparse.Namespace) -> int:
    from verifier.bundle import generate_signing_key, public_key_text

    try:
        key = generate_signing_key(Path(args.out))
    except FileExistsError:
        print(f"{args.out}: exists; refusing to overwrite a signing key", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (mode 0600). Put this in the config:\n"
          f"[cache]\npublic_key = \"{public_key_text(key.public_key())}\"\nsigning_key_file = \"{args.out}\"")
    return 0


def _window(args: argparse.Namespace, start: str, end: str) -> dict[str, Any]:
    out = {}
    if args.valid_from:
        out[start] = args.valid_from
    if args.valid_until:
        out[end] = args.valid_until
    return out


def cmd_grants_add(args: argparse.Namespace) -> int:
    from bridge.cli.standalone import pin_hashing_for
    from verifier.bundle import BundleRejected
    from verifier.credentials import PIN_MAX_DIGITS, PIN_MIN_DIGITS, is_pin, normalise_card
    from verifier.hashing import hash_pin
    from verifier.types import CardNumber

    config = _load(args)
    source = _config_path(args)
    key = _signing_key(config, source)
    cache = _cache(config)
    devices = [d for d in (args.devices or "").split(",") if d]
    pin_hashing = None
    if args.kind == "card":
        card = normalise_card(args.value)
        if not isinstance(card, CardNumber):
            print("not a card number (hex or decimal, separators allowed)", file=sys.stderr)
            return EXIT_CONFIG
        if not devices and not args.user:
            print("a card needs --devices or --user", file=sys.stderr)
            return EXIT_CONFIG
        rec: dict[str, Any] = {"type": "card", "number": card.number, "name": args.name, **_window(args, "start_at", "end_at")}
        if devices:
            rec["devices"] = devices
        if args.user:
            rec["userId"] = args.user
        records = [rec]
    elif args.kind == "pin":
        if not devices:
            print("a passcode needs --devices", file=sys.stderr)
            return EXIT_CONFIG
        pin = (sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("PIN: ")).strip()
        if not is_pin(pin):
            print(f"a PIN is {PIN_MIN_DIGITS}-{PIN_MAX_DIGITS} digits", file=sys.stderr)
            return EXIT_CONFIG
        pin_hashing = pin_hashing_for(cache)
        records = [{"type": "passcode", "id": args.value, "keyboardPwdHash": hash_pin(pin, pin_hashing),
                    "keyboardPwdName": args.name, "devices": devices, **_window(args, "startDate", "endDate")}]
    elif args.kind == "zone":
        records = [{"type": "zone", "id": args.value, "name": args.name, "readers": devices,
                    "scheduleAware": bool(args.schedule_aware)}]
    elif args.kind == "user":
        records = [{"type": "user", "id": args.value, "name": args.name, "active": True}]
        if args.zone:
            records.append({"type": "grant", "id": f"{args.value}@{args.zone}", "userId": args.value,
                            "zoneId": args.zone, **_window(args, "startsAt", "endsAt")})
    elif args.kind == "record":
        try:
            records = _door_policy_records(sys.stdin.read() if args.value == "-" else args.value)
        except ValueError as e:
            print(f"record: {e}", file=sys.stderr)
            return EXIT_CONFIG
    elif args.kind == "key":
        from bridge.cli.jwk_file import JwkFileError, read_public_jwk

        if not args.key_file:
            print("a key needs --key-file (the credential issuer's public key: a JWK or a PEM file)", file=sys.stderr)
            return EXIT_CONFIG
        try:
            jwk = read_public_jwk(Path(args.key_file))
        except JwkFileError as e:
            print(f"{args.key_file}: {e}", file=sys.stderr)
            return EXIT_CONFIG
        records = [{"type": "key", "kid": args.value, "jwk": jwk}]
    else:  # pragma: no cover - argparse restricts choices
        raise AssertionError(args.kind)
    try:
        version = _apply_standalone(cache, key, records, pin_hashing, config)
    except BundleRejected as e:
        print(f"refused: {e}; the cache stays at version {cache.meta.version}", file=sys.stderr)
        return 1
    print(f"added {args.kind} {'(PIN not shown)' if args.kind == 'pin' else ''}; cache version {version}")
    return 0


# Records a standalone site may add as they are (the same as a central's): door policy and grants.
_RECORD_TYPES = ("role", "schedule", "holiday", "door_mode", "grant", "user")


def _door_policy_records(text: str) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(l for l in text.splitlines() if l.strip()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {n + 1}: not JSON: {e.msg}") from None
        if not isinstance(rec, dict) or rec.get("type") not in _RECORD_TYPES:
            raise ValueError(f"line {n + 1}: a record of type {', '.join(_RECORD_TYPES)} is needed")
        out.append(rec)
    if not out:
        raise ValueError("no record given")
    return out


def _apply_standalone(cache: Any, key: Any, records: list[dict[str, Any]], pin_hashing: Any, config: Config) -> int:
    from bridge.cli.standalone import apply_records

    return apply_records(cache, key, [{k: v for k, v in r.items() if v is not None} for r in records],
                         now=datetime.now(timezone.utc), pin_hashing=pin_hashing,
                         archive=Path(config.bridge.state_dir) / "bundles")


def cmd_grants_revoke(args: argparse.Namespace) -> int:
    from bridge.cli.standalone import apply_records
    from verifier.credentials import card_key

    config = _load(args)
    key = _signing_key(config, _config_path(args))
    cache = _cache(config)
    if args.kind == "card":
        number = card_key(args.value)
        if not number or not cache.has_card(number):
            print("no such card in the cache", file=sys.stderr)
            return 1
        record = {"type": "card", "op": "delete", "number": number}
    elif args.kind == "grant":
        grant = cache.grant(args.value)
        if grant is None:
            print(f"no grant {args.value!r} in the cache", file=sys.stderr)
            return 1
        from verifier.timeutil import from_ms, iso

        record = {"type": "grant", "id": args.value, "userId": grant.user_id, "zoneId": grant.zone_id, "revoked": True,
                  "startsAt": iso(from_ms(grant.window.starts_ms)), "endsAt": iso(from_ms(grant.window.ends_ms))}
    elif args.kind == "key":
        if not cache.has_jwk(args.value):
            print(f"no credential-JWT key {args.value!r} in the cache", file=sys.stderr)
            return 1
        record = {"type": "key", "op": "delete", "kid": args.value}
    else:
        record = {"type": args.kind, "op": "delete", "id": args.value}
    version = apply_records(cache, key, [record], now=datetime.now(timezone.utc),
                            archive=Path(config.bridge.state_dir) / "bundles")
    print(f"revoked {args.kind}; cache version {version}")
    return 0


# --- events ----------------------------------------------------------------------------------------


def cmd_events_tail(args: argparse.Namespace) -> int:
    import time

    from bridge.state.outbox import Outbox

    config = _load(args)
    path = Path(config.bridge.state_dir) / "audit.db"
    if not path.exists():
        print(f"{path}: no audit database yet (has the daemon run?)", file=sys.stderr)
        return 1
    outbox = Outbox(path, config.audit.max_events)
    last = 0
    events = outbox.recent(args.n)
    while True:
        for e in events:
            print(json.dumps(e.as_wire() | {"acked": e.acked}) if args.json else _event_line(e))
            last = e.seq
        if not args.follow:
            return 0
        sys.stdout.flush()
        time.sleep(0.5)
        events = outbox.recent(1000, after_seq=last)


def cmd_events_export(args: argparse.Namespace) -> int:
    from bridge.state.export import SinceError, export_events, is_offline_decision, parse_since
    from bridge.state.outbox import Outbox

    config = _load(args)
    try:
        since = parse_since(args.since, datetime.now(timezone.utc))
    except SinceError as e:
        print(str(e), file=sys.stderr)
        return EXIT_CONFIG
    path = Path(config.bridge.state_dir) / "audit.db"
    if not path.exists():
        print(f"{path}: no audit database yet (has the daemon run?)", file=sys.stderr)
        return 1
    outbox = Outbox(path, config.audit.max_events)
    try:
        n = export_events(outbox, since, sys.stdout, keep=is_offline_decision if args.offline else lambda e: True)
    finally:
        outbox.close()
    print(f"{n} events since {since.isoformat(timespec='seconds')}", file=sys.stderr)
    return 0


def _event_line(e) -> str:
    b = e.body
    parts = [e.at, e.type]
    for key in ("readerId", "decision", "reason", "userId", "zoneId", "source", "replay", "credentialFingerprint", "door"):
        if b.get(key) not in (None, False):
            parts.append(f"{key}={b[key]}")
    parts.append("sent" if e.acked else "pending")
    return " ".join(str(p) for p in parts)


# --- status, doctor, lifecycle, passcodes ----------------------------------------------------------


def _status_path(args: argparse.Namespace) -> Path:
    from bridge.service.status_socket import find_socket

    try:
        state_dir: Path | None = Path(_load(args).bridge.state_dir)
    except ConfigError:
        state_dir = None
    return find_socket(state_dir)


def cmd_status(args: argparse.Namespace) -> int:
    from bridge.service.status_socket import StatusUnavailable, fetch_status, format_status

    try:
        status = fetch_status(_status_path(args))
    except StatusUnavailable as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    # 0 healthy, 1 no answer from the daemon, 3 running but degraded (a reader failed; docs/operations.md).
    health = status.get("health")
    return 3 if isinstance(health, dict) and health.get("state") not in (None, "ok") else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from bridge.cli import doctor

    path = args.config or os.environ.get("DOOR_BRIDGE_CONFIG")
    if path is None and Path(DEFAULT_CONFIG).exists():
        path = DEFAULT_CONFIG
    return doctor.run(path, sys.stdout)


def cmd_record_exit(args: argparse.Namespace) -> int:
    from bridge.state import lifecycle

    config = _load(args)
    lifecycle.record_exit(Path(config.bridge.state_dir))
    return 0


def cmd_passcode_mint(args: argparse.Namespace) -> int:
    from bridge.config.secret_files import ApiKeyError, load_api_key
    from verifier.passcode import mint
    from verifier.timeutil import TimeFormatError, parse_instant

    try:
        secret = load_api_key(key_file=Path(args.secret_file)).reveal().encode()
        start, end = parse_instant(args.valid_from, "--from"), parse_instant(args.valid_until, "--until")
        code = mint(secret, args.door, start, end)
    except (ApiKeyError, TimeFormatError, ValueError) as e:
        print(f"cannot mint: {e}", file=sys.stderr)
        return EXIT_CONFIG
    print(code)
    return 0


# --- wiring ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="door-bridge", description="Door controller daemon for cloud access systems.")
    p.add_argument("--version", action="version", version=f"door-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help=f"config file (default $DOOR_BRIDGE_CONFIG or {DEFAULT_CONFIG})")
        return sp

    with_config(sub.add_parser("run", help="run the daemon")).set_defaults(func=cmd_run)
    sub.add_parser("demo", help="simulated door on this machine: scans from stdin").set_defaults(func=cmd_demo)
    cc = with_config(sub.add_parser("check-config", help="validate a config file (exit 2 if wrong)"))
    cc.add_argument("file", nargs="?")
    cc.set_defaults(func=cmd_check_config)
    st = with_config(sub.add_parser("status", help="live state of the running daemon"))
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    dr = with_config(sub.add_parser("doctor", help="find readers, serial ports, NFC frontends and GPIO; say what to fix"))
    dr.set_defaults(func=cmd_doctor)
    re_ = with_config(sub.add_parser("record-exit", help="(systemd ExecStopPost) remember why the service stopped"))
    re_.set_defaults(func=cmd_record_exit)
    pc = sub.add_parser("passcode", help="offline passcodes").add_subparsers(dest="passcode_cmd", required=True)
    pm = pc.add_parser("mint", help="mint an offline passcode for a door and a window (whole UTC hours)")
    pm.add_argument("--secret-file", required=True, help="the door's passcode secret (mode 0600)")
    pm.add_argument("--door", required=True, help="door id the code is for (doors.NAME.passcode_door_id, or NAME)")
    pm.add_argument("--from", dest="valid_from", required=True, help="ISO 8601 start (inclusive; no offset = UTC)")
    pm.add_argument("--until", dest="valid_until", required=True, help="ISO 8601 end (exclusive)")
    pm.set_defaults(func=cmd_passcode_mint)

    grants = sub.add_parser("grants", help="inspect and manage the grant cache").add_subparsers(dest="grants_cmd", required=True)
    gi = with_config(grants.add_parser("import", help="apply a signed bundle file (USB / air-gapped sites)"))
    gi.add_argument("bundle")
    gi.set_defaults(func=cmd_grants_import)
    gl = with_config(grants.add_parser("list", help="cache version and contents (card numbers truncated)"))
    gl.add_argument("--limit", type=int, default=50)
    gl.set_defaults(func=cmd_grants_list)
    gk = grants.add_parser("keygen", help="create a local signing key for a standalone site")
    gk.add_argument("--out", required=True)
    gk.set_defaults(func=cmd_grants_keygen)
    ga = with_config(grants.add_parser("add", help="standalone: add a card, PIN (read from stdin), zone, user, "
                                                   "a credential-JWT signing key, or a bundle record"))
    ga.add_argument("kind", choices=["card", "pin", "zone", "user", "record", "key"])
    ga.add_argument("value", help="card number, passcode id, zone id, user id, the key's kid; for `record`: a JSON bundle record "
                                  "(role, schedule, holiday, door_mode, grant, user; docs/bundle-format.md) or - for NDJSON on stdin")
    ga.add_argument("--key-file", help="key: the JWT issuer's PUBLIC key, a JWK (JSON) or PEM file (Ed25519 or P-256)")
    ga.add_argument("--name")
    ga.add_argument("--devices", help="comma-separated reader ids (cards, PINs) or the zone's readers")
    ga.add_argument("--user", help="card: link to a user (zone grants apply)")
    ga.add_argument("--zone", help="user: grant this zone")
    ga.add_argument("--schedule-aware", action="store_true")
    ga.add_argument("--from", dest="valid_from", help="ISO 8601; no offset means UTC")
    ga.add_argument("--until", dest="valid_until", help="ISO 8601, exclusive; no offset means UTC")
    ga.set_defaults(func=cmd_grants_add)
    gr = with_config(grants.add_parser("revoke", help="standalone: revoke a card, grant, passcode, visitor or zone"))
    gr.add_argument("kind", choices=["card", "grant", "passcode", "visitor", "zone", "user", "key"])
    gr.add_argument("value")
    gr.set_defaults(func=cmd_grants_revoke)

    events = sub.add_parser("events", help="the audit outbox").add_subparsers(dest="events_cmd", required=True)
    et = with_config(events.add_parser("tail", help="recent audit events"))
    et.add_argument("-n", type=int, default=20)
    et.add_argument("--follow", "-f", action="store_true")
    et.add_argument("--json", action="store_true")
    et.set_defaults(func=cmd_events_tail)
    ex = with_config(events.add_parser("export", help="audit events as NDJSON on stdout (offline decisions for SNA)"))
    ex.add_argument("--since", required=True, help="ISO 8601 instant (no offset = UTC) or an age: 90m, 24h, 7d")
    ex.add_argument("--offline", action="store_true", help="only decisions the door took without its upstream")
    ex.set_defaults(func=cmd_events_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from bridge.state.files import restrict_umask

    restrict_umask()  # state files are never world-readable, whatever shell started us
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
