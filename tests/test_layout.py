"""The package's shape: layers that import only the layers below them, no import cycle (imports inside
functions included), no module over 500 lines, few modules at the top, and every public path README and
the docs name still importing."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp

PACKAGE = Path(fastmlp.__file__).parent

# Bottom to top: a module may import modules of its own layer or of the layers before it, never after.
# Within a layer, the import graph must still have no cycle.
LAYERS = [
    ["fastmlp._version", "fastmlp.inputs"],
    ["fastmlp.runtime"],
    ["fastmlp.kernels"],
    ["fastmlp.optim", "fastmlp.inference", "fastmlp.model", "fastmlp.datasets"],
    ["fastmlp.backends"],
    ["fastmlp.trainer", "fastmlp.testing", "fastmlp.estimator"],
    ["fastmlp.cli"],
    ["fastmlp.bench", "fastmlp.sweep"],
    # The package root and the thin re-exports of moved modules sit on top: they import, nobody imports them.
    ["fastmlp", "fastmlp.__main__", "fastmlp.train", "fastmlp.evaluate", "fastmlp.predict",
     "fastmlp.checked_kernels", "fastmlp.backends.numba_fused"],
]

# Import paths README.md and the docs name; each must keep importing (moved modules leave a re-export).
PUBLIC_PATHS = [
    "fastmlp", "fastmlp.model", "fastmlp.optim", "fastmlp.inputs", "fastmlp.datasets", "fastmlp.trainer",
    "fastmlp.estimator", "fastmlp.testing", "fastmlp.kernels", "fastmlp.checked_kernels", "fastmlp.backends",
    "fastmlp.backends.numba_fused", "fastmlp.backends.numpy_ref", "fastmlp.train", "fastmlp.evaluate",
    "fastmlp.predict", "fastmlp.bench", "fastmlp.sweep", "fastmlp.cli",
]
PUBLIC_NAMES = {
    "fastmlp": ["MLP", "MLPClassifier", "Trainer", "History", "Pixels", "get_backend", "available_backends",
                "BackendError", "ModelFileError", "TrainingDivergedError", "datasets", "__version__"],
    "fastmlp.kernels": ["blas_threads_limited", "PANEL_WIDTH", "TILE_ROWS", "packed_shape", "panel_count"],
    "fastmlp.testing": ["assert_backends_equivalent", "backend_differences"],
    "fastmlp.datasets": ["load_mnist"],
    "fastmlp.backends.numba_fused": ["Backend"],
    "fastmlp.train": ["main", "build_parser"],
    "fastmlp.evaluate": ["main"],
    "fastmlp.predict": ["main"],
    "fastmlp.bench": ["main"],
    "fastmlp.sweep": ["main"],
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_nodes(tree: ast.AST):
    """Every node of the tree except those under `if TYPE_CHECKING:`, imports for the type checker alone."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def imported_modules(path: Path) -> set[str]:
    """The fastmlp modules a file imports anywhere in it (inside functions too, not for the type checker alone),
    resolved to module names.
    `from X import name` counts X.name when that is a module, else X."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("fastmlp"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fastmlp"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in ALL_MODULES else target)
    return {module for module in found if module != name}


ALL_MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}
GRAPH = {module_name(p): imported_modules(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    best, index = "", None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, i
    if index is None:
        raise AssertionError(f"{module} belongs to no layer of tests/test_layout.py's LAYERS")
    return index


def test_every_module_imports_only_its_own_layer_or_those_below():
    upward = sorted(f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
                    for module, targets in GRAPH.items() for target in targets
                    if layer_of(target) > layer_of(module))
    assert upward == []


def test_there_is_no_import_cycle():
    # Drop the edges into a package's __init__ from its own submodules' parents: `from . import x` is a
    # submodule import, resolved above; what remains is a real dependency.
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH.get(module, ())):
            if module.startswith(target + "."):
                continue  # a submodule importing its own package's __init__ is how Python loads it anyway
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_no_module_is_over_500_lines_and_at_most_12_sit_at_the_top():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
    top = sorted(p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__"))
    assert len(top) <= 12, top


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_each_documented_public_path_imports(path):
    module = importlib.import_module(path)
    for name in PUBLIC_NAMES.get(path, []):
        assert hasattr(module, name), f"{path}.{name} is gone"


@pytest.mark.parametrize("module", ["fastmlp.train", "fastmlp.evaluate", "fastmlp.predict", "fastmlp.bench",
                                    "fastmlp.sweep"])
def test_each_documented_python_m_command_still_runs(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr


def test_the_check_finds_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The two checks above can fail: a planted cycle and an upward import are reported."""
    planted = {**GRAPH, "fastmlp.model": GRAPH["fastmlp.model"] | {"fastmlp.trainer"},
               "fastmlp.trainer": GRAPH["fastmlp.trainer"] | {"fastmlp.model"}}
    monkeypatch.setattr(sys.modules[__name__], "GRAPH", planted)
    with pytest.raises(AssertionError):
        test_there_is_no_import_cycle()
    with pytest.raises(AssertionError):
        test_every_module_imports_only_its_own_layer_or_those_below()
