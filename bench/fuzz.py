"""The heavy fuzz setting: the CI properties with many more examples, then atheris over the same
checks for a fixed time per target. Prints one JSON line at the end with the cases tried per
target (and any failure), e.g.

    .venv/bin/python bench/fuzz.py --examples 5000 --seconds 60

Phase 1 runs tests/unit/test_fuzz.py under the "door-bridge-bench" hypothesis profile in a child
pytest. Phase 2 (only if `atheris` is importable: `pip install atheris`) runs one child per target
with libFuzzer's `-max_total_time`, feeding the same `check_*` functions from the bytes atheris
mutates (coverage-guided over the instrumented `verifier` and `bridge` packages). A check that
fails is a crash: the child exits non-zero and its input is saved by libFuzzer as `crash-*`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("scan", "wedge", "wiegand", "bundle_body", "bundle_signed", "config", "upstream")


def run_hypothesis(examples: int, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        counts = Path(tmp) / "counts.json"
        env = {**os.environ, "DOOR_BRIDGE_FUZZ_PROFILE": "door-bridge-bench",
               "DOOR_BRIDGE_FUZZ_EXAMPLES": str(examples), "DOOR_BRIDGE_FUZZ_COUNTS": str(counts)}
        proc = subprocess.run([sys.executable, "-m", "pytest", "tests/unit/test_fuzz.py", "-q", "-p", "no:cacheprovider",
                               f"--timeout={int(timeout_s)}"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        tail = proc.stdout.strip().splitlines()[-1:] or [""]
        sys.stderr.write(proc.stdout[-4000:] if proc.returncode else f"hypothesis: {tail[0]}\n")
        cases = json.loads(counts.read_text())["cases"] if counts.exists() else {}
    return {"profile": "door-bridge-bench", "examples": examples, "passed": proc.returncode == 0,
            "summary": tail[0], "cases": cases}


def run_atheris(seconds: int, work: Path) -> dict[str, Any]:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return {"skipped": "atheris is not installed (pip install atheris)"}
    results: dict[str, Any] = {"seconds_per_target": seconds, "cases": {}, "crashes": {}}
    for target in TARGETS:
        target_dir = work / target
        target_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--atheris-child", target,
             f"-max_total_time={seconds}", f"-artifact_prefix={target_dir}/", "-print_final_stats=1", "-rss_limit_mb=2048"],
            cwd=ROOT, capture_output=True, text=True, timeout=seconds * 3 + 120, check=False,
        )
        runs = re.findall(r"Done (\d+) runs", proc.stderr) or re.findall(r"stat::number_of_executed_units:\s*(\d+)", proc.stderr)
        results["cases"][target] = int(runs[-1]) if runs else 0
        if proc.returncode != 0:
            results["crashes"][target] = {"exit": proc.returncode, "artifacts": sorted(p.name for p in target_dir.glob("crash-*")),
                                          "stderr_tail": proc.stderr.strip().splitlines()[-15:]}
    return results


# --- the atheris child: one target, the checks from tests/support/fuzz_checks.py ---------------------------


def _child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["verifier", "bridge"]):
        import bridge.config
        import bridge.inputs.evdev_scanner
        import bridge.upstream.frontelio  # noqa: F401
        import verifier.bundle
        import verifier.credentials
        import verifier.wiegand_formats  # noqa: F401
    from tests.support import fuzz_checks as tf

    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    one = _one_input(target, tf, work)

    def test_one_input(data: bytes) -> None:
        one(atheris.FuzzedDataProvider(data))

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


def _one_input(target: str, tf: Any, work: Path) -> Callable[[Any], None]:
    from verifier.wiegand_formats import FORMATS

    if target == "scan":
        return lambda f: tf.check_scan(f.ConsumeBytes(f.ConsumeIntInRange(0, 5000)), f.PickValueInList([None, "pin", "card"]))
    if target == "wedge":
        layouts = sorted(tf.TYPING_TABLES)

        def wedge(f: Any) -> None:
            events = [(1e9 + f.ConsumeIntInRange(0, 10_000) / 1000, f.PickValueInList([1, 1, 1, 0, 4, 0x1F]),
                       f.ConsumeIntInRange(0, 0x2FF), f.ConsumeIntInRange(-1, 2)) for _ in range(f.ConsumeIntInRange(0, 200))]
            tf.check_wedge_events(f.PickValueInList(layouts), events, f.PickValueInList([8, 64, 4096]))
        return wedge
    if target == "wiegand":
        def wiegand(f: Any) -> None:
            n = f.PickValueInList([4, 8, 26, 34, 37, f.ConsumeIntInRange(0, 130)])
            tf.check_wiegand(tuple(f.ConsumeIntInRange(0, 1) for _ in range(n)), f.PickValueInList(tf.SITE_FORMATS))
        assert FORMATS
        return wiegand
    if target == "bundle_body":
        site = tf.BundleSite(work)

        def body_only(f: Any) -> None:
            body = f.ConsumeBytes(f.ConsumeIntInRange(0, 8192))
            tf.check_bundle(site, tf.GOOD_HEAD + b"\n" + body, must_reject=body != tf.GOOD_BODY)
        return body_only
    if target == "bundle_signed":
        site = tf.BundleSite(work)

        def signed(f: Any) -> None:
            lines = [f.ConsumeBytes(f.ConsumeIntInRange(0, 400)) for _ in range(f.ConsumeIntInRange(0, 6))]
            recs = []
            for line in lines:
                try:
                    recs.append(json.loads(line))
                except (ValueError, RecursionError):
                    recs.append({"type": line.decode("latin-1")})
            kind = f.PickValueInList(["full", "delta"])
            tf.check_bundle(site, tf.signed_bundle(recs, kind=kind, base_version=1 if kind == "delta" else None))
        return signed
    if target == "config":
        path = work / "config.toml"
        return lambda f: tf.check_config_text(path, f.ConsumeBytes(f.ConsumeIntInRange(0, 4096)))
    if target == "upstream":
        upstreams = tf.Upstreams()
        names = sorted(tf.DOCUMENTED_ANSWERS)
        return lambda f: tf.check_upstream(upstreams, f.PickValueInList(names), f.ConsumeIntInRange(100, 599),
                                           f.ConsumeBytes(f.ConsumeIntInRange(0, 6000)), {})
    raise SystemExit(f"unknown target {target!r}; known: {', '.join(TARGETS)}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--atheris-child":
        _child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="hypothesis examples per property")
    parser.add_argument("--seconds", type=int, default=60, help="atheris time per target (0: skip atheris)")
    parser.add_argument("--work", type=Path, default=None, help="where atheris keeps crash inputs")
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "fuzz", "hypothesis": run_hypothesis(args.examples, timeout_s=max(600, args.examples))}
    if args.seconds > 0:
        work = args.work or Path(tempfile.mkdtemp(prefix="door-bridge-fuzz-"))
        result["atheris"] = run_atheris(args.seconds, work)
    print(json.dumps(result, sort_keys=True))
    failed = not result["hypothesis"]["passed"] or bool(result.get("atheris", {}).get("crashes"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
