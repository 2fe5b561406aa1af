"""`door-bridge status`: the running daemon answers one JSON document per connection on a Unix socket.

A Unix socket in the runtime directory (not an HTTP port) because file permissions are the access
control: the socket is 0660 in /run/door-bridge (0750, group door-bridge), so root and members of
group door-bridge can read the door's state and nobody on the network can. The daemon owns what goes
in the snapshot; this module only serves it, fetches it and renders it for a technician.

Snapshot keys `format_status` knows how to render (all optional; unknown keys are shown as-is):

    bridge_id, version, mode, started_at, now                    (ISO 8601 strings for times)
    upstream: {online, since, last_heartbeat, last_error}
    cache:    {version, issued_at, age_s, not_after, grants, stale}
    outbox:   {depth, oldest_age_s, dropped}
    readers:  {reader_id: {type, connected, last_scan_at, last_decision, last_reason, last_error}}
    doors:    {door: {relay, position, alarm}}
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Self

import structlog

log = structlog.get_logger()

SOCKET_NAME = "status.sock"
DEFAULT_RUNTIME_DIR = Path("/run/door-bridge")
SOCKET_MODE = 0o660
_MAX_ANSWER = 4 * 1024 * 1024

Snapshot = Callable[[], Mapping[str, Any]]


def socket_path(environ: Mapping[str, str] | None = None, state_dir: Path | None = None) -> Path:
    """Where the daemon binds its socket, the one rule: the service's `$RUNTIME_DIRECTORY` (set by
    RuntimeDirectory=), else the state directory (a laptop, a test), else /run/door-bridge."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / SOCKET_NAME
    return (state_dir if state_dir is not None else DEFAULT_RUNTIME_DIR) / SOCKET_NAME


