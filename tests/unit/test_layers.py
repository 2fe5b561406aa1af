"""The package's layers: no module imports a layer above its own, and the configuration is a leaf.

The layers, lowest first, are the folders of `bridge/` (README's table). A module may import its
own layer and any below it; `verifier/` (the pure core) and `bridge/__init__` (the version) are
below all of them. Imports under `if TYPE_CHECKING:` are for the type checker only and run never,
so they are not counted.

The second half runs the real commands in a fresh interpreter with `-X importtime` and reads which
modules were loaded: `check-config`, `status` and `record-exit` must not load a hardware or HTTP
library (a technician's `door-bridge status` on a loaded Pi, ExecStopPost within TimeoutStopSec).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = ROOT / "bridge"
LAYERS = ("config", "door", "inputs", "state", "upstream", "central", "outward", "service", "cli")
HARDWARE_AND_HTTP = ("gpiozero", "lgpio", "evdev", "ndef", "nfc", "httpx", "serial", "osdp", "paho", "prometheus_client")


def _layer(module: str) -> int:
    """-1 for what every layer may use (`bridge`, `verifier`, the standard library, third parties)."""
    parts = module.split(".")
    if parts[0] != "bridge" or len(parts) == 1:
        return -1
    if parts[1] not in LAYERS:
        raise AssertionError(f"{module}: bridge/{parts[1]} is in no layer; add it to README's table and LAYERS")
    return LAYERS.index(parts[1])


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """(line, module) of every import that can run, in functions too (a late import is still one)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from bridge import state` imports the package bridge.state; `__version__` is bridge's own
                found.append((node.lineno, f"bridge.{alias.name}" if base == "bridge" and alias.name in LAYERS else base))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def upward_imports(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = _module_name(path, root)
        own = _layer(module)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, imported in runtime_imports(ast.parse(path.read_text(), str(path)), package):
            if _layer(imported) > own:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} ({LAYERS[own] if own >= 0 else 'bridge'}) "
                                f"imports {imported} ({LAYERS[_layer(imported)]})")
    return problems


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports(BRIDGE) == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    fake = tmp_path / "bridge"
    (fake / "config").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "config" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bridge.service.daemon import Daemon\n"
        "def late():\n    from bridge.inputs.nfc import NfcReader\n")
    assert upward_imports(fake) == ["bridge/config/__init__.py:5: bridge.config (config) imports bridge.inputs.nfc (inputs)"]


def _loaded(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    loaded = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "bridge" in loaded, done.stderr[-2000:]
    return loaded


def _heavy(loaded: set[str], *also: str) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in HARDWARE_AND_HTTP or m.startswith(also or ("\0",)))


def _config_file(tmp_path: Path) -> Path:
    key = tmp_path / "frontelio.key"
    key.write_text("mk_" + "k" * 40)
    key.chmod(0o600)
    path = tmp_path / "config.toml"
    # Every reader type and an upstream: each names a model that once lived beside hardware code.
    path.write_text(f"""
[bridge]
state_dir = "{tmp_path / 'state'}"
[gpio]
pin_factory = "mock"
[doors.main]
relay_pin = 17
[[readers]]
type = "serial"
id = "qr1"
port = "/dev/ttyACM0"
[[readers]]
type = "evdev"
id = "wedge"
device = "/dev/input/event3"
[[readers]]
type = "keypad"
id = "pad"
device = "/dev/input/event4"
[[readers]]
type = "nfc"
id = "nfc1"
device = "usb"
[[readers]]
type = "wiegand"
id = "wg1"
d0_pin = 5
d1_pin = 6
[upstream.frontelio]
base_url = "https://frontelio.example"
api_key_file = "{key}"
""")
    return path


def test_config_package_loads_no_input_upstream_or_hardware_module(tmp_path: Path) -> None:
    code = f"from bridge.config import load; load({str(_config_file(tmp_path))!r})"
    loaded = _loaded(["-c", code], tmp_path)
    assert _heavy(loaded, "bridge.inputs", "bridge.upstream", "bridge.door", "bridge.state", "bridge.service") == []


@pytest.mark.parametrize("command", [["check-config"], ["status"], ["record-exit"]], ids=lambda c: c[0])
def test_operator_commands_load_no_hardware_or_http_library(command: list[str], tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    loaded = _loaded(["-m", "bridge.cli", *command, "--config", str(config)], tmp_path,
                     env={"SERVICE_RESULT": "success", "EXIT_CODE": "exited", "EXIT_STATUS": "0"})
    assert _heavy(loaded, "bridge.inputs", "bridge.service.daemon") == []


def test_the_daemons_units_never_import_the_daemon() -> None:
    """bridge/service/daemon.py composes the units (parts, scan_pipeline, health, reader_supervisor,
    clock_watch, audit_events, ...); none of them may reach back into it, so each stays testable
    on its own (tests/integration/test_scan_pipeline.py builds a pipeline without a daemon). Only
    the CLI starts a daemon."""
    problems = []
    for path in sorted(BRIDGE.rglob("*.py")):
        module = _module_name(path, BRIDGE)
        if module.startswith("bridge.cli") or module == "bridge.service.daemon":
            continue
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for line, imported in runtime_imports(ast.parse(path.read_text(), str(path)), package):
            if imported == "bridge.service.daemon":
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} imports the daemon")
    assert problems == []
