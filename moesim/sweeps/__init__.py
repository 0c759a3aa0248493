"""Parameter sweeps: a grid over config fields x seeds, trained on Dask, committed to a run store.

A sweep is a base config (a preset, a model, fixed overrides), a grid (the product of value
lists of any config fields) and a list of seeds. Every grid point is validated before any work.
Each Dask task trains a batch of seeds of one point as one vectorized program
(``moesim.train(cfg, seeds)``; per-seed results equal separate runs) and returns one
``RunRecord`` per seed; the client commits each run to the ``RunStore`` as it arrives (one
writer, one transaction per run). Runs already stored are not recomputed, so an interrupted
sweep (Ctrl-C, ``kill -9`` of the client or of a worker) is completed by running it again.

Spec file (YAML)::

    name: experts-needed
    preset: paper-s1-quick
    model: moe-nonlinear
    set: {n_train: 2000, n_test: 2000}        # fixed overrides of every point
    grid:                                      # the product of these lists
      n_clusters: [2, 3, 4, 6, 8]
      n_experts: [2, 4, 6, 8, 12, 16, 24, 32]
    seeds: 10                                  # a count, a list, or "0-9"

One module per job: ``spec`` (``SweepSpec``, grid parsing), ``runner`` (Dask execution:
``run_sweep``, ``train_batch``, ``plan``, stale runs), ``export`` (``export_csv``,
``trajectory_metrics``). This package's names are loaded from them on first use, so importing
``moesim.sweeps.export`` (as ``moesim.phase`` does) does not import the runner.

Command line (``moesim.commands.sweep``): ``moesim sweep [SWEEP.yaml] [--grid name=v1,v2,...]
[--set name=value] [--store FILE]`` (``--scheduler tcp://host:8786`` for an existing Dask cluster;
default: a ``LocalCluster`` sized to the machine). dask, pyyaml and pandas are imported only when a
sweep runs.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule defining it.
_EXPORTS = {
    **dict.fromkeys(("SweepSpec", "coerce_value", "parse_grid_item", "axis_fields", "DEFAULT_PRESET",
                     "DEFAULT_SEEDS"), "spec"),
    **dict.fromkeys(("run_sweep", "train_batch", "plan", "stale_runs", "check_devices", "default_workers",
                     "local_cluster", "Job", "SweepReport", "DEFAULT_STORE"), "runner"),
    **dict.fromkeys(("export_csv", "trajectory_metrics", "EXPORT_METRICS", "TRAJECTORY_METRICS"), "export"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
