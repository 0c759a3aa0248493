"""One chapter of the book as a single HTML page, rendered from its executed notebook (``moesim book run --html``).

The page is built by jupyter-book with the book's own configuration (numbering, theorems, citations,
glued values) and nothing is executed again; only the page and the files it uses are kept, and its
links to the other chapters point to the published book (``PUBLISHED``).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .bookrun import toc_files

#: The published book: ``--html`` pages link to its other chapters.
PUBLISHED = "https://moesim.github.io/moesim/"

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
