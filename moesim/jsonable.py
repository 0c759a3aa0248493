"""Values as ``json.dumps`` can write them: the one converter of every JSON file moesim writes.

``jsonable(value, nonfinite=...)`` turns dataclasses (``dataclasses.asdict``), dicts (keys made
``str``), lists and tuples (lists), numpy arrays and torch tensors (nested lists), and numpy scalars
(Python scalars) into plain JSON values, recursively; anything else is returned as it is.

Floats that are not finite follow ``nonfinite``, because the files that use them always have:

* ``"keep"``: stay floats, written as ``NaN``/``Infinity`` (``results.save_run``'s ``summary.json``);
* ``"text"``: become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (claim results: ``verify``'s
  ``results.json``, the scaling tier's sidecars and ``scaling_verdicts.json``);
* ``"null"``: NaN becomes ``None`` (``null``), +-inf stay floats (the run store's metrics JSON);
  values inside a numpy array or a numpy scalar are kept as they are, exactly as the store has
  always written them (metrics are built from ``.tolist()``, so they hold Python floats).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

NONFINITE = ("keep", "text", "null")


def jsonable(value, nonfinite: str = "keep"):
    """``value`` made of JSON types only (see the module docstring for ``nonfinite``)."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite={nonfinite!r} is not allowed; choose one of: {', '.join(NONFINITE)}")
    return _convert(value, nonfinite)


def _convert(v, nonfinite: str):
    if isinstance(v, dict):
        return {str(k): _convert(x, nonfinite) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_convert(x, nonfinite) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _convert(dataclasses.asdict(v), nonfinite)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return _convert(v.tolist(), nonfinite) if nonfinite == "text" else v.tolist()
    if isinstance(v, (np.floating, float)):
        if nonfinite == "text":
            f = float(v)
            return f if math.isfinite(f) else str(f)
        if isinstance(v, np.floating):
            return v.item()
        return None if (nonfinite == "null" and math.isnan(v)) else v
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v
