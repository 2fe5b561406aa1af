"""`door-bridge demo` as a user runs it: a real process, scans on stdin, decisions on stdout."""

from __future__ import annotations

import re
import subprocess
import sys


def _demo(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "demo"], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_demo_decides_each_line_with_reasons():
    lines = ["6B06C2A25E99C68EDCBE", "04A22C1A7B3F80", "0A1B2C3D4E5F", "DEADBEEF01",
             "vis_DemoVisitorPass0123456789abcdef", "4711#", "https://id.example/verify.php?token=abc123XYZ",
             "FFFF0000AAAA", "hello, door", "6B06C2A25E99C68EDCBE"]
    proc = _demo("\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    decisions = re.findall(r"^(GRANT|DENY)\s+reason=(\S+)", proc.stdout, re.M)
    assert decisions == [
        ("GRANT", "-"), ("DENY", "GRANT_REVOKED"), ("DENY", "OUT_OF_DATE_WINDOW"), ("DENY", "HOLDER_INACTIVE"),
        ("GRANT", "-"), ("GRANT", "-"), ("DENY", "UPSTREAM_UNAVAILABLE"), ("DENY", "NO_GRANT"),
        ("DENY", "MALFORMED_CREDENTIAL"), ("GRANT", "-"),
    ]
    assert "replay: relay not pulsed again" in proc.stdout
    assert "10 decisions, 4 granted, 3 relay pulses" in proc.stdout
    # The end of standard input is the end of the demo, not a failed reader.
    assert "reader_failed" not in proc.stderr and "no_reader_working" not in proc.stderr, proc.stderr


def test_demo_jwt_it_prints_is_granted():
    first = _demo("")
    token = re.search(r"the full JWT: (eyJ[\w.-]+)", first.stdout).group(1)
    # A token from another run is signed by another (random) key: refused.
    proc = _demo(token + "\n")
    assert re.search(r"^DENY\s+reason=SIGNATURE_INVALID", proc.stdout, re.M), proc.stdout


def test_demo_ends_cleanly_on_empty_input_and_binary_garbage():
    proc = subprocess.run([sys.executable, "-m", "bridge.cli", "demo"], input=b"\xff\xfe\x00\x01\n" + b"A" * 10000 + b"\n",
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert re.findall(r"^DENY\s+reason=(\S+)", out, re.M) == ["MALFORMED_CREDENTIAL"] * 2
