"""Re-execute a chapter of the book with other parameters (``moesim book``, ``moesim.commands.book``).

Every experiment chapter of the book (``book/*.md``, MyST notebooks listed in ``_toc.yml``) has one
code cell tagged ``parameters``; its assignments are the chapter's parameters and their defaults::

    moesim book list                                   # chapters and their parameters
    moesim book run book/dynamics.md -p n_experts=16   # executed notebook in runs/book-dynamics-<time>/
    moesim book run dynamics -p n_experts=16 --html    # ... and the chapter as one HTML page

The chapter is read with jupytext and executed with papermill (which inserts the new values after
the ``parameters`` cell), in the chapter's folder, so it computes everything again: every number and
figure of the page comes from the new run; a line per code cell on stderr shows the progress, and
the glued values are written into the notebook's prose (``resolve_glue``).
``--html`` then renders that executed notebook (``moesim.bookhtml``; without executing it again) with the
book's own configuration (numbering, theorems, citations, glued values filled in) and keeps only that page and
the files it uses (a few MB, math typeset offline): links to the other chapters point to the
published book (``moesim.bookhtml.PUBLISHED``).

papermill, jupytext and jupyter-book come with the ``[book]`` extra and are imported only here
(and in ``moesim.bookhtml``).
"""

from __future__ import annotations

import ast
import re
import sys
import time
from pathlib import Path
from typing import Any

from .arguments import UsageError

PARAMETERS_TAG = "parameters"


# --- where the book is ---------------------------------------------------------------------

def book_root(start: Path | None = None) -> Path:
    """The folder holding ``_toc.yml``: the current folder or a parent, else the source checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "_config.yml").is_file():
            return folder
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "_toc.yml").is_file():
        return checkout
    raise UsageError("cannot find the book: no _toc.yml in the current folder, its parents or the moesim checkout")


def toc_files(root: Path) -> list[str]:
    """The documents of ``_toc.yml`` in reading order, as paths relative to ``root`` without suffix."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                out.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


def chapter_path(name: str, root: Path) -> Path:
    """Resolve ``book/dynamics.md``, ``dynamics.md`` or ``dynamics`` to a chapter file of the book."""
    chapters = [root / f"{f}.md" for f in toc_files(root)]
    candidates = [Path(name), root / name, root / "book" / name]
    candidates += [c.with_suffix(".md") for c in candidates if c.suffix != ".md"]
    for c in candidates:
        c = c.resolve()
        if c.is_file() and c in [ch.resolve() for ch in chapters]:
            return c
    names = ", ".join(str(ch.relative_to(root)) for ch in chapters if ch.is_file())
    raise UsageError(f"chapter {name!r} is not a chapter of the book; choose one of: {names}")


# --- the parameters cell -------------------------------------------------------------------

_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_cells(path: Path) -> list[tuple[list[str], str]]:
    """(tags, source) of every code cell of a MyST notebook, read without jupytext.

    Cell options may be given as ``:tags: [a, b]`` lines or as a ``---`` YAML block at the
    top of the cell, the two forms MyST-NB accepts.
    """
    cells = []
    for match in _CODE_CELL.finditer(path.read_text(encoding="utf-8")):
        body = match.group(1)
        lines = body.split("\n")
        options: list[str] = []
        if lines and lines[0].strip() == "---":
            end = next((i for i in range(1, len(lines)) if lines[i].strip() == "---"), 0)
            options, lines = lines[1:end], lines[end + 1:]
        else:
            while lines and lines[0].startswith(":"):
                options.append(lines.pop(0)[1:])
        tags: list[str] = []
        for opt in options:
            key, _, value = opt.partition(":")
            if key.strip() == "tags":
                tags = [t.strip().strip("'\"") for t in value.strip().strip("[]").split(",") if t.strip()]
        cells.append((tags, "\n".join(lines).strip("\n")))
    return cells


def parameters_source(path: Path) -> str:
    """The source of the chapter's one code cell tagged ``parameters``."""
    found = [src for tags, src in code_cells(path) if PARAMETERS_TAG in tags]
    if len(found) != 1:
        raise UsageError(f"{path.name} must have exactly one code cell tagged '{PARAMETERS_TAG}', it has {len(found)}"
                         + ("" if found else " (it is not an experiment chapter)"))
    return found[0]


def chapter_parameters(path: Path) -> dict[str, Any]:
    """Name -> default value of every assignment in the chapter's ``parameters`` cell (literals only)."""
    source = parameters_source(path)
    out: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        try:
            out[target] = ast.literal_eval(value)
        except ValueError:
            raise UsageError(f"{path.name}: parameter {target!r} must have a literal default value "
                             f"(number, string, bool, list, tuple or dict)") from None
    if not out:
        raise UsageError(f"{path.name}: the '{PARAMETERS_TAG}' cell assigns no parameters")
    return out


