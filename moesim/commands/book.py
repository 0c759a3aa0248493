"""``moesim book``: re-execute a chapter of the book with other parameters (``moesim.bookrun``).

    moesim book list                                   # chapters and their parameters
    moesim book run book/dynamics.md -p n_experts=16   # executed notebook in runs/book-dynamics-<time>/
    moesim book run dynamics -p n_experts=16 --html    # ... and the chapter as one HTML page
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from ..arguments import UsageError, add_out_argument, add_overwrite_argument, add_progress_argument

#: The one-line instruction when the ``[book]`` extra is missing.
INSTALL_HINT = 'pip install "moesim[book]" (in a clone: pip install -e ".[book]")'


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
    add_out_argument(run, "a new runs/book-<chapter>-<time>")
    add_overwrite_argument(run)
    add_progress_argument(run, "no line per executed cell on stderr")
    run.add_argument("--log", action="store_true", help="stream the notebook's output while it runs")
    show = sub.add_parser("list", help="list the chapters and their parameters")
    show.add_argument("chapter", nargs="?", default=None, help="only this chapter")


def main(args: argparse.Namespace) -> int:
    from ..bookrun import chapter_parameters, chapter_path, default_out_dir, execute, parse_parameter, resolve_glue

    action = getattr(args, "book_action", None)
    if action is None:
        raise UsageError("choose an action: 'moesim book run CHAPTER -p NAME=VALUE ... [--html]' or 'moesim book list'")
    if importlib.util.find_spec("yaml") is None:
        raise UsageError(f"'moesim book' needs the [book] extra (yaml missing): {INSTALL_HINT}")
    from ..bookrun import book_root

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
    from ..outputs import OutputError, prepare_out

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
        from ..bookhtml import render_html

        page = render_html(notebook, root, out, chapter)
        print(f"rendered page:     {page}  ({time.perf_counter() - start:.0f} s)")
    return 0


def _list(root: Path, only: str | None) -> int:
    from ..bookrun import PARAMETERS_TAG, chapter_parameters, chapter_path, code_cells, toc_files

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
