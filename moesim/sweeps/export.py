"""What a sweep's stored runs say: per-run trajectory metrics and the CSV export of a sweep.

``trajectory_metrics`` (what a stored trajectory says beyond the final state) is what analysis
(``moesim.phase``) reads; ``export_csv`` writes a sweep's runs as a small CSV with its spec. Nothing
here imports the runner or dask; pandas is imported only by ``export_csv``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..config import ConfigError, field_names, preset
from ..metrics import majority_experts
from ..store import RunStore, config_field_types
from .spec import axis_fields, coerce_value


#: Per-run metrics written by ``export_csv`` (scalars; the assignment as text).
EXPORT_METRICS = ("test_accuracy", "train_accuracy", "dispatch_entropy", "test_dispatch_entropy", "final_loss",
                  "updates", "stopped_early", "distinct_majority", "experts_used", "majority_experts")


#: Per-run values read from the stored trajectory by ``export_csv`` (``trajectory_metrics``).
TRAJECTORY_METRICS = ("min_loss", "peak_test_accuracy", "peak_step", "early_stop_step",
                      "early_stop_test_accuracy", "early_stop_distinct")


def trajectory_metrics(traj: dict[str, np.ndarray]) -> dict[str, float]:
    """What a stored trajectory says beyond the final state.

    ``min_loss``: the lowest training loss of any step. ``peak_test_accuracy``/``peak_step``: the
    best test accuracy of the snapshots. ``early_stop_*``: the run stopped early on its training
    loss, i.e. at the snapshot (before the last step) with the lowest training loss: its test
    accuracy there, and whether the K clusters' majority experts in that step's training dispatch
    are distinct. NaN where the trajectory lacks the values (a failed run).
    """
    loss = np.asarray(traj.get("history/loss", []), dtype=float)
    acc = np.asarray(traj.get("snapshots/test_accuracy", []), dtype=float)
    steps = np.asarray(traj.get("snapshots/step", []), dtype=int)
    counts = np.asarray(traj.get("history/dispatch_counts", []))
    out = dict.fromkeys(TRAJECTORY_METRICS, math.nan)
    if np.isfinite(loss).any():
        out["min_loss"] = float(np.nanmin(loss))
    if np.isfinite(acc).any():
        i = int(np.nanargmax(acc))
        out.update(peak_test_accuracy=float(acc[i]), peak_step=float(steps[i]))
    inside = [j for j, st in enumerate(steps) if st < len(loss) and np.isfinite(loss[st]) and np.isfinite(acc[j])]
    if inside and counts.ndim == 3:
        j = min(inside, key=lambda j: loss[steps[j]])
        majority = majority_experts(counts[steps[j]])
        out.update(early_stop_step=float(steps[j]), early_stop_test_accuracy=float(acc[j]),
                   early_stop_distinct=float(len(set(majority.tolist())) == counts.shape[1]))
    return out


def export_csv(store_path: str | os.PathLike, sweep: str, csv_path: str | os.PathLike) -> Path:
    """Write a sweep's runs as a small CSV (+ ``.json`` with its spec and invocation log).

    Columns: seed, status, error (first line), every config field that is a grid axis or varies,
    ``EXPORT_METRICS``, and from each run's trajectory ``TRAJECTORY_METRICS``. Range fields are
    written ``low,high``. ``phase.load_results`` reads it back.
    """
    import pandas as pd

    with RunStore(store_path, create=False, readonly=True) as store:
        df = store.dataframe(sweep)
        log = store.sweep_log(sweep)
        traj = pd.DataFrame([trajectory_metrics(store.trajectory(k)) for k in df["key"]], index=df.index,
                            columns=list(TRAJECTORY_METRICS))
    if df.empty:
        raise ConfigError(f"sweep {sweep!r} has no runs in {store_path}")
    axes = [f for axis in (log[-1]["spec"]["grid"] if log else []) for f in axis_fields(axis)]
    varying = [f for f in field_names() if f in axes or df[f].astype(str).nunique() > 1]
    out = df[["seed", "status"] + varying].copy()
    out["error"] = df["error"].map(lambda e: "" if not isinstance(e, str) else e.strip().splitlines()[0])
    for m in EXPORT_METRICS:
        if m in df:
            out[m] = df[m]
    for m in TRAJECTORY_METRICS:
        out[m] = traj[m]
    if "majority_experts" in out:
        out["majority_experts"] = out["majority_experts"].map(
            lambda v: " ".join(str(int(a)) for a in v) if isinstance(v, list) else "")
    for f in varying:
        if config_field_types()[f] is tuple:
            out[f] = out[f].map(lambda v: f"{v[0]:g},{v[1]:g}")
    out = out.sort_values(varying + ["seed"], kind="stable")
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(csv_path, index=False, float_format="%.6g")
    from .. import __version__

    spec = log[-1]["spec"] if log else {}
    base = None
    if spec:
        base = preset(spec["preset"], spec.get("model"), **{k: coerce_value(k, v) for k, v in spec["set"].items()})
    share = df["batch_size"].clip(lower=1)  # a batch's time, shared among its runs
    sidecar = dict(sweep=sweep, moesim_version=__version__, spec=spec, base_config=base.to_dict() if base else None,
                   n_runs=int(len(df)), n_failed=int((df["status"] == "failed").sum()),
                   cpu_time_s=float((df["batch_cpu_time_s"].fillna(0) / share).sum()),
                   task_wall_time_s=float((df["batch_wall_time_s"].fillna(0) / share).sum()),
                   invocations=[{k: v for k, v in r.items() if k != "spec"} for r in log])
    csv_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return csv_path
