"""Cold start: `door-bridge run` to READY=1 on the notify socket, and to the first decision.

A real daemon process (the same site and config as bench/load.py: mock GPIO, pty serial readers,
a signed bundle of `--grants` holders applied to grants.db beforehand). Per run: the clock starts
just before the process is spawned; READY=1 is the first datagram carrying it on a NOTIFY_SOCKET
we bind; the first decision is the first `decision` line in the daemon's JSON log after one valid
card is written to reader 0's pty at READY. Also reports the interpreter's own start (python -c
pass) as the floor, and `import bridge.cli` alone, so the daemon's share is visible.

    python bench/startup.py                    # 10,000 grants, 5 runs
    python bench/startup.py --grants 1000000 --runs 3
    python bench/startup.py --profile-imports 25   # and one more run under -X importtime: where it goes
    python bench/startup.py --no-bytecode      # every module compiled from source, as PYTHONDONTWRITEBYTECODE=1 does

By default the daemon runs from compiled bytecode (a private PYTHONPYCACHEPREFIX, warmed by the
first interpreter runs), as an installed door-bridge does: pip and apt compile what they install.
A checkout run with PYTHONDONTWRITEBYTECODE=1 recompiles every bridge module on each start
(~90 ms here), which is not what a Pi pays.

The last line is JSON with the medians (ms) and every run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402 - bench/load.py: the same site, config and log reader

ROOT = load.ROOT


@dataclass(frozen=True)
class StartRun:
    ready_ms: float
    first_decision_ms: float


def child_env(work: Path, bytecode: bool) -> dict[str, str]:
    env = dict(os.environ)
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _interpreter_ms(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    return (time.perf_counter() - t0) * 1000


def top_imports(log: str, n: int) -> list[tuple[str, int, int]]:
    """(module, self µs, cumulative µs) of the `n` costliest by self time in `-X importtime` output."""
    rows = []
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            _, self_us, cum_us, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
            rows.append((name, int(self_us), int(cum_us)))
    return sorted(rows, key=lambda r: -r[1])[:n]


def one_run(work: Path, config: Path, ptys: list[load.PtyPair], card: bytes, timeout: float = 60.0,
            base_env: dict[str, str] | None = None, python_flags: tuple[str, ...] = ()) -> StartRun:
    notify_path = work / "notify.sock"
    notify_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.settimeout(0.005)
    log_path = work / "daemon.log"
    log_path.unlink(missing_ok=True)
    env = {**(base_env or os.environ), "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(notify_path)}
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "RUNTIME_DIRECTORY"):
        env.pop(name, None)
    with open(log_path, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *python_flags, "-m", "bridge.cli", "run", "--config", str(config)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            ready = _wait_ready(sock, proc, t0, timeout, log_path)
            tail = load.LogTail(log_path)
            # The reader may connect just after READY (readers start in the background): repeat
            # the card until a decision appears; the first one counts.
            next_write = 0.0
            while not tail.decisions:
                now = time.perf_counter()
                if now - t0 > timeout or proc.poll() is not None:
                    raise RuntimeError(f"no decision (exit {proc.poll()}):\n{log_path.read_text()[-3000:]}")
                if now >= next_write:
                    os.write(ptys[0].master, card + b"\r\n")
                    next_write = now + 0.05
                time.sleep(0.001)
                tail.poll()
            first = (time.perf_counter() - t0) * 1000
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
    return StartRun(round(ready, 1), round(first, 1))


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], t0: float, timeout: float, log: Path) -> float:
    while True:
        try:
            if b"READY=1" in sock.recv(4096):
                return (time.perf_counter() - t0) * 1000
        except (TimeoutError, BlockingIOError):
            pass
        if time.perf_counter() - t0 > timeout or proc.poll() is not None:
            raise RuntimeError(f"no READY=1 (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grants", type=int, default=10_000)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-bytecode", action="store_true", help="compile every module from source on each start")
    ap.add_argument("--profile-imports", type=int, default=0, metavar="N",
                    help="one more run under -X importtime; print its N costliest imports (self time)")
    args = ap.parse_args()
    settings = load.LoadSettings(grants=args.grants, readers=args.readers)
    work = Path(tempfile.mkdtemp(prefix="door-bridge-startup-"))
    ptys = [load.PtyPair() for _ in range(args.readers)]
    try:
        state = work / "state"
        state.mkdir()
        key = Ed25519PrivateKey.generate()
        pools = load.build_site(state, settings, key)
        card = pools.by_kind["card"][0][0]
        config = work / "config.toml"
        load.write_config(config, state, key, ptys, settings)
        env = child_env(work, bytecode=not args.no_bytecode)
        _interpreter_ms("import bridge.cli.main, bridge.service.daemon", env)  # writes the bytecode once
        python_ms = statistics.median(_interpreter_ms("pass", env) for _ in range(3))
        import_ms = statistics.median(_interpreter_ms("import bridge.cli", env) for _ in range(3))
        runs = [one_run(work, config, ptys, card, base_env=env) for _ in range(args.runs)]
        imports: list[tuple[str, int, int]] = []
        if args.profile_imports:
            one_run(work, config, ptys, card, base_env=env, python_flags=("-X", "importtime"))
            log_text = (work / "daemon.log").read_text(errors="replace")
            imports = top_imports(log_text, args.profile_imports)
            total_us = sum(int(line.split("|")[0].split(":")[1]) for line in log_text.splitlines()
                           if line.startswith("import time:") and "self [us]" not in line)
            print(f"imports in the run (one run, -X importtime): {total_us / 1000:.1f} ms in all; costliest by self time:",
                  file=sys.stderr)
            for name, self_us, cum_us in imports:
                print(f"  {self_us / 1000:7.1f} ms self {cum_us / 1000:7.1f} ms cumulative  {name}", file=sys.stderr)
    finally:
        for p in ptys:
            p.close()
        shutil.rmtree(work, ignore_errors=True)
    loadavg = os.getloadavg()[0]
    figures = {
        "grants": args.grants, "runs": len(runs), "load_avg_1m": round(loadavg, 2), "bytecode": not args.no_bytecode,
        "python_start_ms": round(python_ms, 1), "import_bridge_cli_ms": round(import_ms, 1),
        "ready_ms": round(statistics.median(r.ready_ms for r in runs), 1),
        "first_decision_ms": round(statistics.median(r.first_decision_ms for r in runs), 1),
        "ready_ms_each": [r.ready_ms for r in runs],
        "first_decision_ms_each": [r.first_decision_ms for r in runs],
        **({"imports_top": [{"module": m, "self_ms": round(a / 1000, 1), "cumulative_ms": round(c / 1000, 1)}
                            for m, a, c in imports]} if imports else {}),
    }
    print(f"run → READY=1 {figures['ready_ms']} ms, → first decision {figures['first_decision_ms']} ms "
          f"(median of {len(runs)}, {args.grants:,} grants; python itself {figures['python_start_ms']} ms, "
          f"import bridge.cli {figures['import_bridge_cli_ms']} ms; load {loadavg:.1f})", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
