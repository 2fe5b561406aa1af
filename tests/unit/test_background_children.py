"""Background children start niced: the niceness is set before the module (and its imports) runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bridge.upstream.background import BACKGROUND_NICENESS, background_argv

PROBE = """
import json, os, sys
# Recorded at the module's first line: nothing of door-bridge or httpx loaded yet, already niced.
print(json.dumps({"nice": os.getpriority(os.PRIO_PROCESS, 0), "name": __name__, "argv": sys.argv,
                  "early": sorted(m for m in sys.modules if m.split(".")[0] in ("bridge", "httpx", "pydantic"))}))
"""


def _run(tmp_path: Path, *args: str, niceness: int = BACKGROUND_NICENESS) -> dict:
    (tmp_path / "probe_child.py").write_text(PROBE)
    done = subprocess.run(background_argv("probe_child", *args, niceness=niceness), capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    return json.loads(done.stdout)


def test_the_module_runs_as_main_with_its_arguments_already_niced(tmp_path: Path) -> None:
    seen = _run(tmp_path, "apply", "a b", "--x")
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["nice"] == max(BACKGROUND_NICENESS, own)
    assert seen["name"] == "__main__"
    assert seen["argv"][1:] == ["apply", "a b", "--x"] and seen["argv"][0].endswith("probe_child.py")
    assert seen["early"] == []


def test_a_child_is_never_made_less_nice_than_its_parent(tmp_path: Path) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert _run(tmp_path, niceness=0)["nice"] == own


def test_the_download_apply_mqtt_and_metrics_children_are_started_this_way() -> None:
    """Every spawn site uses background_argv, directly or through start_piped_child (a `sys.executable, "-m"` spawn starts at full priority)."""
    root = Path(__file__).resolve().parents[2] / "bridge"
    for path in (root / "upstream" / "download_child.py", root / "central" / "sync.py", root / "outward" / "mqtt.py",
                 root / "outward" / "metrics.py"):
        text = path.read_text()
        assert ("background_argv(" in text or "start_piped_child(" in text) and '"-m"' not in text, path
