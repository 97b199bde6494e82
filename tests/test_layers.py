"""The packages are layers: each imports only itself and the layers below it — every import, those inside
functions included — so no two top-level packages import each other, and the bottom layer imports none of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

# top to bottom; a package may import any package below it (README, "Layout")
LAYERS = ["cli", "loadtests", "export", "server", "training", "clients", "core"]


def _module(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["glotta", *rel.parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports(path: Path) -> set[str]:
    """Every glotta module a file imports, relative imports resolved, wherever in the file the import stands."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("glotta.")}


def _files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_imports_only_the_layers_below_it(layer):
    allowed = {layer, *LAYERS[LAYERS.index(layer) + 1:]}
    wrong = sorted(f"{f.relative_to(ROOT)} imports {m}" for f in _files(layer) for m in imports(f)
                   if m.split(".")[1] not in allowed)
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The rule above would pass vacuously if `imports` missed these forms."""
    f = ROOT / "core" / "model_folder.py"
    assert "glotta.core.tokenizer.Tokenizer" in imports(f)  # `from .tokenizer import Tokenizer`
    cli_serve = imports(ROOT / "cli" / "serve.py")
    assert "glotta.server.app" in cli_serve  # imported inside _serve()
    assert any(m.startswith("glotta.server") for m in imports(ROOT / "export" / "gpu_check.py"))


def test_every_top_level_package_is_a_layer():
    import tomllib

    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert sorted(folder for folder in mapped.values()) == sorted(LAYERS)
