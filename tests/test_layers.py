"""The layer rule of docs/architecture.md, enforced over every module of `mixkit/` (imports inside functions
count too: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mixkit"

# Bottom to top. A module may import from its own layer or lower ones; packages that share a layer are
# siblings and do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("utils",),
    ("data",),
    ("models",),
    ("pipelines",),
    ("train", "eval"),
    ("apps",),
    ("serve",),
    ("cli", "testing"),
)


def part_of(module: str) -> str | None:
    """`mixkit.models.blip2.modeling` -> "models"; None for the root package `mixkit` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer_of(part: str) -> int:
    for index, names in enumerate(LAYERS):
        if part in names:
            return index
    raise AssertionError(f"mixkit.{part} is in no layer of LAYERS: add it (and to docs/architecture.md)")


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every `mixkit` import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parents + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] if node.module is None else [base]
            found += [(node.lineno, name) for name in names]
    return [(line, name) for line, name in found if name == "mixkit" or name.startswith("mixkit.")]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_package_has_a_layer() -> None:
    parts = {part_of(module_name(path)) or "" for path in MODULES}
    layered = {part for names in LAYERS for part in names}
    assert parts <= layered, f"packages in no layer (add them to LAYERS and docs/architecture.md): {parts - layered}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_higher_layer_or_a_sibling(path: Path) -> None:
    own_part = part_of(module_name(path))
    own = layer_of(own_part)
    for line, target in imported_modules(path):
        target_part = part_of(target)
        if target_part is None:  # `from mixkit import __version__`: the root package is below every layer
            continue
        other = layer_of(target_part)
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        assert other <= own, f"{where}: layer {LAYERS[other]} is above {LAYERS[own]}"
        assert other < own or target_part == own_part, f"{where}: siblings {LAYERS[own]} do not import each other"


def test_the_root_package_imports_only_utils_at_import_time() -> None:
    """`import mixkit` stays light: its public entry points (`load_pipeline`) load on first use."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    for node in top_level:
        module = getattr(node, "module", None) or ""
        assert not module.startswith("mixkit.") or module.startswith("mixkit.utils"), module


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an import from a higher layer is found, with its line."""
    probe = PACKAGE / "data" / "_layer_probe.py"
    probe.write_text("def f():\n    from mixkit.pipelines.blip2 import Blip2Pipeline\n")
    try:
        with pytest.raises(AssertionError, match=r"_layer_probe.py:2 imports mixkit.pipelines.blip2"):
            test_no_module_imports_from_a_higher_layer_or_a_sibling(probe)
    finally:
        probe.unlink()
