"""Re-execute a chapter of the book with other parameters (``moesim book``).

Every experiment chapter of the book (``book/*.md``, MyST notebooks listed in ``_toc.yml``) has one
code cell tagged ``parameters``; its assignments are the chapter's parameters and their defaults::

    moesim book list                                   # chapters and their parameters
    moesim book run book/dynamics.md -p n_experts=16   # executed notebook in runs/book-dynamics-<time>/
    moesim book run dynamics -p n_experts=16 --html    # ... and the chapter as one HTML page

The chapter is read with jupytext and executed with papermill (which inserts the new values after
the ``parameters`` cell), in the chapter's folder, so it computes everything again: every number and
figure of the page comes from the new run; a line per code cell on stderr shows the progress, and
the glued values are written into the notebook's prose (``resolve_glue``).
``--html`` then renders that executed notebook (without executing it again) with the book's own
configuration (numbering, theorems, citations, glued values filled in) and keeps only that page and
the files it uses (a few MB, math typeset offline): links to the other chapters point to the
published book (``PUBLISHED``).

papermill, jupytext and jupyter-book come with the ``[book]`` extra and are imported only here.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cli import UsageError

PARAMETERS_TAG = "parameters"
#: The published book: ``--html`` pages link to its other chapters.
PUBLISHED = "https://moesim.github.io/moesim/"
#: The one-line instruction when the ``[book]`` extra is missing.
INSTALL_HINT = 'pip install "moesim[book]" (in a clone: pip install -e ".[book]")'


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


def render_html(notebook: Path, root: Path, out_dir: Path, chapter: Path | None = None) -> Path:
    """Render an executed chapter as one HTML page with the book's configuration; execute nothing.

    The page is built with jupyter-book in a temporary copy of the book's sources in which the
    chapter's MyST file is replaced by the executed notebook (so numbering, theorems, citations,
    cross-references and glued values are the book's own); no chapter is executed. Only the page
    and the files it uses are kept, in ``out_dir``: ``<chapter>.html`` (its links to the other
    chapters rewritten to the published book), ``_static/`` (with the parts of the offline MathJax
    the page loads, ``MATHJAX_PARTS``) and ``_images/``. Returns the page's path.
    """
    import tempfile

    import yaml

    chapter = (chapter or notebook).resolve()
    rel = chapter.relative_to(root).with_suffix("") if chapter.is_relative_to(root) else Path(notebook.stem)
    with tempfile.TemporaryDirectory(prefix="moesim-book-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        config = yaml.safe_load((root / "_config.yml").read_text())
        config["execute"] = dict(config.get("execute", {}), execute_notebooks="off")
        sphinx_cfg = config.get("sphinx", {})
        if sphinx_cfg.get("local_extensions"):  # the book's own Sphinx extensions, from the checkout
            sphinx_cfg["local_extensions"] = {name: str(root / path)
                                              for name, path in sphinx_cfg["local_extensions"].items()}
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
        cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(src), "--path-output", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        html = Path(tmp) / "_build" / "html"
        page = html / f"{rel}.html"
        if done.returncode != 0 or not page.is_file():
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise RuntimeError(f"rendering {notebook} failed (jupyter-book exit code {done.returncode})")
        text = published_links(page.read_text(encoding="utf-8"), rel)
        depth = len(rel.parts) - 1  # the page sits at the top of out_dir: "../_static" becomes "_static"
        text = text.replace(f'"{"../" * depth}_sources/{rel.as_posix()}.ipynb"', f'"{notebook.name}"')
        for folder in ("_static", "_images", "_sphinx_design_static"):
            text = text.replace(f'"{"../" * depth}{folder}/', f'"{folder}/')
            if (html / folder).is_dir() and f'"{folder}/' in text:
                used = set(re.findall(r'"_images/([^"#?]+)"', text)) if folder == "_images" else None
                shutil.copytree(html / folder, out_dir / folder, dirs_exist_ok=True,
                                ignore=functools.partial(_unused, used=used))
        mathjax = html / "_static" / "mathjax"
        if mathjax.is_dir():  # the offline MathJax: only what the page loads (tex-chtml, its fonts, TeX extensions)
            for part in MATHJAX_PARTS:
                if (mathjax / part).is_dir():
                    shutil.copytree(mathjax / part, out_dir / "_static" / "mathjax" / part, dirs_exist_ok=True)
                elif (mathjax / part).is_file():
                    (out_dir / "_static" / "mathjax").mkdir(parents=True, exist_ok=True)
                    shutil.copy(mathjax / part, out_dir / "_static" / "mathjax" / part)
        target = out_dir / f"{rel.name}.html"
        target.write_text(text, encoding="utf-8")
    return target


#: The files of the offline MathJax copy (sphinx-mathjax-offline, 24 MB in all) that a page uses.
MATHJAX_PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def _unused(folder: str, names: list[str], used: set[str] | None) -> list[str]:
    """Files a single page does not need: source maps, translations, the full MathJax (its needed
    parts are copied separately) and images it does not show."""
    return [n for n in names if n.endswith(".map") or n in ("locales", "mathjax")
            or (used is not None and n not in used)]


def published_links(text: str, rel: Path) -> str:
    """Point the page's links to other pages of the book at the published book (``PUBLISHED``)."""
    import posixpath

    here = posixpath.dirname(rel.as_posix())

    def fix(match: re.Match) -> str:
        attr, href = match.group(1), match.group(2)
        path, _, anchor = href.partition("#")
        if not path.endswith(".html") or "://" in path or path.startswith(("/", "mailto:")):
            return match.group(0)
        target = posixpath.normpath(posixpath.join(here, path))
        if target == rel.as_posix() + ".html":
            return f'{attr}="#{anchor}"' if anchor else f'{attr}="#"'
        return f'{attr}="{PUBLISHED}{target}' + (f"#{anchor}" if anchor else "") + '"'

    return re.sub(r'(href)="([^"]*)"', fix, text)


