"""The book's structure and the ``moesim book`` command (quick; the book itself is built by .ci/book).

Checks that every document of ``_toc.yml`` exists, that every experiment chapter has exactly one
cell tagged ``parameters`` with literal defaults, that the code that makes an experiment stays
visible (behind a toggle: ``hide-input``) and only plumbing is removed (``remove-cell``), that the
configuration keeps the build strict, executed and offline, and that ``moesim book run`` refuses
unknown or mistyped parameters with exit code 2 before executing anything.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

from moesim import bookrun  # noqa: E402
from moesim.arguments import UsageError  # noqa: E402
from moesim.cli import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Pages of the TOC that are not experiment chapters (no parameters cell by design).
NOT_EXPERIMENTS = {"book/index", "book/intro", "book/api", "book/references",
                   "book/official_code"}
#: Pages with no code at all.
NO_CODE = {"book/index", "book/api", "book/references"}
#: Tags a code cell may carry: experiment code is shown (no tag) or folded behind a toggle
#: (``hide-input``); ``remove-cell`` is for plumbing only (see ``is_plumbing``). ``remove-input``
#: (output without any way to see the code) is not used.
ALLOWED_TAGS = {"parameters", "hide-input", "remove-cell"}
#: Calls that are plumbing: gluing a value into the prose, display options.
PLUMBING_CALLS = {"glue", "set_option"}


def is_plumbing(source: str) -> bool:
    """True when every statement of the cell is an import or a plumbing call (``glue(...)``, ...)."""
    for statement in ast.parse(source).body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            continue
        call = statement.value if isinstance(statement, ast.Expr) else None
        func = call.func if isinstance(call, ast.Call) else None
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name not in PLUMBING_CALLS:
            return False
    return True


def toc() -> list[str]:
    return bookrun.toc_files(ROOT)


def test_every_toc_entry_exists():
    docs = toc()
    assert docs[0] == "book/index" and docs[1] == "book/intro" and docs[-1] == "book/references"
    missing = [d for d in docs if not (ROOT / f"{d}.md").is_file()]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert len(set(docs)) == len(docs)


@pytest.mark.parametrize("doc", [d for d in bookrun.toc_files(ROOT) if d not in NOT_EXPERIMENTS])
def test_experiment_chapter_has_one_parameters_cell(doc):
    path = ROOT / f"{doc}.md"
    tagged = [src for tags, src in bookrun.code_cells(path) if "parameters" in tags]
    assert len(tagged) == 1, f"{doc}: {len(tagged)} cells tagged 'parameters'"
    params = bookrun.chapter_parameters(path)
    assert params, f"{doc}: the parameters cell assigns nothing"
    # papermill parses "name = value  # comment" lines; a quote in a comment breaks its parser
    for line in tagged[0].splitlines():
        comment = line.partition("#")[2]
        assert "'" not in comment and '"' not in comment, f"{doc}: quote in a parameters comment: {line!r}"


def test_chapters_import_moesim_and_copy_no_model_code():
    for doc in toc():
        text = (ROOT / f"{doc}.md").read_text()
        if doc in NO_CODE:
            continue
        assert "import moesim" in text or "from moesim" in text, f"{doc} does not use moesim"
        for forbidden in ("class Params", "def router_logits", "def expert_outputs", "torch.nn.Module"):
            assert forbidden not in text, f"{doc} defines model code ({forbidden})"


@pytest.mark.parametrize("doc", [d for d in bookrun.toc_files(ROOT) if d not in NO_CODE])
def test_experiment_code_is_visible_and_only_plumbing_is_removed(doc):
    """A reader can open the code of every table and figure; nothing but plumbing is removed."""
    cells = bookrun.code_cells(ROOT / f"{doc}.md")
    assert cells, f"{doc}: no code cells"
    for i, (tags, source) in enumerate(cells):
        assert set(tags) <= ALLOWED_TAGS, f"{doc}, code cell {i}: tags {tags}; allowed: {sorted(ALLOWED_TAGS)}"
        if "remove-cell" in tags:
            assert is_plumbing(source), (f"{doc}, code cell {i} is removed but does more than import and glue: "
                                         f"tag it hide-input so the reader can open it")
    assert any("remove-cell" not in tags for tags, _ in cells)


def test_plumbing_rule():
    assert is_plumbing('from moesim.bookrun import glue\nglue("M", M)\npd.set_option("x", 1)\n')
    assert not is_plumbing('glue("M", M)\nfig, ax = plt.subplots()\n')
    assert not is_plumbing("result = moesim.train(cfg, 10)\n")


def test_light_parser_agrees_with_jupytext():
    jupytext = pytest.importorskip("jupytext")
    for doc in toc():
        path = ROOT / f"{doc}.md"
        nb = jupytext.read(path)
        ours = [(tags, src) for tags, src in bookrun.code_cells(path)]
        theirs = [(list(c.metadata.get("tags", [])), c.source) for c in nb.cells if c.cell_type == "code"]
        assert [t for t, _ in ours] == [t for t, _ in theirs], doc
        assert [s.strip() for _, s in ours] == [s.strip() for _, s in theirs], doc


def test_config_is_strict_executed_and_offline():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    # cached locally; CI starts from an empty _build (test_ci_builds_from_an_empty_cache)
    assert cfg["execute"]["execute_notebooks"] == "cache"
    assert cfg["execute"]["raise_on_error"] is True
    # output on stderr (a Python warning) is a Sphinx warning, which fails the -W build
    assert cfg["execute"]["stderr_output"] in ("warn", "error", "severe")
    assert cfg["sphinx"]["config"].get("nb_output_stderr", "warn") in ("warn", "error", "severe")
    assert cfg["only_build_toc_files"] is True
    assert "sphinx-mathjax-offline" in cfg["sphinx"]["extra_extensions"]
    assert "sphinx_proof" in cfg["sphinx"]["extra_extensions"]
    for pattern in (".venv", "_build", "tests", "moesim", "runs", "README.md", "notes"):
        assert pattern in cfg["exclude_patterns"], pattern
    for bib in cfg["bibtex_bibfiles"]:
        assert (ROOT / bib).is_file()
    assert {"sphinx.ext.autodoc", "sphinx.ext.napoleon"} <= set(cfg["sphinx"]["extra_extensions"])
    assert cfg["html"]["use_download_button"] is True and cfg["launch_buttons"]["binderhub_url"]


def test_ci_builds_from_an_empty_cache():
    """The execution cache is keyed on the cells' source only: CI must not reuse one."""
    script = (ROOT / ".ci" / "book").read_text()
    build = script.index("jupyter-book build . --all -W -n --keep-going")
    assert 0 <= script.rfind("rm -rf _build", 0, build), ".ci/book must remove _build before building"


