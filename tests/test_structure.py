"""The architecture's rules, checked: package boundaries and code style."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "composable_dagster"


def _imports(directory: Path) -> dict[str, set[str]]:
    """Top-level modules imported by each file below `directory` (absolute imports)."""
    found = {}
    for path in directory.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_api_never_loads_dagster() -> None:
    # In a fresh process: transitive imports count too.
    code = (
        "import sys; import composable_dagster.api.app, composable_dagster.cli; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"the API imported {result.stdout.strip()}"


def test_filters_import_only_pydantic_sqlglot_and_the_stdlib() -> None:
    allowed_third_party = {"pydantic", "sqlglot"}
    for path, names in _imports(PACKAGE / "filters").items():
        for name in names:
            top = name.split(".")[0]
            if top == "composable_dagster":
                assert name.startswith("composable_dagster.filters"), (path, name)
            elif top not in sys.stdlib_module_names:
                assert top in allowed_third_party, (path, name)


@pytest.mark.parametrize(("package", "forbidden"), [("defs", "api"), ("api", "defs")])
def test_adapters_do_not_import_each_other(package: str, forbidden: str) -> None:
    for path, names in _imports(PACKAGE / package).items():
        assert not any(n.startswith(f"composable_dagster.{forbidden}") for n in names), path


def test_ruff_lint_and_format_are_clean() -> None:
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *args], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-3000:]
