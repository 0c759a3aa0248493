"""Re-execute a chapter of the book with other parameters (``moesim book``).

Every experiment chapter of the book (``book/*.md``, MyST notebooks listed in ``_toc.yml``) has one
code cell tagged ``parameters``; its assignments are the chapter's parameters and their defaults::

    moesim book list                                   # chapters and their parameters
    moesim book run book/dynamics.md -p n_experts=16   # executed notebook in runs/book/...
    moesim book run dynamics -p n_experts=16 --html    # ... and a rendered HTML page

The chapter is read with jupytext and executed with papermill (which inserts the new values after
the ``parameters`` cell), in the chapter's folder, so it computes everything again: every number and
figure of the page comes from the new run. ``--html`` then renders that executed notebook (without
executing it again) with the book's own configuration, next to the notebook.

papermill, jupytext and jupyter-book come with the ``[book]`` extra and are imported only here.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cli import UsageError

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

def execute(path: Path, parameters: dict[str, Any], out_dir: Path, log_output: bool = False) -> Path:
    """Execute the chapter with ``parameters`` into ``out_dir/<chapter>.ipynb``; return that path.

    jupytext turns the MyST file into a notebook and papermill runs it in the chapter's folder,
    inserting the values as a new cell after the one tagged ``parameters``.
    """
    import jupytext
    import papermill

    nb = jupytext.read(path)
    tagged = [c for c in nb.cells if c.cell_type == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise UsageError(f"{path.name}: jupytext finds {len(tagged)} cells tagged '{PARAMETERS_TAG}', expected 1")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{path.stem}.ipynb"
    papermill.execute_notebook(nb, str(target), parameters=parameters, cwd=str(path.parent),
                               kernel_name="python3", progress_bar=False, log_output=log_output,
                               report_mode=False)
    return target


def render_html(notebook: Path, root: Path, out_dir: Path, chapter: Path | None = None) -> Path:
    """Render an executed chapter with the book's configuration, without executing anything.

    The page is built inside a copy of the whole book in which the chapter's MyST source is
    replaced by the executed notebook and no other chapter is executed, so its numbers,
    equations, theorems, citations and links to other chapters are the book's own. Returns the
    page's HTML file (``out_dir/_build/html/<chapter path>.html``).
    """
    import yaml

    chapter = (chapter or notebook).resolve()
    rel = chapter.relative_to(root).with_suffix("") if chapter.is_relative_to(root) else Path(notebook.stem)
    src = out_dir / "_page_source"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["execute"] = dict(config.get("execute", {}), execute_notebooks="off")
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(root / "_toc.yml", src / "_toc.yml")
    for bib in config.get("bibtex_bibfiles", []):
        (src / bib).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / bib, src / bib)
    for doc in toc_files(root):
        source = root / f"{doc}.md"
        if Path(doc) == rel or not source.is_file():
            continue
        (src / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, src / f"{doc}.md")
    (src / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(notebook, src / f"{rel}.ipynb")
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(src), "--path-output", str(out_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise RuntimeError(f"rendering {notebook} failed (jupyter-book exit code {done.returncode})")
    page = out_dir / "_build" / "html" / f"{rel}.html"
    if not page.is_file():
        raise RuntimeError(f"rendering {notebook} produced no page {page}")
    return page


def default_out_dir(root: Path, chapter: Path) -> Path:
    return root / "runs" / "book" / f"{chapter.stem}-{time.strftime('%Y%m%d-%H%M%S')}"


# --- command line --------------------------------------------------------------------------

def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="book_action", metavar="ACTION")
    run = sub.add_parser("run", help="execute a chapter with other parameters",
                         description="Execute a chapter of the book with other parameters; writes the executed "
                                     "notebook (and with --html a rendered page) under runs/book/.")
    run.add_argument("chapter", help="a chapter: book/dynamics.md, dynamics.md or dynamics")
    run.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], metavar="NAME=VALUE",
                     help="set one parameter of the chapter's 'parameters' cell (repeatable)")
    run.add_argument("--html", action="store_true", help="also render the executed chapter as an HTML page")
    run.add_argument("--out", default=None, help="output folder (default runs/book/<chapter>-<time>)")
    run.add_argument("--log", action="store_true", help="stream the notebook's output while it runs")
    show = sub.add_parser("list", help="list the chapters and their parameters")
    show.add_argument("chapter", nargs="?", default=None, help="only this chapter")


def main(args: argparse.Namespace) -> int:
    action = getattr(args, "book_action", None)
    if action is None:
        raise UsageError("choose an action: 'moesim book run CHAPTER -p NAME=VALUE ... [--html]' or 'moesim book list'")
    root = book_root()
    if action == "list":
        return _list(root, args.chapter)
    chapter = chapter_path(args.chapter, root)
    rel = str(chapter.relative_to(root))
    defaults = chapter_parameters(chapter)
    params = dict(parse_parameter(item, defaults, rel) for item in args.parameters)
    out = Path(args.out).resolve() if args.out else default_out_dir(root, chapter)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty; give a new folder")
    missing = [m for m in ("jupytext", "papermill", "myst_nb") + (("jupyter_book",) if args.html else ())
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"'moesim book run' needs the book extra ({', '.join(missing)} missing): "
                         f"pip install -e '.[book]'")
    values = dict(defaults, **params)
    print(f"moesim book: executing {rel} with " + (", ".join(f"{k}={v!r}" for k, v in params.items()) or "its defaults"),
          flush=True)
    start = time.perf_counter()
    try:
        notebook = execute(chapter, params, out, log_output=args.log)
    except Exception as err:  # papermill.PapermillExecutionError and kernel failures
        failed = out / f"{chapter.stem}.ipynb"
        text = str(err).strip()
        print(f"moesim book: error: executing {rel} failed: {text.splitlines()[-1] if text else repr(err)}"
              + (f"; the partly executed notebook is {failed}" if failed.exists() else ""), file=sys.stderr)
        return 1
    (out / "parameters.json").write_text(json.dumps(dict(chapter=rel, changed=params, parameters=values),
                                                    indent=2, default=repr) + "\n")
    print(f"executed notebook: {notebook}  ({time.perf_counter() - start:.0f} s)")
    if args.html:
        page = render_html(notebook, root, out, chapter)
        print(f"rendered page:     {page}")
    return 0


def _list(root: Path, only: str | None) -> int:
    files = [chapter_path(only, root)] if only else [root / f"{f}.md" for f in toc_files(root)]
    for path in files:
        rel = str(path.relative_to(root))
        if not path.is_file():
            print(f"{rel}: (missing)")
        elif not any(PARAMETERS_TAG in tags for tags, _ in code_cells(path)):
            print(f"{rel}: no parameters")
        else:
            print(f"{rel}: " + ", ".join(f"{k}={v!r}" for k, v in chapter_parameters(path).items()))
    return 0
