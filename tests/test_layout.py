"""The package's layout: modules of at most 600 lines, no import circles, every package and the
sample data in the wheel.

Import circles are found statically, from the ``import`` statements (``ast``), so the test needs
neither Qt nor torch. Two graphs of ``napari_deblend`` modules are checked:

- **Import time**: the imports Python runs while a module is being imported: those at module level
  (also inside module-level ``if``/``try``/``with`` blocks and class bodies) and those inside the
  module's own functions that it calls at module level (a decorator, a table built at import). A
  circle here leaves a module half-initialised when the other one reads from it: none is allowed.
  ``if TYPE_CHECKING:`` blocks never run and are left out (of both graphs). Importing ``a.b.c`` also initialises the
  packages ``a`` and ``a.b`` first; those implicit edges are left out (a package's ``__init__`` that
  re-exports its submodules is no circle), an explicit ``from . import name`` is not.
- **Everything**, the imports inside functions too (deferred imports, run when the function is
  called, after both modules have finished importing). A circle there breaks no import, but says
  that two modules depend on each other: the known ones are listed below, and no new one may appear.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_deblend"
MAX_LINES = 600

# Modules over the limit while they are being split: list one here, with the job each part will
# have, only for the time its split takes. The test fails when a listed module is within the limit
# again, so that the list does not outlive the splits.
OVERSIZED_BEING_SPLIT: set[str] = set()

# Circles through deferred (function-level) imports that exist today; they break no import, but
# each is two modules that need each other:
KNOWN_DEFERRED_CIRCLES = [
    # real_galaxies reads training.unet.component_stats; training.peeling loads real galaxies
    {"napari_deblend.real_galaxies", "napari_deblend.training.peeling", "napari_deblend.training.unet"},
    # SurveyPreset.magnitude calls field.calibration.magnitude, which takes a SurveyPreset
    {"napari_deblend.field.calibration", "napari_deblend.presets"},
    # base.load_weights hands over to checkpoints.load_weights, which raises base.DeblendError
    {"napari_deblend.deblenders.base", "napari_deblend.deblenders.checkpoints"},
]


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _targets(module: str, is_package: bool, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """The package's modules an ``import`` / ``from ... import`` statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in modules}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith(PACKAGE):
        return set()
    found = {target} if target in modules else set()
    submodules = {f"{target}.{alias.name}" for alias in node.names} & set(modules)
    if submodules and not any(f"{target}.{alias.name}" not in modules for alias in node.names):
        found.discard(target)  # `from . import a, b` of submodules only: the package itself is no edge
    return found | submodules


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, path: Path, modules: dict[str, Path], deferred: bool) -> set[str]:
    """Modules of the package that ``module`` imports at import time (``deferred``: anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    functions = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    found: set[str] = set()
    called: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                if not in_function:  # decorators run at import time
                    for decorator in getattr(child, "decorator_list", []):
                        visit(decorator, in_function)
                if deferred:
                    visit(child, True)
                continue
            if _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.update(_targets(module, is_package, child, modules))
            elif isinstance(child, ast.Call) and not in_function and isinstance(child.func, ast.Name):
                called.add(child.func.id)
            visit(child, in_function)

    visit(tree, False)
    for name in sorted(called & set(functions)):  # the module's functions it runs while importing
        visit(functions[name], False)
    found.discard(module)
    return found


def _circles(deferred: bool) -> list[set[str]]:
    """Strongly connected groups of more than one module in the import graph (Tarjan)."""
    modules = _modules()
    graph = {name: _imports(name, path, modules, deferred) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return circles


def test_no_import_circle_at_import_time():
    circles = _circles(deferred=False)
    assert not circles, "modules importing each other at import time: " + "; ".join(
        " <-> ".join(sorted(group)) for group in circles)


def test_no_new_circle_through_deferred_imports():
    new = [group for group in _circles(deferred=True) if group not in KNOWN_DEFERRED_CIRCLES]
    assert not new, "modules depending on each other (imports inside functions included): " + "; ".join(
        " <-> ".join(sorted(group)) for group in new)


def test_the_circle_finder_sees_a_circle(tmp_path, monkeypatch):
    """The checks above would catch plots <-> plots_mosaic as it was (a module-level import each way)."""
    package = tmp_path / PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("thing = 1\n\n\ndef later():\n    from . import a\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import x\n")
    (package / "d.py").write_text("from .c import TYPE_CHECKING\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _circles(deferred=False) == []  # b's import of a is deferred; c's of d never runs
    assert _circles(deferred=True) == [{f"{PACKAGE}.a", f"{PACKAGE}.b"}]
    (package / "b.py").write_text("def build():\n    from . import a\n\n\nTABLE = build()\n")
    assert _circles(deferred=False) == [{f"{PACKAGE}.a", f"{PACKAGE}.b"}]  # called at import time


def test_modules_are_at_most_600_lines():
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in _modules().values()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVERSIZED_BEING_SPLIT}
    assert not too_long, f"modules over {MAX_LINES} lines (split them into modules of one job): {too_long}"
    done = {name: sizes.get(name) for name in OVERSIZED_BEING_SPLIT if sizes.get(name, 0) <= MAX_LINES}
    assert not done, f"split or gone, remove from OVERSIZED_BEING_SPLIT in tests/test_layout.py: {done}"


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_is_listed_for_the_wheel():
    setuptools = _pyproject()["tool"]["setuptools"]
    on_disk = {name for name, path in _modules().items() if path.name == "__init__.py"}
    listed = set(setuptools["packages"])
    assert on_disk <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {on_disk - listed}"
    assert setuptools["package-dir"] == {f"{PACKAGE}.sample_data": "sample_data"}
    assert (ROOT / "sample_data" / "sample_field.fits").is_file()
    assert not (ROOT / PACKAGE / "sample_data").exists(), "the sample data live in the top-level sample_data/"


def test_sample_data_are_found_in_a_checkout():
    from napari_deblend._sample_data import SAMPLE_FIELD, SAMPLE_TRUTH, sample_data_dir

    assert sample_data_dir() == ROOT / "sample_data"
    assert SAMPLE_FIELD.is_file() and SAMPLE_TRUTH.is_file()


def test_wheel_carries_the_sample_data_the_manifest_and_the_weights(tmp_path):
    """A non-editable install gets napari_deblend/sample_data (from the top-level folder) and the weights."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (PACKAGE, "sample_data"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("napari_deblend-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("sample_data/sample_field.fits", "sample_data/sample_field_truth.ecsv", "napari.yaml",
                     "deblenders/weights/peeling.pt", "deblenders/weights/peeling.json", "_widgets/__init__.py",
                     "realpool/split_register.json"):
        assert f"{PACKAGE}/{expected}" in names, expected
    assert not any(name.startswith("sample_data/") for name in names)
