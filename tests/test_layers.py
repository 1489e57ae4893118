"""The import layers: every import in medprune/ points down, never into pipelines/, never at a private name.

Layers, lowest first (DESIGN.md §2, STYLE.md): errors/_io/registry/schema → data, models, metrics →
tasks → engine, compress → report → config → workflows → cli. Imports inside functions count, and
so do module names handed to importlib as strings.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "medprune"

#: Layer of each top-level module or sub-package of medprune (a higher number may import a lower one).
LAYERS: dict[str, int] = {
    "errors": 0, "_io": 0, "registry": 0, "schema": 0, "_progress": 0,
    "data": 1, "models": 1, "metrics": 1,
    "tasks": 2,
    "engine": 3, "compress": 3,
    "report": 4,
    "config": 5,
    "workflows": 6,
    "cli": 7,
    "__init__": 8,  # the package's lazy facade (medprune.train, medprune.load_config, ...)
    "__main__": 8,
}


@dataclass(frozen=True)
class Import:
    source: Path
    line: int
    module: str  # absolute dotted module imported
    names: tuple[str, ...]  # names taken from it (from-imports)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(path: Path, level: int, module: str | None) -> str:
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (level - 1)] if level else []
    return ".".join([*base, *([module] if module else [])])


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(path, node.level, node.module) if node.level else (node.module or "")
            found.append(Import(path, node.lineno, module, tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # importlib strings: "medprune.x.y" or "pipelines.x" literals naming modules
            text = node.value
            if text.replace(".", "").replace("_", "").isalnum() and text.split(".")[0] in ("medprune", "pipelines") \
                    and "." in text and _is_module(text):
                found.append(Import(path, node.lineno, text, ()))
    return found


def _layer_of(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    if parts[0] != "medprune":
        return None
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _sources()}
    assert sorted(tops - set(LAYERS)) == []


def test_no_import_points_up() -> None:
    upward = []
    for path in _sources():
        here = _layer_of(_module_name(path))
        assert here is not None
        for imp in _imports(path):
            if imp.module.split(".")[0] == "pipelines":
                upward.append(f"{imp.source.relative_to(ROOT)}:{imp.line} imports {imp.module} (pipelines/)")
                continue
            there = _layer_of(imp.module)
            if there is None or here[0] in ("__init__", "__main__"):
                continue
            if there[1] > here[1]:
                upward.append(f"{imp.source.relative_to(ROOT)}:{imp.line} ({here[0]}, layer {here[1]}) imports "
                              f"{imp.module} ({there[0]}, layer {there[1]})")
    assert not upward, "\n" + "\n".join(upward)


def test_no_module_imports_another_modules_private_names() -> None:
    """A ``_private`` module is its package's own machinery (importable inside that package only); a
    ``_private`` name is its module's own (importable nowhere else)."""
    private = []
    for path in _sources():
        own = _module_name(path)
        own_package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
        for imp in _imports(path):
            if not imp.module.startswith("medprune") or imp.module == own:
                continue
            targets = [(imp.module, None)] + [(f"{imp.module}.{n}", n) for n in imp.names]
            for module, name in targets:
                leaf = module.split(".")[-1]
                if not leaf.startswith("_") or leaf.startswith("__"):
                    continue
                if name is None or _is_module(module):  # a private module: same package only
                    parent = module.rsplit(".", 1)[0]
                    if not (own_package == parent or own_package.startswith(parent + ".")):
                        private.append(f"{path.relative_to(ROOT)}:{imp.line} imports private module {module}")
                else:
                    private.append(f"{path.relative_to(ROOT)}:{imp.line} imports {name} from {imp.module}")
    assert not private, "\n" + "\n".join(private)


@pytest.mark.parametrize("sample, expected", [
    ("from medprune.config import load_config", "medprune.config"),
    ("from ..config import x", "medprune.config"),
    ("from . import y", "medprune.engine"),
])
def test_the_walker_resolves_relative_imports(sample: str, expected: str) -> None:
    node = ast.parse(sample).body[0]
    assert isinstance(node, ast.ImportFrom)
    where = PACKAGE / "engine" / "trainer.py"
    assert (_resolve(where, node.level, node.module) if node.level else node.module) == expected


def test_the_walker_sees_imports_inside_functions_and_importlib_strings(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from medprune.workflows.run import run_job\n"
                     "    return importlib.import_module('medprune.cli')\n")
    assert {i.module for i in _imports(probe)} == {"medprune.workflows.run", "medprune.cli"}
    assert _layer_of("medprune.workflows.run") == ("workflows", 6) and _layer_of("medprune.data.x")[1] == 1
