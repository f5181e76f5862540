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


# Which of the project's packages (and top-level modules) each may import: layers point
# down. `names` and `spec` are the neutral ground the two adapters share; `catalog` stores
# and validates rows, and never reaches up into the sync engine or an adapter.
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    "settings": set(),
    "names": set(),
    "private_files": set(),
    "filters": set(),
    "spec": {"errors", "filters"},
    "dbt_project": set(),
    "destinations": {"errors", "settings", "spec", "private_files"},
    "warehouse": {"errors", "filters", "settings"},
    "catalog": {"errors", "settings", "private_files", "filters", "spec", "destinations"},
    "sync": {"errors", "filters", "spec", "destinations", "warehouse"},
    "demo": {"errors", "settings", "filters", "destinations", "catalog", "dbt_project"},
    "defs": {
        "errors",
        "settings",
        "names",
        "filters",
        "spec",
        "destinations",
        "warehouse",
        "catalog",
        "sync",
        "dbt_project",
    },
    "api": {
        "errors",
        "settings",
        "names",
        "private_files",
        "filters",
        "spec",
        "destinations",
        "warehouse",
        "catalog",
        "sync",
    },
}


def test_every_package_imports_only_the_layers_below_it() -> None:
    for path, names in _imports(PACKAGE).items():
        parts = Path(path).relative_to("composable_dagster").parts
        if len(parts) == 1 and parts[0] in (
            "__init__.py",
            "cli.py",
            "definitions.py",
            "dbt_definitions.py",
        ):
            continue  # the entry points: they wire everything together
        layer = parts[0].removesuffix(".py")
        assert layer in LAYERS, f"{path}: a package the layering does not know; add it"
        for name in names:
            if name.startswith("composable_dagster."):
                target = name.split(".")[1]
                assert target == layer or target in LAYERS[layer], (
                    f"{path} imports {name}: {layer}/ may import only {sorted(LAYERS[layer])}"
                )
