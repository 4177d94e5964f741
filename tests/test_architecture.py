"""The layering rules of src/retouch, read from the source alone (no import is executed).

- Import direction: each package may import only itself and the packages to its left in
  ``LAYERS``, so ``core`` never reaches into ``edit`` and no library package into ``worlds``
  (a world plugs in through ``retouch.core.world``). Every ``import`` and ``from`` statement
  counts, inside functions and ``TYPE_CHECKING`` blocks too: a lazy import is still a dependency.
- No ``from retouch.x import _name`` across modules: a name used elsewhere is public and documented.
- No function longer than ``MAX_FUNCTION_LINES`` lines: each stage fits on one screen.
- No ``# fmt: skip``: long calls take keyword arguments instead of a hand-kept layout.

Each failure lists every offender as ``path:line`` with what breaks the rule.
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "retouch"

# Left to right: a package may import only packages to its left (and itself). Names in one tuple
# share a rank. The top-level ``retouch/__init__.py`` and ``__main__.py`` may import anything.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version"),
    ("io",),  # files, pictures, recipes: below core, so results can save themselves
    ("models",),
    ("core",),
    ("metrics",),
    ("train",),
    ("edit",),
    ("steer",),
    ("worlds",),
    ("batch",),
    ("ui",),  # the web UI: thin over everything to its left
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TOP_LEVEL = ("__init__", "__main__")
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Module:
    path: Path
    name: str  # dotted: "retouch.edit.api"
    tree: ast.Module

    @property
    def part(self) -> str | None:
        """The layer this module belongs to (``edit`` for ``retouch.edit.api``, ``errors`` for
        ``retouch.errors``), or None for the top-level ``retouch`` and ``retouch.__main__``."""
        first = self.name.split(".")[1] if "." in self.name else "__init__"
        return None if first in TOP_LEVEL else first

    @property
    def where(self) -> str:
        return str(self.path.relative_to(SRC.parent))


def modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append(Module(path, name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return found


def imported_names(module: Module) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every import in ``module``, relative ones
    resolved; ``from retouch import edit`` counts as an import of ``retouch.edit``."""
    is_package = module.path.name == "__init__.py"
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.name.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, target] if target else base)
            names = [alias.name for alias in node.names]
            if target == "retouch":  # from retouch import edit, version: the submodules themselves
                found += [(node.lineno, f"retouch.{name}", []) for name in names if name in RANK]
                names = [name for name in names if name not in RANK]
                if not names:
                    continue
            found.append((node.lineno, target, names))
    return found


def layer_of(target: str) -> str | None:
    parts = target.split(".")
    return parts[1] if parts[0] == "retouch" and len(parts) > 1 else None


@pytest.fixture(scope="module")
def source() -> list[Module]:
    return modules()


def test_every_package_has_a_layer(source: list[Module]) -> None:
    unplaced = sorted({m.part for m in source if m.part is not None and m.part not in RANK})
    assert not unplaced, f"packages not in LAYERS (place each in the import order): {unplaced}"


def layer_violations(module: Module) -> list[str]:
    """Each import in ``module`` of a package right of its own, or of the top-level package."""
    offenders = []
    if module.part is None or module.part not in RANK:
        return offenders
    for line, target, _ in imported_names(module):
        layer = layer_of(target)
        if target == "retouch":
            offenders.append(f"{module.where}:{line} imports the top-level retouch package")
        elif layer in RANK and RANK[layer] > RANK[module.part]:
            offenders.append(
                f"{module.where}:{line} ({module.part}) imports {target} ({layer} is right of {module.part})"
            )
    return offenders


def private_imports(module: Module) -> list[str]:
    """Each ``from retouch.x import _name`` (or import of a ``_module``) in another module."""
    offenders = []
    for line, target, names in imported_names(module):
        if not target.startswith("retouch") or target == module.name:
            continue
        hidden = [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
        private = [n for n in names if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
        if hidden or private:
            offenders.append(f"{module.where}:{line} imports {', '.join(private) or target} from {target}")
    return offenders


def test_imports_point_only_to_the_left(source: list[Module]) -> None:
    offenders = [offender for module in source for offender in layer_violations(module)]
    assert not offenders, "imports against the layer order:\n" + "\n".join(offenders)


def test_no_private_name_is_imported_across_modules(source: list[Module]) -> None:
    offenders = [offender for module in source for offender in private_imports(module)]
    assert not offenders, "private names imported across modules:\n" + "\n".join(offenders)


def long_functions(module: Module) -> list[str]:
    """Each function or method of ``module`` (nested ones too) over ``MAX_FUNCTION_LINES``,
    counted from its first decorator to its last line."""
    offenders = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > MAX_FUNCTION_LINES:
                offenders.append(f"{module.where}:{node.lineno} {node.name} is {length} lines")
    return offenders


def test_no_function_is_longer_than_a_screen(source: list[Module]) -> None:
    offenders = [offender for module in source for offender in long_functions(module)]
    assert not offenders, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(offenders)


def test_no_fmt_skip_markers(source: list[Module]) -> None:
    offenders = []
    for module in source:
        tokens = tokenize.generate_tokens(io.StringIO(module.path.read_text(encoding="utf-8")).readline)
        for token in tokens:
            if token.type == tokenize.COMMENT and "fmt: skip" in token.string:
                offenders.append(f"{module.where}:{token.start[0]}")
    assert not offenders, "'# fmt: skip' markers (use keyword arguments instead):\n" + "\n".join(offenders)


def test_the_checks_see_a_violation() -> None:
    """The rules above catch what they claim to on a made-up module, so a pass means something."""
    code = (
        "from retouch.edit.api import _finish\n"
        "def f():\n    from retouch.worlds import shapes64\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    )
    module = Module(PACKAGE / "core" / "fake.py", "retouch.core.fake", ast.parse(code))
    assert [(line, target) for line, target, _ in imported_names(module)] == [
        (1, "retouch.edit.api"),
        (3, "retouch.worlds"),
    ]
    where = [violation.split(" ", 1)[0] for violation in layer_violations(module)]
    assert where == ["src/retouch/core/fake.py:1", "src/retouch/core/fake.py:3"]
    assert private_imports(module) == ["src/retouch/core/fake.py:1 imports _finish from retouch.edit.api"]
    relative = Module(PACKAGE / "edit" / "api.py", "retouch.edit.api", ast.parse("from ..core import _x\n"))
    assert imported_names(relative) == [(1, "retouch.core", ["_x"])] and len(private_imports(relative)) == 1
    assert not layer_violations(relative)
    assert long_functions(module) == [f"src/retouch/core/fake.py:2 f is {MAX_FUNCTION_LINES + 2} lines"]
