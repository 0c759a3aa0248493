"""Sphinx extension of the moesim book: fixes for Jupyter Book 1.x, each a visible failure.

1. Each page loads each script once. With Sphinx 7.4 and sphinx-thebe 0.3, the inline scripts
   that extensions add while the sources are read reach every page twice; sphinx-thebe's declares
   a ``const``, so the second copy throws ``Identifier 'THEBE_JS_URL' has already been declared``
   in the browser (``.ci/check_book.py`` fails the page on it).
2. Napoleon leaves the ``#:`` comments of module constants as written. It reads the first line of
   a data or attribute docstring as ``type: description``, so ``#: Models by name: architecture
   and activation.`` became the type "Models by name" (an unresolved reference under ``-n``).
3. Output on stderr (a Python warning) is a Sphinx warning in every code cell. MyST-NB's
   ``nb_output_stderr = "warn"`` only sees the cells it renders, so a cell tagged ``remove-cell``
   (or ``remove-output``) could warn unseen; this reads those cells of the executed notebooks.
"""

from __future__ import annotations

import json
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

_ATTRIBUTE_KINDS = ("data", "attribute")
_HIDDEN = ("remove-cell", "remove-output")


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop the repeats from the page's ``script_files`` (same file or inline body, same attributes)."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        attributes = getattr(js, "attributes", {})
        key = (getattr(js, "filename", js) or "", tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def _keep(app, what, name, obj, options, lines) -> None:
    if what in _ATTRIBUTE_KINDS:
        app.env.temp_data.setdefault("moesim_attribute_docs", {})[name] = list(lines)


def _restore(app, what, name, obj, options, lines) -> None:
    if what in _ATTRIBUTE_KINDS:
        kept = app.env.temp_data.get("moesim_attribute_docs", {}).pop(name, None)
        if kept is not None:
            lines[:] = kept


def stderr_in_removed_cells(app, env) -> list[str]:
    """Warn (so ``-W`` fails) for each stderr output of a removed cell of an executed chapter."""
    folder = Path(app.outdir).parent / "jupyter_execute"
    for docname in sorted(env.found_docs):
        path = folder / f"{docname}.ipynb"
        if not path.is_file():
            continue
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(cells, start=1):
            if not set(cell.get("metadata", {}).get("tags", [])) & set(_HIDDEN):
                continue  # rendered: MyST-NB warns itself
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    text = "".join(out.get("text", ""))
                    logger.warning(f"stderr in removed code cell {i}: {text.strip()[:300]}",
                                   location=docname, type="mystnb", subtype="stderr")
    return []


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    # napoleon handles autodoc-process-docstring at the default priority 500: keep before, restore after
    app.connect("autodoc-process-docstring", _keep, priority=400)
    app.connect("autodoc-process-docstring", _restore, priority=600)
    app.connect("env-updated", stderr_in_removed_cells)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
