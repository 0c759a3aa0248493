"""The step engines and their registry: ``resolve(cfg, name, x)`` picks the engine ``train`` runs.

Each engine is a module of this package with an ``ENGINE`` object implementing
``moesim.engines.base.Engine`` (see there for the interface). ``MODULES`` maps the ``engine=``
names to those modules, in the order ``moesim.config.ENGINES`` lists them after ``"auto"``; they
are imported on first use, so this package imports no torch (``moesim.config`` reads ``NAMES``).
A new engine is one module plus one line in ``MODULES`` (and in ``AUTO`` if ``"auto"`` may pick it).
"""

from __future__ import annotations

import importlib

#: engine name -> module of this package that defines its ``ENGINE``.
MODULES = {
    "fused": "fused",  # the C kernel, CPU float32
    "eager": "eager",  # hand-written gradients in torch operations, any device
    "autograd": "autograd",  # the reference: autograd through the model's forward pass
    "official-ops": "official_ops",  # the official code's operations in its order (bit-level replay)
}
NAMES = tuple(MODULES)
#: What ``engine="auto"`` picks: the first of these that is available.
AUTO = ("fused", "eager")


def check_name(name) -> str:
    """``name`` if it is ``"auto"`` or registered in ``MODULES``, else a ``ValueError`` naming the choices."""
    if not isinstance(name, str) or (name != "auto" and name not in MODULES):
        raise ValueError(f"engine={name!r} is not allowed; choose one of {', '.join(('auto', *MODULES))}")
    return name


def get(name: str):
    """The ``Engine`` registered as ``name`` (``"auto"``: the fused engine, whose forward passes fall
    back to the torch reference where it cannot run, as ``evaluate(engine="auto")`` does)."""
    if check_name(name) == "auto":
        name = AUTO[0]
    return importlib.import_module(f"{__name__}.{MODULES[name]}").ENGINE


def resolve(cfg, name: str, x):
    """The engine that trains ``cfg`` on samples ``x``: ``"auto"`` resolved, the others checked.

    With ``cfg.load_balancing > 0`` the autograd engine trains (an engine that cannot refuses).
    ``"auto"`` takes the first engine of ``AUTO`` available here; an unavailable named engine raises
    ``ValueError`` with its ``refusal`` message.
    """
    engine = get(name)
    if cfg.load_balancing > 0 and engine.load_balancing != "native":
        if name != "auto" and engine.load_balancing == "refuse":
            raise ValueError(f"engine={name!r} cannot train load_balancing={cfg.load_balancing} > 0; "
                             "use engine='autograd' or 'auto'")
        return get("autograd")
    if name == "auto":
        return next(e for e in map(get, AUTO) if e.unavailable(cfg, x) is None)
    reason = engine.unavailable(cfg, x)
    if reason is not None:
        raise ValueError(engine.refusal(reason))
    return engine
