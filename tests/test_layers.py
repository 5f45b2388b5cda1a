"""The package layout keeps its layers: a lower layer imports an upper one only inside
a function (a one-line delegate such as ``Node.compute`` calling ``api.compute``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowdispatch"
# each layer, and the layers above it that its modules may not import at module level
ABOVE = {
    "core": ("executors", "view", "api", "cli", "demo", "testing", "cache"),
    "cache": ("executors", "view", "api", "cli", "demo", "testing"),
    "executors": ("view", "api", "cli", "demo", "testing"),
    "view": ("executors", "api", "cli", "demo", "testing"),
}


def _module_level_imports(path: Path) -> list[str]:
    """Absolute names of the flowdispatch modules ``path`` imports outside functions."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.parse(path.read_text()).body:  # module level only
        if isinstance(node, ast.If):  # if TYPE_CHECKING: imports for annotations only
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [f"{module}.{a.name}" for a in node.names] if not node.module else [module]
            found.extend(names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(a.name for a in node.names) if isinstance(node, ast.Import) else (
                found.append(node.module or ""))
    return [name for name in found if name.startswith("flowdispatch")]


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_a_layer_does_not_import_the_layers_above_it(layer):
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _module_level_imports(path):
            part = name.split(".")[1] if "." in name else ""
            if part in ABOVE[layer]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_folders_are_the_layers():
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert folders == ["cache", "core", "executors", "view"]
