"""The run store as a pandas DataFrame, and back to ``Config`` objects (``load_runs``, ``configs``)."""

from __future__ import annotations

import os

import numpy as np

from ..config import Config, field_names
from .schema import RUN_COLUMNS


def dataframe(records: list[dict]):
    """Stored runs (``RunStore.records``) as a pandas DataFrame, one row per run.

    Columns: every config field (named as in ``Config``), every metric (``test_accuracy``,
    ``dispatch_entropy``, ...; one named like a config field gets the prefix ``metric_``), and
    ``key``, ``config_hash``, ``seed``, ``status``, ``error``,
    ``moesim_version``, ``batch_size``, ``batch_wall_time_s``, ``batch_cpu_time_s``, ``started_at``,
    ``finished_at``, ``committed_at``, ``worker``. Range fields are tuples. ``configs(df)``
    turns the rows back into ``Config`` objects.
    """
    import pandas as pd

    first = ["key", "seed", "status", "error"]
    last = [c for c in RUN_COLUMNS if c not in first + ["config", "metrics"]]
    rows, metric_names = [], {}
    for r in records:
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in r["config"].items()}
        metrics = {(f"metric_{k}" if k in cfg or k in RUN_COLUMNS else k): v for k, v in r["metrics"].items()}
        metric_names.update(dict.fromkeys(metrics))
        rows.append({**{k: r[k] for k in first + last}, **cfg, **metrics})
    columns = first + field_names() + list(metric_names) + last
    return pd.DataFrame(rows, columns=columns)


def configs(df) -> list[Config]:
    """The ``Config`` of each row of a ``RunStore.dataframe`` (the inverse of storing it)."""
    names = field_names()
    out = []
    for row in df[names].itertuples(index=False):
        d = {}
        for name, v in zip(names, row):
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, (tuple, list, np.ndarray)):
                v = tuple(float(a) for a in v)
            d[name] = v
        out.append(Config(**d).validate())  # as Config.from_dict, without its per-key type lookups
    return out


def load_runs(path: str | os.PathLike, sweep: str | None = None):
    """One call: the runs of the store at ``path`` (optionally of one sweep) as a DataFrame."""
    from .database import RunStore

    with RunStore(path, create=False, readonly=True) as store:
        return store.dataframe(sweep)