def test_parse_parameter_types():
    defaults = {"n": 8, "lr": 0.1, "flag": False, "name": "s1", "items": ["s1", "s2"]}
    assert bookrun.parse_parameter("n=16", defaults) == ("n", 16)
    assert bookrun.parse_parameter("lr=1", defaults) == ("lr", 1.0)
    assert bookrun.parse_parameter("flag=true", defaults) == ("flag", True)
    assert bookrun.parse_parameter("name=s2", defaults) == ("name", "s2")
    assert bookrun.parse_parameter("items=['s3']", defaults) == ("items", ["s3"])
    for bad in ("n=1.5", "n=abc", "flag=maybe", "items=s3", "lr=x", "n"):
        with pytest.raises(UsageError):
            bookrun.parse_parameter(bad, defaults)
    with pytest.raises(UsageError, match="allowed: n, lr, flag, name, items"):
        bookrun.parse_parameter("nn=3", defaults)


@pytest.mark.parametrize("argv, message", [
    (["book/dynamics.md", "-p", "n_expert=16"], "allowed: settings, n_experts"),
    (["book/dynamics.md", "-p", "n_experts=sixteen"], "must be an integer"),
    (["book/dynamics.md", "-p", "n_experts"], "NAME=VALUE"),
    (["book/nowhere.md"], "not a chapter of the book"),
    (["book/intro.md"], "tagged 'parameters'"),
])
def test_book_run_rejects_bad_input(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert cli(["book", "run", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_book_run_command_line_exit_code():
    """The installed entry point: exit 2, one error line naming the allowed parameters."""
    exe = Path(sys.executable).parent / "moesim"
    if not exe.exists():
        pytest.skip(f"no moesim entry point next to {sys.executable}")
    done = subprocess.run([str(exe), "book", "run", "book/dynamics.md", "-p", "experts=16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "has no parameter 'experts'" in done.stderr and "n_experts" in done.stderr
    assert "Traceback" not in done.stderr
