"""The bundle download runs in a child process when `apply_in = "process"` (issue 17).

Streaming a bundle of hundreds of MB in the daemon's event loop holds the GIL the decision thread
needs (bench/sync.py prints by how much). These tests prove the structure, not a speed: a real
loopback central (a threaded http.server) looks up which process holds the client end of each
connection (psutil, by the client's port) and what that process was given on its command line
and in its environment. Both modes answer the same statuses with the same results, error classes,
messages and breaker state, so moving the download changed no semantics; the download deadline
still ends a trickling central, and no child is left behind.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from bridge.config.upstream import CentralSection, HttpSettings
from bridge.upstream.background import BACKGROUND_NICENESS
from bridge.upstream.breaker import CircuitState
from bridge.upstream.central import BUNDLE_MEDIA_TYPE, CentralClient, build_central
from bridge.upstream.errors import UpstreamError, UpstreamUnavailable

KEY = "k3y-for-the-download-test-0123456789"
BODY = os.urandom(300_000)  # several 64 KiB chunks


@dataclass
class Peer:
    pid: int | None
    cmdline: list[str]
    environ_has_key: bool
    nice: int | None = None


@dataclass
class Central:
    url: str
    answer: str = "bundle"  # bundle | 503 | html | trickle
    body: bytes = BODY
    peers: list[Peer] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)


def _peer(port: int) -> Peer:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.pid is not None:
            proc = psutil.Process(conn.pid)
            return Peer(conn.pid, proc.cmdline(), KEY in "".join(proc.environ().values()), proc.nice())
    return Peer(None, [], False)


@pytest.fixture
def central() -> Iterator[Central]:
    state = Central(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            state.peers.append(_peer(self.client_address[1]))
            state.authorization.append(self.headers.get("Authorization", ""))
            if state.answer == "503":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.headers.get("If-None-Match") == '"v2"':
                self.send_response(304)
                self.send_header("ETag", '"v2"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if state.answer == "html" else BUNDLE_MEDIA_TYPE)
            self.send_header("ETag", '"v2"')
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            if state.answer == "trickle":
                stop = threading.Event()
                while not stop.wait(0.1):
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return
            try:
                self.wfile.write(state.body)
            except OSError:
                pass  # the daemon's first ask, left unread: the child asks again

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _client(central: Central, tmp_path: Path, apply_in: str, **settings: float) -> CentralClient:
    key_file = tmp_path / "central.key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    section = CentralSection(base_url=central.url, api_key_file=key_file, apply_in=apply_in)
    return build_central(section, HttpSettings(breaker_failures=1, **settings), bridge_id="BRIDGE-1")


async def test_the_download_runs_in_another_process_that_was_not_handed_the_key_on_its_command_line(
        central: Central, tmp_path: Path) -> None:
    client = _client(central, tmp_path, "process")
    try:
        fetch = await client.fetch_bundle(0, None, tmp_path / "bundle")
    finally:
        await client.aclose()
    assert (fetch.status, fetch.etag, fetch.size) == ("new", '"v2"', len(BODY))
    assert fetch.sha256 == hashlib.sha256(BODY).hexdigest()
    assert (tmp_path / "bundle").read_bytes() == BODY
    assert central.authorization == [f"Bearer {KEY}"] * 2
    # Asked here first (a 304 would have ended it there); the 300 KB body is left to the child.
    here, peer = central.peers
    assert here.pid == os.getpid()
    assert peer.pid is not None and peer.pid != os.getpid()
    assert not any(KEY in arg for arg in peer.cmdline) and not peer.environ_has_key
    # Background work: the decision thread goes first on a busy Pi (bridge/upstream/background.py).
    assert peer.nice is not None and peer.nice >= BACKGROUND_NICENESS


async def test_thread_mode_still_downloads_in_this_process(central: Central, tmp_path: Path) -> None:
    """The lookup above can tell the two apart: in thread mode the peer is this very process."""
    client = _client(central, tmp_path, "thread")
    try:
        fetch = await client.fetch_bundle(0, None, tmp_path / "bundle")
    finally:
        await client.aclose()
    assert fetch.status == "new"
    assert [p.pid for p in central.peers] == [os.getpid()]


def _downloaders() -> list[int]:
    """This process's children that are download processes (other tests' servers may linger)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "bridge.upstream.download_child" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.NoSuchProcess:  # ended between the listing and the look
            pass
    return found


