"""The layering rules, read from the modules' own imports: geo is the core, maps builds pages, api and the CLI serve."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the top-level packages it must never import
FORBIDDEN = {
    "geo": {"api", "maps", "wangge", "fixtures", "bench"},
    "maps": {"api", "wangge", "fixtures", "bench"},
    "api": {"wangge", "fixtures", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    """Top-level packages a module imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package):
    modules = sorted((ROOT / package).rglob("*.py"))
    assert len(modules) > 5, f"found too few modules under {package}/"
    offending = {
        str(module.relative_to(ROOT)): sorted(imported_packages(module) & FORBIDDEN[package]) for module in modules
    }
    assert {m: bad for m, bad in offending.items() if bad} == {}


def test_the_walker_sees_function_level_imports(tmp_path):
    module = tmp_path / "sample.py"
    module.write_text("import os\n\ndef f():\n    from api import deps\n    import maps.html\n")
    assert imported_packages(module) == {"os", "api", "maps"}


def test_concept_packages_say_what_they_own():
    for package in ("areas", "incidents", "planning", "dispatch", "analysis"):
        init = ROOT / "geo" / package / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"geo/{package}/__init__.py has no docstring"


def test_maps_hold_builders_only():
    """Every map's data is gathered in geo; maps/ neither connects nor holds SQL."""
    for module in sorted((ROOT / "maps").rglob("*.py")):
        source = module.read_text()
        assert not imported_packages(module) & {"sqlalchemy", "asyncpg", "psycopg"}, module.name
        assert not re.search(r"\b(SELECT|INSERT|UPDATE|DELETE)\s+[\w*(]", source), module.name
