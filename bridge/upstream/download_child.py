"""The bundle download in a child process, off the deciding process's GIL.

A full bundle is hundreds of megabytes. Streamed by the daemon's event loop (httpx, h11, 64 KiB
chunks, sha256, file writes) it holds the GIL for most of a second per 100 MB, and the decision
thread waits for it: bench/sync.py measured p99 3.4 ms and a 43 ms worst decision during a
1M-grant download (95 µs p99 before it), where the apply, already in a child, costs the decisions
nothing. So when `upstream.central.apply_in = "process"` the download runs in
`python -m bridge.upstream.download_child` as well, through the very same `CentralHttp.download`
code: the media-type and size checks, the sha256 and the download deadline are unchanged. The
child runs niced from its first instruction (bridge/upstream/background.py): on a busy Pi the
decision thread goes first.

The parent keeps what is state: the breaker — the child reports what the in-process code told its
breaker (success, failure or release) and the parent tells its own the same — and a backstop
deadline that kills a child which does not answer. The request — with its
`Authorization` header — goes over the child's stdin, never argv or the environment (`ps` shows
those). The answer is one JSON line: the status, the headers and the file's size and digest, or
the upstream error the in-process code raised (its message already redacted), rebuilt here as the
same class with the same text, so callers and logs see no difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any, Mapping

import httpx

from bridge.config.upstream import HttpSettings
from bridge.upstream.background import background_argv
from bridge.upstream.breaker import CircuitBreaker
from bridge.upstream.errors import UpstreamError, UpstreamProtocolError, UpstreamRejected, UpstreamUnavailable, redact

# The child answers with its own deadline's error first; this is only for a child that hangs.
BACKSTOP_GRACE_S = 30.0
_ERRORS: dict[str, type[UpstreamError]] = {
    cls.__name__: cls for cls in (UpstreamError, UpstreamUnavailable, UpstreamRejected, UpstreamProtocolError)
}

DownloadResult = tuple[int, httpx.Headers, int, "str | None"]


async def download_in_child(
    upstream: str, breaker: CircuitBreaker, base_url: str, settings: HttpSettings, deadline_s: float, path: str, *,
    params: Mapping[str, str], headers: Mapping[str, str], dest: Path, max_bytes: int,
) -> DownloadResult:
    """One attempt of `CentralHttp.download_here`, run in a child. Raises the error the child's
    attempt raised; a child that crashes or hangs is `UpstreamUnavailable` (transient: the next
    poll tries again) and a failure for the breaker."""
    breaker.before_call()
    try:
        answer = await _attempt(upstream, base_url, settings, deadline_s, path, params=params, headers=headers,
                                dest=dest, max_bytes=max_bytes)
    except UpstreamUnavailable:  # the child hung or crashed
        breaker.record_failure()
        raise
    except BaseException:
        breaker.release()
        raise
    {"success": breaker.record_success, "failure": breaker.record_failure}.get(answer.get("breaker", ""),
                                                                              breaker.release)()
    if answer.get("error") == "OSError":  # our side (disk full, permissions), as the in-process code raises it
        raise OSError(answer["errno"], answer["text"], answer["filename"])
    if "error" in answer:
        raise _rebuilt(answer)
    return answer["status"], httpx.Headers(answer["headers"]), answer["size"], answer["sha256"]


async def _attempt(
    upstream: str, base_url: str, settings: HttpSettings, deadline_s: float, path: str, *,
    params: Mapping[str, str], headers: Mapping[str, str], dest: Path, max_bytes: int,
) -> dict[str, Any]:
    request = {
        "upstream": upstream, "base_url": base_url, "settings": settings.model_dump(mode="json"),
        "deadline_s": deadline_s, "path": path, "params": dict(params), "headers": dict(headers),
        "dest": str(dest), "max_bytes": max_bytes,
    }
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    proc = await asyncio.create_subprocess_exec(
        *background_argv("bridge.upstream.download_child"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )
    what = f"GET {path}"
    try:
        async with asyncio.timeout(deadline_s + BACKSTOP_GRACE_S):
            out, err = await proc.communicate(json.dumps(request).encode())
    except TimeoutError:
        raise UpstreamUnavailable(upstream, f"{what}: the download process did not finish within the "
                                  f"{deadline_s} s download deadline") from None
    finally:
        if proc.returncode is None:  # cancelled or hung: nothing may keep writing the file
            with suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    try:
        answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise UpstreamUnavailable(upstream, f"{what}: the download process exited {proc.returncode}: "
                                  f"{redact(tail[0])[:300]}") from None
    return answer


def _rebuilt(answer: dict[str, Any]) -> UpstreamError:
    """The child's error as the same class, text, status and hint (the text is already redacted
    and prefixed with the upstream's name, so __init__ is not run again)."""
    cls = _ERRORS.get(answer["error"], UpstreamError)
    error = cls.__new__(cls)
    Exception.__init__(error, answer["text"])
    error.upstream, error.status = answer["upstream"], answer["status"]
    if isinstance(error, UpstreamRejected):
        error.hint = answer.get("hint") or ""
    return error


class _NotedBreaker(CircuitBreaker):
    """Never open (the parent's breaker decides that); notes what the attempt told it."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, 1000, 1.0)
        self.outcome = "release"

    def record_success(self) -> None:
        self.outcome = "success"

    def record_failure(self) -> None:
        self.outcome = "failure"

    def release(self) -> None:
        self.outcome = "release"


async def _download(request: dict[str, Any]) -> dict[str, Any]:
    from bridge.upstream.central import CentralHttp
    from bridge.upstream.http import build_client

    # The daemon's settings object, validated there; not again here: a copy made with
    # model_copy(update=...) (as tests shorten intervals) need not pass the file's bounds.
    settings = HttpSettings.model_construct(**request["settings"])
    upstream = request["upstream"]
    breaker = _NotedBreaker(upstream)
    http = CentralHttp(upstream, build_client(request["base_url"], settings), breaker,
                       settings.max_body_bytes, settings.request_deadline_s, download_deadline_s=request["deadline_s"])
    try:
        status, headers, size, digest = await http.download_here(
            request["path"], params=request["params"], headers=request["headers"], dest=Path(request["dest"]),
            max_bytes=request["max_bytes"])
    except UpstreamError as e:
        return {"error": type(e).__name__, "text": str(e), "upstream": e.upstream, "status": e.status,
                "hint": getattr(e, "hint", None), "breaker": breaker.outcome}
    except OSError as e:
        return {"error": "OSError", "errno": e.errno, "text": e.strerror or str(e), "filename": e.filename,
                "breaker": breaker.outcome}
    finally:
        await http.aclose()
    return {"status": status, "headers": list(headers.multi_items()), "size": size, "sha256": digest,
            "breaker": breaker.outcome}


def _child_main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    print(json.dumps(asyncio.run(_download(request))))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
