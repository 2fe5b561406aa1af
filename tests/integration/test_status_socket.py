"""The status socket end to end: a real asyncio Unix server, a real blocking client, real files."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.service.status_socket import (
    StatusServer,
    StatusUnavailable,
    fetch_status,
    find_socket,
    format_status,
    socket_path,
)
from verifier.types import Decision, Reason


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dbst-", dir="/tmp") as d:
        yield Path(d)


def serve_and_fetch(path: Path, snapshot: Callable[[], Any], timeout: float = 5.0) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        async with StatusServer(path, snapshot):
            return await asyncio.to_thread(fetch_status, path, timeout)

    return asyncio.run(main())


def test_client_receives_the_snapshot_as_json(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    snapshot = {"bridge_id": "BRIDGE-1", "mode": "local-first", "outbox": {"depth": 3}}
    assert serve_and_fetch(path, lambda: snapshot) == snapshot


def test_each_connection_gets_a_fresh_snapshot(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    calls = iter(range(100))

    async def main() -> list[dict[str, Any]]:
        async with StatusServer(path, lambda: {"n": next(calls)}):
            return [await asyncio.to_thread(fetch_status, path, 5.0) for _ in range(3)]

    assert asyncio.run(main()) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_socket_is_mode_0660_and_removed_on_stop(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    seen: dict[str, int] = {}

    async def main() -> None:
        server = StatusServer(path, dict)
        await server.start()
        seen["mode"] = stat.S_IMODE(path.stat().st_mode)
        seen["is_socket"] = int(path.is_socket())
        await server.stop()

    asyncio.run(main())
    assert seen == {"mode": 0o660, "is_socket": 1}
    assert not path.exists()


def test_datetimes_and_enums_are_serialised(sock_dir: Path) -> None:
    at = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    answer = serve_and_fetch(sock_dir / "s.sock", lambda: {"at": at, "decision": Decision.GRANT, "reason": Reason.NO_GRANT, "path": Path("/x")})
    assert answer == {"at": "2026-11-22T13:00:00+00:00", "decision": "GRANT", "reason": "NO_GRANT", "path": "/x"}


def test_a_failing_snapshot_answers_an_error_and_keeps_serving(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    healthy = threading.Event()

    def snapshot() -> dict[str, Any]:
        if not healthy.is_set():
            raise RuntimeError("secret-ish internals")
        return {"ok": True}

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with StatusServer(path, snapshot):
            first = await asyncio.to_thread(fetch_status, path, 5.0)
            healthy.set()
            second = await asyncio.to_thread(fetch_status, path, 5.0)
            return first, second

    first, second = asyncio.run(main())
    assert first == {"error": "status snapshot failed: RuntimeError"}
    assert second == {"ok": True}


def test_a_stale_socket_from_a_killed_daemon_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after SIGKILL
    assert serve_and_fetch(path, lambda: {"fresh": 1}) == {"fresh": 1}


def test_refuses_to_replace_a_regular_file(sock_dir: Path) -> None:
    path = sock_dir / "status.sock"
    path.write_text("not a socket")
    with pytest.raises(OSError, match="not a socket"):
        asyncio.run(StatusServer(path, dict).start())
    assert path.read_text() == "not a socket"


def test_a_missing_runtime_directory_is_a_clear_error(sock_dir: Path) -> None:
    with pytest.raises(OSError, match="does not exist"):
        asyncio.run(StatusServer(sock_dir / "absent" / "status.sock", dict).start())


def test_fetch_without_daemon_says_it_is_not_running(sock_dir: Path) -> None:
    with pytest.raises(StatusUnavailable, match="not running"):
        fetch_status(sock_dir / "missing.sock", timeout=1)


def test_fetch_from_a_dead_socket_says_stale(sock_dir: Path) -> None:
    path = sock_dir / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    with pytest.raises(StatusUnavailable, match="stale socket"):
        fetch_status(path, timeout=1)


def test_fetch_from_a_silent_peer_times_out_with_advice(sock_dir: Path) -> None:
    path = sock_dir / "hung.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(path))
    hung.listen(1)  # accepts into the backlog, never answers: a hung event loop
    try:
        with pytest.raises(StatusUnavailable, match="did not answer within 0.2s"):
            fetch_status(path, timeout=0.2)
    finally:
        hung.close()


def _one_shot_server(path: Path, answer: bytes) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        conn.sendall(answer)
        conn.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("answer,message", [(b"<html>", "not a JSON status document"), (b"[1, 2]", "not a JSON object"), (b"\xff\xfe", "not a JSON")])
def test_fetch_rejects_answers_that_are_not_a_status_document(sock_dir: Path, answer: bytes, message: str) -> None:
    path = sock_dir / "odd.sock"
    thread = _one_shot_server(path, answer)
    with pytest.raises(StatusUnavailable, match=message):
        fetch_status(path, timeout=5)
    thread.join(5)


def _fetch_error_as_nobody(path: Path) -> str:
    """fetch_status in a forked child that dropped root for nobody:nogroup, as an operator would run it."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        message = "no error"
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            fetch_status(path, 5)
        except StatusUnavailable as e:
            message = str(e)
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            message = f"unexpected {type(e).__name__}: {e}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_fetch_by_someone_outside_the_group_names_the_group(sock_dir: Path) -> None:
    """A real permission denial on the 0660 socket (as root: from a child running as nobody)."""
    path = sock_dir / "status.sock"

    async def main() -> str:
        async with StatusServer(path, dict):
            os.chmod(sock_dir, 0o755)
            if os.geteuid() == 0:
                return await asyncio.to_thread(_fetch_error_as_nobody, path)
            os.chmod(path, 0)  # not root: take our own permission away instead
            try:
                await asyncio.to_thread(fetch_status, path, 5.0)
            except StatusUnavailable as e:
                return str(e)
            return "no error"

    message = asyncio.run(main())
    assert message.startswith("permission denied on") and "group door-bridge" in message, message