def _describe(value: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list, e.g. '[1, 2]'", tuple: "a tuple, e.g. '(1, 2)'", dict: "a dict"}.get(type(value), "a literal")


def parse_parameter(item: str, defaults: dict[str, Any], chapter: str = "chapter") -> tuple[str, Any]:
    """Parse ``NAME=VALUE`` against the chapter's parameters; the value takes the default's type."""
    if "=" not in item:
        raise UsageError(f"-p {item!r} must look like NAME=VALUE")
    name, raw = (s.strip() for s in item.split("=", 1))
    if name not in defaults:
        raise UsageError(f"-p {name}: {chapter} has no parameter {name!r}; allowed: {', '.join(defaults)}")
    default = defaults[name]
    kind = type(default)
    try:
        if kind is bool:
            low = raw.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return name, low in ("true", "1", "yes")
        if kind is str:
            value = raw
            if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
                value = raw[1:-1]
            return name, value
        value = ast.literal_eval(raw)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is None or (type(value) is kind):
            return name, value
        raise ValueError
    except (ValueError, SyntaxError):
        raise UsageError(f"-p {name}={raw!r} has the wrong type; it must be {_describe(default)} "
                         f"(default {default!r})") from None


# --- helpers for the chapters ----------------------------------------------------------------

def glue(name: str, value: Any, display: bool = False) -> None:
    """``myst_nb.glue`` for the chapters: numpy scalars become Python numbers, figures are closed.

    ``{glue:text}`name:.2f``` formats through ``float``, which fails on numpy's reprs; a glued
    figure that stays open would be drawn a second time at the end of the cell. It returns
    nothing, so a cell that ends with ``glue(...)`` shows no output under its (visible) code.
    """
    from myst_nb import glue as _glue

    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    _glue(name, value, display=display)
    if type(value).__name__ == "Figure" and type(value).__module__.startswith("matplotlib"):
        import matplotlib.pyplot as plt

        plt.close(value)


# --- running -------------------------------------------------------------------------------

def _progress_engine(label: str, stream=None):
    """A papermill engine that prints ``[book <label>] cell i/n`` on stderr as each code cell starts."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            code = [i for i, c in enumerate(nb_man.nb.cells) if c.cell_type == "code"]
            start, t0 = nb_man.cell_start, time.perf_counter()

            def cell_start(cell, cell_index=None, **kw):
                if cell_index in code:
                    print(f"[book {label}] cell {code.index(cell_index) + 1}/{len(code)} "
                          f"({time.perf_counter() - t0:.0f} s)", file=stream or sys.stderr, flush=True)
                return start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


def execute(path: Path, parameters: dict[str, Any], out_dir: Path, log_output: bool = False,
            progress: bool = True) -> Path:
    """Execute the chapter with ``parameters`` into ``out_dir/<chapter>.ipynb``; return that path.

    jupytext turns the MyST file into a notebook and papermill runs it in the chapter's folder,
    inserting the values as a new cell after the one tagged ``parameters``; with ``progress`` a line
    per code cell goes to stderr.
    """
    import jupytext
    import papermill
    from papermill.engines import papermill_engines

    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if c.cell_type == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise UsageError(f"{path.name}: jupytext finds {len(tagged)} cells tagged '{PARAMETERS_TAG}', expected 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.ipynb"
    engine = None
    if progress:
        engine = "moesim-progress"
        papermill_engines.register(engine, _progress_engine(path.stem))
    papermill.execute_notebook(nb, str(target), parameters=parameters, cwd=str(path.parent),
                               kernel_name="python3", progress_bar=False, log_output=log_output,
                               report_mode=False, engine_name=engine)
    return target


_GLUE_TEXT = re.compile(r"\{glue:text\}`([^`]+)`")


def resolve_glue(notebook: Path) -> int:
    """Write the glued values into the prose of an executed notebook, in place; return how many.

    In Jupyter a ``{glue:text}`name``` role is shown as written; the book (MyST-NB) replaces it with
    the value the notebook glued. This does the same in the notebook's Markdown cells, with MyST-NB's
    own formatting (``name:.2f``), so the notebook reads like the page. Roles whose value is not in
    the notebook are left as they are.
    """
    import nbformat
    from myst_nb.core.variables import format_plain_text

    nb = nbformat.read(notebook, as_version=4)
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            text = out.get("data", {}).get(f"{meta.get('mime_prefix', '')}text/plain")
            if meta.get("name") and text is not None:
                values[meta["name"]] = text
    count = 0

    def paste(match: re.Match) -> str:
        nonlocal count
        key, _, fmt = match.group(1).partition(":")
        if key not in values:
            return match.group(0)
        try:
            text = format_plain_text(values[key], fmt or "s")
        except Exception:  # noqa: BLE001 - keep the role where MyST-NB would warn
            return match.group(0)
        count += 1
        return text

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _GLUE_TEXT.sub(paste, cell.source)
    nbformat.write(nb, notebook)
    return count


def default_out_dir(chapter: Path) -> Path:
    """A new folder ``runs/book-<chapter>-<time>`` of the current directory (not of the checkout).

    The same rule as every other command (``moesim.outputs.default_out``)."""
    from .outputs import default_out

    return default_out("book", chapter.stem, root=Path.cwd() / "runs")
