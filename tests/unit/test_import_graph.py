"""algorithms/ stays pure: it imports only torch, numpy and a few standard-library
modules (docs/conventions.md, Code style)."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ALGORITHMS = Path(__file__).resolve().parents[2] / "algorithms"
ALLOWED = {"torch", "numpy", "math", "typing", "dataclasses"}
# Sibling modules of the package may import each other: that keeps the layer pure.
INTERNAL = "dibs.algorithms"


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) for every import statement; relative imports are reported as '.<module>'."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append((node.lineno, "__import__()"))
    return found


def _allowed(module: str) -> bool:
    if module.startswith("."):
        return module.count(".") == 1 or module == "."  # same package only, never above it
    return module.split(".")[0] in ALLOWED or module == INTERNAL or module.startswith(INTERNAL + ".")


def test_algorithms_folder_exists_without_init():
    assert ALGORITHMS.is_dir()
    # A namespace package mapped to dibs.algorithms by pyproject's package-dir; no __init__.py.
    assert not (ALGORITHMS / "__init__.py").exists()


@pytest.mark.parametrize("path", sorted(ALGORITHMS.glob("*.py")), ids=lambda p: p.name)
def test_algorithms_imports_only_allowed_modules(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [f"{path.name}:{line}: {mod}" for line, mod in _imported_modules(tree) if not _allowed(mod)]
    assert not bad, f"algorithms/ may import only {sorted(ALLOWED)}; found: {bad}"


def test_checker_rejects_forbidden_imports():
    # The check itself must be able to fail.
    source = "import os\nfrom ray import tune\nfrom ..platform import config\nx = __import__('json')\n"
    mods = [mod for _, mod in _imported_modules(ast.parse(source))]
    assert not any(_allowed(mod) for mod in mods)
    ok = "import torch\nimport numpy as np\nfrom torch.nn import functional\nfrom typing import Optional\n"
    assert all(_allowed(mod) for _, mod in _imported_modules(ast.parse(ok)))