def test_socket_path_follows_runtime_directory() -> None:
    assert socket_path({"RUNTIME_DIRECTORY": "/run/door-bridge"}) == Path("/run/door-bridge/status.sock")
    assert socket_path({"RUNTIME_DIRECTORY": "/run/a:/run/b"}) == Path("/run/a/status.sock")
    assert socket_path({}) == Path("/run/door-bridge/status.sock")


def test_status_looks_where_the_daemon_binds(tmp_path: Path) -> None:
    """One rule for the socket's place: `door-bridge status` (find_socket) finds what the daemon
    (socket_path with its state dir) binds, under systemd and when run by hand."""
    state = tmp_path / "state"
    state.mkdir()
    under_systemd = {"RUNTIME_DIRECTORY": str(tmp_path / "run")}
    assert find_socket(state, under_systemd) == socket_path(under_systemd, state) == tmp_path / "run" / "status.sock"
    by_hand: dict[str, str] = {}
    bound = socket_path(by_hand, state)
    assert bound == state / "status.sock"
    bound.touch()
    assert find_socket(state, by_hand) == bound
    # No daemon run by hand and the config unreadable: the service's socket.
    assert find_socket(None, by_hand) == Path("/run/door-bridge/status.sock")


# --- format_status ----------------------------------------------------------------------------------

FULL = {
    "bridge_id": "BRIDGE-1",
    "version": "0.1.0",
    "mode": "local-first",
    "started_at": "2026-11-22T10:00:00Z",
    "now": "2026-11-22T13:00:00Z",
    "upstream": {"online": False, "since": "2026-11-22T12:55:00Z", "last_heartbeat": "2026-11-22T12:50:00+00:00"},
    "cache": {"version": 42, "issued_at": "2026-11-22T12:00:00", "grants": 1234567, "stale": True},
    "outbox": {"depth": 3, "oldest_age_s": 312.4},
    "readers": {
        "R1": {"type": "serial", "connected": True, "last_scan_at": "2026-11-22T12:59:55Z", "last_decision": "DENY", "last_reason": "NO_GRANT"},
        "NFC-FRONT": {"type": "nfc", "connected": False, "last_scan_at": None},
    },
    "doors": {"main": {"relay": "locked", "position": "closed", "alarm": "held-open"}},
}


def test_format_renders_every_section_a_technician_needs() -> None:
    text = format_status(FULL)
    lines = text.splitlines()
    assert lines[0] == "door-bridge BRIDGE-1 (0.1.0), mode local-first, up 3h 00m"
    assert "upstream   OFFLINE since 2026-11-22 12:55:00Z (5m 00s ago); last heartbeat 2026-11-22 12:50:00Z (10m 00s ago)" in lines
    # A time without an offset is UTC (the project's rule).
    assert "cache      version 42, issued 2026-11-22 12:00:00Z (1h 00m ago), 1,234,567 grants, STALE" in lines
    assert "outbox     3 events waiting, oldest 5m 12s" in lines
    assert "  R1         serial, connected, last scan 2026-11-22 12:59:55Z (5s ago), DENY NO_GRANT" in lines
    assert "  NFC-FRONT  nfc, DISCONNECTED, last scan never" in lines
    assert "  main  relay locked, position closed, ALARM held-open" in lines


def test_format_shows_unknown_keys_rather_than_hiding_them() -> None:
    text = format_status({"firmware": {"lgpio": "0.2", "pins": [17, 27]}, "note": None})
    assert text.splitlines() == ["firmware:", "  lgpio: 0.2", "  pins: 17, 27", "note: -"]


def test_format_shows_new_keys_inside_known_sections() -> None:
    text = format_status({"upstream": {"online": True, "rtt_ms": 80}, "readers": {"R": {"type": "nfc", "firmware": "1.2"}}})
    assert text.splitlines() == ["upstream   online; rtt_ms 80", "readers", "  R  nfc, firmware 1.2"]


def test_format_accepts_readers_as_a_list_with_ids() -> None:
    text = format_status({"readers": [{"id": "KEYPAD", "type": "keypad", "connected": True}]})
    assert text.splitlines() == ["readers", "  KEYPAD  keypad, connected"]


@pytest.mark.parametrize(
    "document",
    [{}, {"upstream": "weird"}, {"readers": 5}, {"cache": {"age_s": "x"}}, {"started_at": "yesterday"}, {"readers": {"R": None}}, {"now": 3, "upstream": {"since": 5, "online": True}}, {"error": "status snapshot failed: RuntimeError"}],
)
def test_format_never_raises_on_odd_documents(document: dict[str, Any]) -> None:
    assert isinstance(format_status(document), str)
    assert format_status(document)


def test_format_of_an_error_answer_shows_the_error() -> None:
    assert "ERROR      status snapshot failed: RuntimeError" in format_status({"error": "status snapshot failed: RuntimeError"})


def test_format_round_trips_through_the_socket(sock_dir: Path) -> None:
    answer = serve_and_fetch(sock_dir / "status.sock", lambda: FULL)
    assert format_status(answer) == format_status(json.loads(json.dumps(FULL)))
