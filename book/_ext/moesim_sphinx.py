"""Sphinx extension of the moesim book: two fixes for Jupyter Book 1.x, each a visible failure.

1. Each page loads each script once. With Sphinx 7.4 and sphinx-thebe 0.3, the inline scripts
   that extensions add while the sources are read reach every page twice; sphinx-thebe's declares
   a ``const``, so the second copy throws ``Identifier 'THEBE_JS_URL' has already been declared``
   in the browser (``.ci/check_book.py`` fails the page on it).
2. Napoleon leaves the ``#:`` comments of module constants as written. It reads the first line of
   a data or attribute docstring as ``type: description``, so ``#: Models by name: architecture
   and activation.`` became the type "Models by name" (an unresolved reference under ``-n``).
"""

from __future__ import annotations

_ATTRIBUTE_KINDS = ("data", "attribute")


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


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    # napoleon handles autodoc-process-docstring at the default priority 500: keep before, restore after
    app.connect("autodoc-process-docstring", _keep, priority=400)
    app.connect("autodoc-process-docstring", _restore, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
