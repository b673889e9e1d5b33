"""The package's shape (docs/development.md, "The layout"): imports run downward only, from
the commands to the model, with no circles, and no source file outgrows 350 lines.

Every import counts, the ones inside functions too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "src" / "mlptrain"
# Top to bottom; a module may import its own layer's packages and every layer below.
LAYERS = [
    ("cli", "api"),
    ("run", "sweep", "deploy", "compare"),
    ("evaluation", "stack", "tracking"),
    ("training",),
    ("data", "artifacts"),
    ("config", "util"),
    ("model", "errors"),
]
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}
MAX_LINES = 350


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The mlptrain modules `path` imports, anywhere in it (`from mlptrain import
    __version__`, the package's face, is not a dependency on a layer)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mlptrain.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("mlptrain."):
                found.add(node.module)
            elif node.module == "mlptrain":
                found |= {f"mlptrain.{a.name}" for a in node.names if a.name != "__version__"}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules} for name, path in modules.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    top_modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert packages | top_modules == set(LAYER_OF)
    assert len(top_modules) <= 4


def test_imports_run_downward_only():
    upward = [
        f"{module} imports {target}"
        for module, targets in graph().items()
        if layer(module) is not None
        for target in targets
        if layer(target) is not None and layer(target) < layer(module)
    ]
    assert upward == []


def test_no_module_imports_itself_through_others():
    edges = graph()
    state: dict[str, str] = {}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_no_source_file_is_too_long_to_read():
    long = [
        f"{path.relative_to(REPO)}: {count} lines"
        for path in PACKAGE.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert long == []
