"""The package's layers import downwards only: the ROS-free core imports no other part of vla_ros, the datasets and
the DDS backend only the core, and nothing but the CLI imports the CLI. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vla_ros"

# layer -> the other layers it may import (None: any)
ALLOWED: dict[str, set[str] | None] = {
    "core": set(),
    "datasets": {"core"},
    "dds": {"core"},
}
CLI_ONLY = "cli"


def vla_ros_imports(path: Path) -> set[str]:
    """The vla_ros sub-packages `path` imports (`vla_ros.core.errors` -> 'core'), relative imports excluded."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        imported |= {name.split(".")[1] for name in names if name.startswith("vla_ros.")}
    return imported


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_layers_import_downwards_only():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(path)
        others = vla_ros_imports(path) - {layer}
        allowed = ALLOWED.get(layer)
        if allowed is not None:
            violations += [f"{path.relative_to(PACKAGE.parent)} ({layer}) imports vla_ros.{other}"
                           for other in sorted(others - allowed)]
        if layer != CLI_ONLY and CLI_ONLY in others:
            violations.append(f"{path.relative_to(PACKAGE.parent)} ({layer}) imports vla_ros.cli")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from vla_ros.cli.arguments import require_count\n    import vla_ros.ros.spin\n")
    assert vla_ros_imports(module) == {"cli", "ros"}
