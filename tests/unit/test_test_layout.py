"""Tests and benches import shared test code one way only: from `tests.support`, never from a test module.

A helper imported out of `test_x.py` drags that module's tests, fixtures and hypothesis profiles into
the importer (and into a bench), and it cannot be found by someone looking for the shared rigs. The
check walks every module's imports with `ast`; it sees imports inside functions and strings it
cannot run (a child's `-c` source is not an import).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_test_modules(path: Path) -> list[str]:
    """`path:line: module` for each import of a `test_*` module (a test file) from `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            if module.split(".")[0] == "tests" and module.split(".")[-1].startswith("test_"):
                where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                found.append(f"{where}:{node.lineno}: {module}")
    return found


def test_benches_and_tests_import_shared_code_only_from_tests_support() -> None:
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    assert len(files) > 50
    offenders = [hit for path in files for hit in imported_test_modules(path)]
    assert offenders == [], "move the shared helpers to tests/support/: " + "; ".join(offenders)


def test_the_check_sees_an_import_from_a_test_module(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from tests.unit import test_fuzz as tf\n"
                     "    from tests.integration.test_osdp_reader import KEY\n"
                     "    from tests.support.osdp_rig import KEY\n")
    assert [hit.split(": ")[1] for hit in imported_test_modules(probe)] == [
        "tests.unit.test_fuzz", "tests.integration.test_osdp_reader"]
