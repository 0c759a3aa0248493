"""``moesim config``: every field of ``Config`` with its type, value and the comment beside it.

The comments are read from the source of ``moesim/config.py`` (the ``name: type = default  # comment``
lines of the ``Config`` dataclass, Definition 3.1, Section 3 and Algorithm 1 of the paper), so the
listing cannot drift from the code.

    moesim config                          # defaults
    moesim config --preset paper-s1        # the values of a preset (changed ones marked '*')
    moesim config --preset official-s1 --model single-linear --set n_train=400
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

_FIELD_LINE = re.compile(r"^    (\w+): ([^=]+?) = (.+?)(?:  # (.*))?$")
_CONTINUATION = re.compile(r"^    #\s+(.*)$")
_GROUP = re.compile(r"^    # --- (.+?) -+$")


@dataclass(frozen=True)
class FieldDoc:
    """One field of ``Config``: its name, type, default, group and comment."""

    name: str
    type: str
    default: object
    group: str
    comment: str


def field_docs() -> list[FieldDoc]:
    """The fields of ``Config`` in source order, each with the comment written beside it."""
    from .config import Config

    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    docs: list[dict] = []
    group = ""
    for line in inspect.getsource(Config).splitlines():
        if m := _GROUP.match(line):
            group = m.group(1)
        elif (m := _FIELD_LINE.match(line)) and m.group(1) in defaults:
            docs.append(dict(name=m.group(1), type=m.group(2).strip(), default=defaults[m.group(1)], group=group,
                             comment=(m.group(4) or "").strip()))
        elif (m := _CONTINUATION.match(line)) and docs and not _GROUP.match(line):
            docs[-1]["comment"] += " " + m.group(1).strip()
    missing = sorted(set(defaults) - {d["name"] for d in docs})
    if missing:  # a field written over several lines: keep the listing complete, say so
        raise RuntimeError(f"config fields without a 'name: type = default  # comment' line: {missing}")
    return [FieldDoc(**d) for d in docs]


def _fmt(value: object) -> str:
    return ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def render(cfg=None) -> str:
    """Plain-text listing: group headings, then name, type, value (``*`` = differs from default), comment."""
    docs = field_docs()
    width = max(len(d.name) for d in docs)
    tw = max(len(d.type) for d in docs)
    values = {d.name: (getattr(cfg, d.name) if cfg is not None else d.default) for d in docs}
    vw = min(max(len(_fmt(v)) for v in values.values()) + 1, 22)
    lines, group = [], None
    for d in docs:
        if d.group != group:
            group = d.group
            lines += ["", f"# {group}"]
        mark = "*" if values[d.name] != d.default else " "
        lines.append(f"{d.name:<{width}}  {d.type:<{tw}}  {_fmt(values[d.name]) + mark:<{vw}}  {d.comment}")
    return "\n".join(lines).lstrip("\n")
