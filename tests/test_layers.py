"""The packages are layers, down to the file: each package imports only itself and the layers below it — every
import, those inside functions included — no two modules import each other (directly or around a circle), the
engine does not reach into Triton, export does not reach into training, no package reads another's data files,
module names say one thing each, and no module outside `modeling/families/` names a family."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from .conftest import ROOT

# top to bottom; a package may import any package below it (docs/architecture.md)
LAYERS = ["cli", "loadtests", "export", "server", "training", "clients", "modeling", "core"]
# the same name for the same role in each API family (vLLM's entrypoints layout)
SHARED_NAMES = {"__init__", "__main__", "api_router", "protocol", "serving"}


def _module(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = ["glotta", *rel.parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """Every glotta name a file imports, relative imports resolved, wherever in the file the import stands."""
    here = _module(path)
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block) for s in block.body
                   for n in ast.walk(s)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # `if TYPE_CHECKING:` imports never run: annotations only
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found |= {module} | {f"{module}.{a.name}" for a in node.names}
    return {m for m in found if m.startswith("glotta.")}


def _files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


ALL = [f for layer in LAYERS for f in _files(layer)]
MODULES = {".".join(_module(f)): f for f in ALL}


def module_imports(path: Path) -> set[str]:
    """The glotta *modules* a file imports (an imported name resolves to the module that defines it)."""
    out = set()
    for name in imports(path):
        parts = name.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        if parts:
            out.add(".".join(parts))
    return out - {".".join(_module(path))}


@pytest.mark.parametrize("layer", LAYERS)
def test_each_package_imports_only_the_layers_below_it(layer):
    allowed = {layer, *LAYERS[LAYERS.index(layer) + 1:]}
    wrong = sorted(f"{f.relative_to(ROOT)} imports {m}" for f in _files(layer) for m in imports(f)
                   if m.split(".")[1] not in allowed)
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a set of modules importing in a circle."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_two_modules_import_each_other():
    graph = {name: module_imports(path) for name, path in MODULES.items()}
    # a package's __init__ imported by its own modules is not a cycle of code: only module → module edges count
    graph = {v: {w for w in ws if not MODULES[w].name == "__init__.py"} for v, ws in graph.items()}
    assert not _cycles(graph), _cycles(graph)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("importer,forbidden", [("server/engine", "glotta.server.triton"),
                                                ("export", "glotta.training"), ("modeling", "glotta.server")])
def test_one_way_dependencies(importer, forbidden):
    wrong = sorted(f"{f.relative_to(ROOT)} imports {m}" for f in sorted((ROOT / importer).rglob("*.py"))
                   for m in imports(f) if m == forbidden or m.startswith(forbidden + "."))
    assert not wrong, "\n".join(wrong)


def test_no_package_reads_another_packages_data_files():
    """Package data is read through its own package's API (`files(__package__)`), never by name from elsewhere."""
    wrong = []
    for layer in LAYERS:
        for f in _files(layer):
            for m in re.finditer(r'files\("glotta\.(\w+)', f.read_text()):
                if m.group(1) != layer:
                    wrong.append(f"{f.relative_to(ROOT)} reads glotta.{m.group(1)}'s files")
            if re.search(rf"parents?\[\d\][^\n]*/ \"(?!{layer})({'|'.join(LAYERS)})\"", f.read_text()):
                wrong.append(f"{f.relative_to(ROOT)} reaches into another package's folder")
    assert not wrong, "\n".join(wrong)


def test_module_names_are_unique():
    seen = defaultdict(list)
    for f in ALL:
        if f.stem not in SHARED_NAMES:
            seen[f.stem].append(str(f.relative_to(ROOT)))
    twice = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not twice, twice


def test_no_module_outside_the_family_files_names_a_family():
    from glotta.modeling.registry import names

    families = set(names())
    wrong = []
    for f in ALL:
        if f.is_relative_to(ROOT / "modeling" / "families"):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value in families:
                wrong.append(f"{f.relative_to(ROOT)}:{node.lineno} names {node.value!r}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    """The rules above would pass vacuously if `imports` missed these forms."""
    f = ROOT / "modeling" / "model_folder.py"
    assert "glotta.modeling.spec.ModelSpec" in imports(f)  # `from .spec import ModelSpec`
    assert "glotta.modeling.spec" in module_imports(f)
    cli_serve = imports(ROOT / "cli" / "cmd_serve.py")
    assert "glotta.server.app" in cli_serve  # imported inside _serve()
    assert any(m.startswith("glotta.server") for m in imports(ROOT / "export" / "gpu_check.py"))


def test_every_top_level_package_is_a_layer():
    import tomllib

    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    data = {"model_repository"}  # installed with the package (the demo models), but no code: not a layer
    assert sorted(folder for folder in mapped.values() if folder not in data) == sorted(LAYERS)
