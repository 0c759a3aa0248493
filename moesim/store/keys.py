"""The identity of a run: its canonical config, its key, and the code version that computed it.

A run's key is a content hash of its config, its seed and the code that computes it (``run_key``),
so the same run computed twice by the same code lands on the same row of the store. The code is
named by ``code_version()``: the moesim version plus ``code_fingerprint()``, a hash of the modules
that compute a run's numbers (``FINGERPRINT_FILES``, paths inside the ``moesim`` package).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import typing
from pathlib import Path

from ..config import Config, field_names, field_types


@functools.lru_cache(maxsize=1)
def config_field_types() -> dict[str, type]:
    """``moesim.config.field_types()``, computed once (it resolves type hints on every call)."""
    return field_types()


def canonical_config(cfg: Config | dict) -> dict[str, typing.Any]:
    """The config as a dict whose JSON is the same for equal configs.

    Floats are floats (``sigma_p: 1`` and ``1.0`` are one config), ranges are lists of floats.
    """
    d = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    types = config_field_types()
    out = {}
    for name in field_names():
        v = d[name]
        if types[name] is float:
            v = float(v)
        elif types[name] is tuple:
            v = [float(a) for a in v]
        out[name] = v
    return out


def config_hash(cfg: Config | dict) -> str:
    """sha256 of the canonical config JSON (groups the seeds of one grid point)."""
    blob = json.dumps(canonical_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


#: The files whose code computes a run's numbers (``code_fingerprint``), relative to the package: every
#: file of the step engines (``moesim/engines/``, a new engine included), the tables, training and its parts.
FINGERPRINT_FILES = ("config.py", "data.py", "model.py", "nonlinearities.py",
                     *sorted(f"engines/{p.name}" for p in (Path(__file__).parent.parent / "engines").iterdir()
                             if p.suffix in (".py", ".c")),
                     "training.py", "noise.py", "optim.py", "stopping.py", "recorder.py", "evaluation.py", "metrics.py")


def _code_text(path: Path) -> bytes:
    """A Python file as its syntax tree without docstrings (comments are never in it); other files as bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False).encode()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """16 hex digits of sha256 over ``FINGERPRINT_FILES`` (Python files without docstrings)."""
    root = Path(__file__).parent.parent  # the moesim package
    h = hashlib.sha256()
    for name in FINGERPRINT_FILES:
        h.update(name.encode() + b"\0" + _code_text(root / name) + b"\0")
    return h.hexdigest()[:16]


def code_version() -> str:
    """``<moesim version>+code.<code_fingerprint()>``: the code a run was computed by."""
    from .. import __version__

    return f"{__version__}+code.{code_fingerprint()}"


def run_key(cfg: Config | dict, seed: int, version: str | None = None) -> str:
    """The store key of one run: sha256 of config JSON + seed + code version (default ``code_version()``)."""
    if version is None:
        version = code_version()
    blob = json.dumps({"config": canonical_config(cfg), "seed": int(seed), "moesim": version},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
