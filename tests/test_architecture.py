"""The layout of ARCHITECTURE.md holds in the code: every module in its layer, no import upwards,
every module with a one-line summary, and every file over 400 lines saying why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moesim"
DOC = ROOT / "ARCHITECTURE.md"
#: Longer files state their reason in their docstring (or leading C comment) in these words.
LENGTH_REASON = re.compile(r"about (\d+) lines, on purpose")
MAX_LINES = 400


def layer_table(text: str) -> dict[str, int]:
    """ARCHITECTURE.md's layer table: listed path (a file, or a folder ending in '/') -> layer."""
    table = {}
    for line in text.splitlines():
        m = re.match(r"^\| (\d) \| [^|]+ \| (.+) \|$", line)
        if m:
            for path in re.findall(r"`([^`]+)`", m.group(2)):
                assert path not in table, f"{path} is listed twice"
                table[path] = int(m.group(1))
    return table


def layer_of(rel: str, table: dict[str, int]) -> int | None:
    """The layer of a file: its own entry, else the deepest folder entry above it."""
    if rel in table:
        return table[rel]
    folders = [p for p in table if p.endswith("/") and rel.startswith(p)]
    return table[max(folders, key=len)] if folders else None


def module_files() -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py"))


def file_of(module: str) -> str | None:
    """The file of a dotted module name inside the package (None: not a moesim module)."""
    if module != "moesim" and not module.startswith("moesim."):
        return None
    path = ROOT / module.replace(".", "/")
    if (path / "__init__.py").is_file():
        return (path / "__init__.py").relative_to(ROOT).as_posix()
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py").relative_to(ROOT).as_posix()
    return None


def imports(rel: str, source: str | None = None) -> set[str]:
    """The moesim files ``rel`` imports (anywhere in it, but not under ``if TYPE_CHECKING:``);
    ``source``: its text, if not the file's."""
    tree = ast.parse((ROOT / rel).read_text() if source is None else source)
    package = rel[:-3].replace("/", ".")
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]
    else:
        package = package.rsplit(".", 1)[0]
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base == "moesim" and all(a.name == "__version__" for a in node.names):
                continue  # the version string: the package root is loaded before any module of it
            # ``from X import name``: name is a submodule when such a file exists
            names = [f"{base}.{a.name}" if file_of(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        found.update(f for f in map(file_of, names) if f is not None and f != rel)
    return found


TABLE = layer_table(DOC.read_text())


def test_every_module_has_a_layer_and_every_listed_path_exists():
    missing = [rel for rel in module_files() if layer_of(rel, TABLE) is None]
    assert not missing, f"modules missing from ARCHITECTURE.md's layer table: {missing}"
    absent = [p for p in TABLE if not (ROOT / p).exists()]
    assert not absent, f"ARCHITECTURE.md lists paths that do not exist: {absent}"


@pytest.mark.parametrize("rel", module_files())
def test_no_module_imports_from_a_layer_below_it(rel):
    own = layer_of(rel, TABLE)
    upward = {dep: layer_of(dep, TABLE) for dep in imports(rel) if layer_of(dep, TABLE) > own}
    assert not upward, f"{rel} (layer {own}) imports from higher layers: {upward}"


def test_the_layer_check_catches_an_upward_import():
    """The checker itself: ``config`` (layer 0) importing ``training`` (layer 3), at module level or
    inside a function, is an upward import; the same under ``if TYPE_CHECKING:`` is not."""
    for source in ("from .training import train\n", "def f():\n    from . import training\n"):
        deps = imports("moesim/config.py", source)
        assert deps == {"moesim/training.py"}
        assert layer_of("moesim/training.py", TABLE) > layer_of("moesim/config.py", TABLE)
    assert imports("moesim/config.py", "if TYPE_CHECKING:\n    from .training import train\n") == set()


@pytest.mark.parametrize("rel", module_files())
def test_every_module_opens_with_a_one_line_summary(rel):
    doc = ast.get_docstring(ast.parse((ROOT / rel).read_text()))
    assert doc and doc.split("\n")[0].strip(), f"{rel} has no module docstring"


def _opening(path: Path) -> str:
    text = path.read_text()
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(text)) or ""
    m = re.match(r"\s*/\*(.*?)\*/", text, re.S)  # C: the leading comment
    return m.group(1) if m else ""


@pytest.mark.parametrize("rel", sorted(p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*")
                                       if p.suffix in (".py", ".c")))
def test_a_file_over_400_lines_says_why(rel):
    """ARCHITECTURE.md's rule; the stated length must be the file's within 10 %."""
    n = len((ROOT / rel).read_text().splitlines())
    if n <= MAX_LINES:
        return
    m = LENGTH_REASON.search(" ".join(_opening(ROOT / rel).split()))
    assert m, f"{rel} has {n} lines: say why in its docstring ('about {n} lines, on purpose: ...') or split it"
    assert abs(int(m.group(1)) - n) <= 0.1 * n, f"{rel} says about {m.group(1)} lines but has {n}"