def default_out_dir(chapter: Path) -> Path:
    """A new folder ``runs/book-<chapter>-<time>`` of the current directory (not of the checkout).

    The same rule as every other command (``moesim.outputs.default_out``)."""
    from .outputs import default_out

    return default_out("book", chapter.stem, root=Path.cwd() / "runs")


# --- command line --------------------------------------------------------------------------

def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="book_action", metavar="ACTION")
    run = sub.add_parser("run", help="execute a chapter with other parameters",
                         description="Execute a chapter of the book with other parameters; writes the executed "
                                     "notebook (and with --html the chapter as one HTML page) into a new folder "
                                     "runs/book-<chapter>-<time> of the current directory. Needs the [book] extra: "
                                     + INSTALL_HINT)
    run.add_argument("chapter", help="a chapter: book/dynamics.md, dynamics.md or dynamics")
    run.add_argument("-p", "--parameter", dest="parameters", action="append", default=[], metavar="NAME=VALUE",
                     help="set one parameter of the chapter's 'parameters' cell (repeatable)")
    run.add_argument("--html", action="store_true",
                     help="also render the executed chapter as one HTML page (links to the published book)")
    run.add_argument("--out", default=None, help="output folder (default runs/book-<chapter>-<time>)")
    run.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder whole")
    run.add_argument("--no-progress", action="store_true", help="no line per executed cell on stderr")
    run.add_argument("--log", action="store_true", help="stream the notebook's output while it runs")
    show = sub.add_parser("list", help="list the chapters and their parameters")
    show.add_argument("chapter", nargs="?", default=None, help="only this chapter")


def main(args: argparse.Namespace) -> int:
    action = getattr(args, "book_action", None)
    if action is None:
        raise UsageError("choose an action: 'moesim book run CHAPTER -p NAME=VALUE ... [--html]' or 'moesim book list'")
    if importlib.util.find_spec("yaml") is None:
        raise UsageError(f"'moesim book' needs the [book] extra (yaml missing): {INSTALL_HINT}")
    root = book_root()
    if action == "list":
        return _list(root, args.chapter)
    chapter = chapter_path(args.chapter, root)
    rel = str(chapter.relative_to(root))
    defaults = chapter_parameters(chapter)
    params = dict(parse_parameter(item, defaults, rel) for item in args.parameters)
    # bad parameters are named first (read without the extra); then the extra is required
    missing = [m for m in ("jupytext", "papermill", "myst_nb") + (("jupyter_book",) if args.html else ())
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"'moesim book run' needs the [book] extra ({', '.join(missing)} missing): {INSTALL_HINT}")
    from .outputs import OutputError, prepare_out

    out = Path(args.out).resolve() if args.out else default_out_dir(chapter)
    if out.exists() and any(out.iterdir()) and args.overwrite:
        shutil.rmtree(out)  # replaced whole, never merged with an earlier run's files
    try:
        out = prepare_out(out)  # created and checked for writability before anything runs
    except OutputError as err:
        raise UsageError(str(err)) from None
    values = dict(defaults, **params)
    print(f"moesim book: executing {rel} with " + (", ".join(f"{k}={v!r}" for k, v in params.items()) or "its defaults"),
          flush=True)
    start = time.perf_counter()
    try:
        notebook = execute(chapter, params, out, log_output=args.log, progress=not args.no_progress)
    except Exception as err:  # papermill.PapermillExecutionError and kernel failures
        failed = out / f"{chapter.stem}.ipynb"
        text = str(err).strip()
        print(f"moesim book: error: executing {rel} failed: {text.splitlines()[-1] if text else repr(err)}"
              + (f"; the partly executed notebook is {failed}" if failed.exists() else ""), file=sys.stderr)
        return 1
    resolve_glue(notebook)
    (out / "parameters.json").write_text(json.dumps(dict(chapter=rel, changed=params, parameters=values),
                                                    indent=2, default=repr) + "\n")
    print(f"executed notebook: {notebook}  ({time.perf_counter() - start:.0f} s)")
    if args.html:
        start = time.perf_counter()
        print("moesim book: rendering the page (jupyter-book, nothing executed)", file=sys.stderr, flush=True)
        page = render_html(notebook, root, out, chapter)
        print(f"rendered page:     {page}  ({time.perf_counter() - start:.0f} s)")
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