def find_socket(state_dir: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """Where `door-bridge status` looks. A technician's shell has no `$RUNTIME_DIRECTORY`: then the
    state directory's socket if it exists (a daemon run by hand) or if no systemd one does, else
    the service's under /run/door-bridge."""
    env = os.environ if environ is None else environ
    service = socket_path(env)
    if env.get("RUNTIME_DIRECTORY") or state_dir is None:
        return service
    local = socket_path(env, state_dir)
    return local if local.exists() or not service.exists() else service


class StatusUnavailable(Exception):
    """The daemon's status could not be read; `str()` says why and what to do."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class StatusServer:
    """Serves `snapshot()` as JSON to every connection; start() and stop() from the daemon's loop.

    `snapshot` runs on the event loop for every connection, so it must return values the daemon
    already holds (counters, last-seen times), not query SQLite: a technician polling status must
    never delay a door.
    """

    def __init__(self, path: str | os.PathLike[str], snapshot: Snapshot, send_timeout_s: float = 2.0) -> None:
        self.path = Path(path)
        self._snapshot = snapshot
        self._send_timeout_s = send_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None

    async def start(self) -> None:
        if not self.path.parent.is_dir():
            raise OSError(f"{self.path.parent} does not exist (systemd creates it from RuntimeDirectory=; outside systemd choose another path)")
        if self.path.exists() and not self.path.is_socket():
            raise OSError(f"{self.path} exists and is not a socket; remove it or choose another path")
        # asyncio replaces a stale socket left by a killed daemon.
        self._server = await asyncio.start_unix_server(self._answer, path=str(self.path))
        os.chmod(self.path, SOCKET_MODE)
        self._inode = self.path.stat().st_ino
        log.info("status_socket_listening", path=str(self.path))

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        # Unlink only our own socket: a newer daemon may already have bound the same path.
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _document(self) -> bytes:
        try:
            body: Any = dict(self._snapshot())
        except Exception as e:  # noqa: BLE001 - the snapshot is the daemon's code; its bug must not kill the socket
            log.error("status_snapshot_failed", error=f"{type(e).__name__}: {e}")
            body = {"error": f"status snapshot failed: {type(e).__name__}"}
        try:
            text = json.dumps(body, default=_json_default, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            log.error("status_snapshot_not_serialisable", error=str(e))
            text = json.dumps({"error": "status snapshot not serialisable"})
        return text.encode("utf-8") + b"\n"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self._document())
            await asyncio.wait_for(writer.drain(), self._send_timeout_s)
        except (TimeoutError, OSError) as e:
            log.debug("status_client_gone", error=type(e).__name__)
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), self._send_timeout_s)


def fetch_status(path: str | os.PathLike[str] | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """Connect, read the whole answer, parse it. Blocking: this is for the CLI, not the daemon."""
    path = Path(path) if path is not None else socket_path()
    chunks: list[bytes] = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            size = 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_ANSWER:
                    raise StatusUnavailable(f"{path}: answer larger than {_MAX_ANSWER} bytes; is this door-bridge's socket?")
    except FileNotFoundError:
        raise StatusUnavailable(f"door-bridge is not running (no status socket at {path}); try: systemctl status door-bridge") from None
    except ConnectionRefusedError:
        raise StatusUnavailable(f"door-bridge is not answering on {path} (stale socket); try: systemctl status door-bridge") from None
    except PermissionError:
        raise StatusUnavailable(f"permission denied on {path}: run as root or as a member of group door-bridge") from None
    except TimeoutError:
        raise StatusUnavailable(f"door-bridge did not answer within {timeout:g}s on {path}; it may be hung (see journalctl -u door-bridge)") from None
    except OSError as e:
        raise StatusUnavailable(f"cannot read status from {path}: {e.strerror or e}") from None
    try:
        document = json.loads(b"".join(chunks).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StatusUnavailable(f"{path}: the answer is not a JSON status document") from None
    if not isinstance(document, dict):
        raise StatusUnavailable(f"{path}: the answer is not a JSON object")
    return document


# --- rendering ------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 reads a trailing "Z" too
    except ValueError:
        return None
    # The project's rule: a time without an offset is UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _duration(seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return str(seconds)
    s = int(abs(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 60:
        return f"{sign}{s}s"
    if s < 3600:
        return f"{sign}{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{sign}{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{sign}{s // 86400}d {s % 86400 // 3600}h"


class _Renderer:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.now = _parse_time(document.get("now")) or datetime.now(UTC)

    def when(self, value: Any) -> str:
        """`2026-11-22 13:00:01Z (5m 02s ago)`; unparseable values shown as they are."""
        if value is None:
            return "never"
        moment = _parse_time(value)
        if moment is None:
            return str(value)
        shown = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        age = (self.now - moment).total_seconds()
        relative = f"{_duration(age)} ago" if age >= 0 else f"in {_duration(-age)}"
        return f"{shown} ({relative})"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "-"
    return str(value)


def _generic(key: str, value: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if isinstance(value, Mapping):
        lines = [f"{pad}{key}:"]
        for k, v in value.items():
            lines += _generic(str(k), v, indent + 1)
        return lines
    if isinstance(value, list):
        if all(not isinstance(v, (Mapping, list)) for v in value):
            return [f"{pad}{key}: {', '.join(_plain(v) for v in value) or '-'}"]
        lines = [f"{pad}{key}:"]
        for i, v in enumerate(value):
            lines += _generic(f"[{i}]", v, indent + 1)
        return lines
    return [f"{pad}{key}: {_plain(value)}"]


def _others(section: Mapping[str, Any], known: set[str]) -> list[str]:
    """Keys this version does not know yet, shown plainly rather than hidden."""
    return [f"{k} {_plain(v)}" for k, v in section.items() if k not in known]


def _header(d: Mapping[str, Any], r: _Renderer) -> str | None:
    parts = []
    if "bridge_id" in d or "version" in d:
        name = f"door-bridge {d.get('bridge_id', '')}".rstrip()
        parts.append(f"{name} ({d['version']})" if "version" in d else name)
    if "mode" in d:
        parts.append(f"mode {d['mode']}")
    if "started_at" in d:
        started = _parse_time(d["started_at"])
        parts.append(f"up {_duration((r.now - started).total_seconds())}" if started else f"started {d['started_at']}")
    return ", ".join(parts) if parts else None


def _upstream(u: Mapping[str, Any], r: _Renderer) -> str:
    parts = []
    if "online" in u:
        state = "online" if u["online"] else "OFFLINE"
        parts.append(f"{state} since {r.when(u['since'])}" if "since" in u else state)
    if "last_heartbeat" in u:
        parts.append(f"last heartbeat {r.when(u['last_heartbeat'])}")
    if u.get("last_error"):
        parts.append(f"last error: {u['last_error']}")
    parts += _others(u, {"online", "since", "last_heartbeat", "last_error"})
    return "; ".join(parts) or "-"


def _cache(c: Mapping[str, Any], r: _Renderer) -> str:
    parts = []
    if "version" in c:
        parts.append(f"version {_plain(c['version'])}")
    if "issued_at" in c:
        parts.append(f"issued {r.when(c['issued_at'])}")
    elif "age_s" in c:
        parts.append(f"age {_duration(c['age_s'])}")
    if "grants" in c:
        parts.append(f"{_plain(c['grants'])} grants")
    if "not_after" in c:
        parts.append(f"stale after {r.when(c['not_after'])}")
    if c.get("stale"):
        parts.append("STALE")
    parts += _others(c, {"version", "issued_at", "age_s", "grants", "not_after", "stale"})
    return ", ".join(parts) or "-"


def _outbox(o: Mapping[str, Any], _: _Renderer) -> str:
    parts = []
    if "depth" in o:
        parts.append(f"{_plain(o['depth'])} events waiting")
    if o.get("oldest_age_s") is not None:
        parts.append(f"oldest {_duration(o['oldest_age_s'])}")
    if o.get("dropped"):
        parts.append(f"{_plain(o['dropped'])} DROPPED (overflow)")
    parts += _others(o, {"depth", "oldest_age_s", "dropped"})
    return ", ".join(parts) or "-"


def _reader(state: Mapping[str, Any], r: _Renderer) -> str:
    parts = []
    if "type" in state:
        parts.append(str(state["type"]))
    if state.get("state") == "failed":
        parts.append("FAILED")
    if "connected" in state:
        parts.append("connected" if state["connected"] else "DISCONNECTED")
    if "last_scan_at" in state:
        parts.append(f"last scan {r.when(state['last_scan_at'])}")
    if state.get("last_decision"):
        decision = str(state["last_decision"])
        parts.append(f"{decision} {state['last_reason']}" if state.get("last_reason") else decision)
    if state.get("last_error"):
        parts.append(f"error: {state['last_error']}")
    if state.get("failures"):
        parts.append(f"{state['failures']} failures")
    parts += _others(state, {"type", "connected", "last_scan_at", "last_decision", "last_reason", "last_error", "state", "failures"})
    return ", ".join(parts) or "-"


def _door(state: Mapping[str, Any], _: _Renderer) -> str:
    parts = [f"{k} {_plain(v)}" for k, v in state.items() if k not in ("alarm", "readers") and v is not None]
    if state.get("alarm"):
        parts.append(f"ALARM {state['alarm']}")
    for reader, m in (state.get("readers") or {}).items():  # door modes (docs/door-modes.md)
        nxt = f"; next {m['next_mode']} at {m['next_change']}" if m.get("next_change") else ""
        parts.append(f"{reader}: mode {m.get('mode')} ({m.get('why')}{nxt})")
    return ", ".join(parts) or "-"


def _table(title: str, items: Any, render: Callable[[Mapping[str, Any], _Renderer], str], r: _Renderer) -> list[str]:
    if isinstance(items, list):  # also accept [{"id": ..., ...}, ...]
        pairs = [(str(i.get("id", n)) if isinstance(i, Mapping) else str(n), i) for n, i in enumerate(items)]
    elif isinstance(items, Mapping):
        pairs = [(str(k), v) for k, v in items.items()]
    else:
        return _generic(title, items)
    if not pairs:
        return [f"{title:<10} none"]
    width = max(len(name) for name, _ in pairs)
    lines = [title]
    for name, state in pairs:
        if isinstance(state, Mapping):
            state = {k: v for k, v in state.items() if k != "id"}
            lines.append(f"  {name:<{width}}  {render(state, r)}")
        else:
            lines.append(f"  {name:<{width}}  {_plain(state)}")
    return lines


_SECTIONS: dict[str, Callable[[Mapping[str, Any], _Renderer], str]] = {"upstream": _upstream, "cache": _cache, "outbox": _outbox}
_TABLES: dict[str, Callable[[Mapping[str, Any], _Renderer], str]] = {"readers": _reader, "doors": _door}
_HEADER_KEYS = {"bridge_id", "version", "mode", "started_at", "now", "health"}


def format_status(document: Mapping[str, Any]) -> str:
    """Readable text for a technician; renders whatever keys are present and never raises on odd values."""
    if not isinstance(document, Mapping):
        return f"unexpected status document: {document!r}"
    r = _Renderer(document)
    lines: list[str] = []
    if (header := _header(document, r)) is not None:
        lines.append(header)
    if document.get("error"):
        lines.append(f"ERROR      {document['error']}")
    health = document.get("health")
    if isinstance(health, Mapping) and health.get("state") not in (None, "ok"):
        lines.append(f"DEGRADED   {'; '.join(map(str, health.get('problems') or [])) or health.get('state')}")
    emergency = document.get("emergency")
    if isinstance(emergency, Mapping) and (emergency.get("fire_active") or emergency.get("lockdown")):
        words = (["EVACUATION (fire input active)"] if emergency.get("fire_active") else []) + \
                [f"LOCKDOWN {scope} (by {_plain((by or {}).get('source'))} {_plain((by or {}).get('by'))})"
                 for scope, by in (emergency.get("lockdown") or {}).items()]
        lines.append(f"EMERGENCY  {'; '.join(words)}")
    for key, render in _SECTIONS.items():
        if key in document:
            value = document[key]
            lines += [f"{key:<10} {render(value, r)}"] if isinstance(value, Mapping) else _generic(key, value)
    for key, render in _TABLES.items():
        if key in document:
            lines += _table(key, document[key], render, r)
    shown = _HEADER_KEYS | set(_SECTIONS) | set(_TABLES) | {"error"}
    for key, value in document.items():
        if key not in shown:
            lines += _generic(str(key), value)
    return "\n".join(lines) if lines else "(the daemon reported no status fields)"