@dataclass(frozen=True)
class Seen:
    result: tuple[str, str | None, int] | None
    error: tuple[str, str, int | None] | None
    breaker: CircuitState


async def _seen(central: Central, tmp_path: Path, apply_in: str, etag: str | None) -> Seen:
    client = _client(central, tmp_path, apply_in)
    try:
        fetch = await client.fetch_bundle(3, etag, tmp_path / "bundle")
        return Seen((fetch.status, fetch.etag, fetch.size), None, client.http.breaker.state)
    except UpstreamError as e:
        return Seen(None, (type(e).__name__, str(e), e.status), client.http.breaker.state)
    finally:
        await client.aclose()


@pytest.mark.parametrize(("answer", "etag"), [("bundle", None), ("bundle", '"v2"'), ("503", None), ("html", None)],
                         ids=["new", "not_modified", "unavailable", "wrong_media_type"])
async def test_both_modes_give_the_same_result_error_and_breaker_state(
        central: Central, tmp_path: Path, answer: str, etag: str | None) -> None:
    central.answer = answer
    in_child = await _seen(central, tmp_path, "process", etag)
    here = await _seen(central, tmp_path, "thread", etag)
    assert in_child == here
    # A child only for a 200 with a big body: a 304 or a 503 is answered to the daemon itself.
    child_expected = answer in ("bundle", "html") and etag is None
    assert [p.pid == os.getpid() for p in central.peers] == ([True, False, True] if child_expected else [True, True])


@pytest.mark.parametrize(("answer", "etag", "body"), [("bundle", '"v2"', BODY), ("503", None, BODY),
                                                      ("bundle", None, BODY[:40_000])],
                         ids=["not_modified", "unavailable", "small_delta"])
async def test_a_poll_answered_without_a_big_body_starts_no_child(
        central: Central, tmp_path: Path, answer: str, etag: str | None, body: bytes) -> None:
    """Most polls are a 304: a child for each cost an interpreter start (0.4-0.5 s of CPU here,
    bench/poll.py) every poll_interval_s. Such answers, errors and bodies up to IN_PROCESS_BODY_BYTES stay here."""
    central.answer, central.body = answer, body
    seen = await _seen(central, tmp_path, "process", etag)
    assert [p.pid for p in central.peers] == [os.getpid()]
    assert _downloaders() == []
    if answer == "bundle" and etag is None:
        assert seen.result == ("new", '"v2"', len(body))
        assert (tmp_path / "bundle").read_bytes() == body
    else:
        assert (seen.result or seen.error or ("",))[0] in ("not_modified", "UpstreamUnavailable"), seen


async def test_a_trickling_central_ends_at_the_download_deadline_and_leaves_no_child(
        central: Central, tmp_path: Path) -> None:
    central.answer = "trickle"
    client = _client(central, tmp_path, "process", read_timeout_s=1.0, download_deadline_s=1.5)
    try:
        with pytest.raises(UpstreamUnavailable, match="download deadline"):
            await client.fetch_bundle(0, None, tmp_path / "bundle")
        assert client.http.breaker.state is CircuitState.OPEN  # breaker_failures=1: the failure counted
    finally:
        await client.aclose()
    assert [p.pid != os.getpid() for p in central.peers] == [False, True]  # the daemon's ask, then the child's
    assert _downloaders() == []  # killed at the deadline, not left writing the file
