"""``moesim book run``: where it writes, its progress lines, the missing-extra message, and the
single-page HTML (glue filled in, other chapters linked to the published book, a few MB)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from moesim import bookhtml, bookrun
from moesim.cli import cli

ROOT = Path(__file__).resolve().parents[1]

TINY_CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Tiny

```{code-cell} ipython3
:tags: [parameters]

k = 2  # a parameter
```

```{code-cell} ipython3
from myst_nb import glue

value = k * 21
glue("value", value, display=False)
```

The value is {glue:text}`value:.1f`, and {glue:text}`missing` stays as written.
"""


def test_default_output_is_a_new_runs_folder_of_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = bookrun.default_out_dir(ROOT / "book" / "dynamics.md")
    assert out.parent == tmp_path / "runs" and re.fullmatch(r"book-dynamics-\d{8}-\d{6}", out.name)


def test_missing_book_extra_is_one_line_naming_the_install_command(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "papermill" else real(name, *a))
    assert cli(["book", "run", "book/routing.md"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "papermill" in err and 'pip install "moesim[book]"' in err


def test_links_to_other_chapters_point_to_the_published_book():
    html = ('<a href="data.html#ch-data">2</a> <a href="../index.html">home</a> <a href="routing.html#x">self</a> '
            '<a href="#y">here</a> <a href="https://example.org/a.html">out</a> <a href="../_static/x.css">css</a>')
    text = bookhtml.published_links(html, Path("book/routing"))
    assert f'href="{bookhtml.PUBLISHED}book/data.html#ch-data"' in text
    assert f'href="{bookhtml.PUBLISHED}index.html"' in text
    assert 'href="#x"' in text and 'href="#y"' in text  # the page itself stays local
    assert 'href="https://example.org/a.html"' in text and 'href="../_static/x.css"' in text


def test_execute_prints_a_line_per_code_cell_and_glue_is_resolved_in_the_notebook(tmp_path, capsys):
    """One stderr line per code cell (the injected parameters cell included); afterwards the
    notebook's prose holds the glued value, formatted as MyST-NB formats it (what Jupyter shows)."""
    pytest.importorskip("papermill")
    pytest.importorskip("jupytext")
    pytest.importorskip("myst_nb")
    chapter = tmp_path / "tiny.md"
    chapter.write_text(TINY_CHAPTER)
    nb = bookrun.execute(chapter, {"k": 5}, tmp_path / "out")
    err = capsys.readouterr().err
    assert re.findall(r"\[book tiny\] cell (\d)/(\d)", err) == [("1", "3"), ("2", "3"), ("3", "3")]  # + injected
    assert "k = 5" in nb.read_text()
    assert bookrun.resolve_glue(nb) == 1
    text = nb.read_text()
    prose = "".join(json.loads(text)["cells"][-1]["source"])
    assert "The value is 105.0, and {glue:text}`missing` stays as written." in prose


def test_html_is_the_one_executed_page_with_glue_filled_in(tmp_path, monkeypatch):
    """The appendix (no parameters, cheap) executed, then rendered: one page plus its assets, the
    glued numbers in the text, no placeholder, links to the other chapters at the published book."""
    # the kernel imports this checkout's moesim
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytest.importorskip("jupyter_book")
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    chapter = ROOT / "book" / "official_code.md"
    nb = jupytext.read(chapter)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "book")}}
                            ).execute()
    executed = tmp_path / "official_code.ipynb"
    jupytext.write(nb, executed)
    page = bookhtml.render_html(executed, ROOT, tmp_path, chapter)
    assert page == tmp_path / "official_code.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_static", "official_code.html", "official_code.ipynb"]
    text = page.read_text()
    assert "{glue" not in text and "glue:text" not in text
    from moesim.stopping import EARLY_STOP_TOLERANCE

    assert f"by more than {EARLY_STOP_TOLERANCE:g} above" in re.sub(r"<[^>]+>", "", text)
    assert f'href="{bookhtml.PUBLISHED}book/data.html' in text and 'href="data.html' not in text
    assert (tmp_path / "_static" / "mathjax" / "tex-chtml.js").is_file()
    size = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    assert size < 10 * 2**20, f"{size / 2**20:.1f} MB: more than one page's files were kept"
