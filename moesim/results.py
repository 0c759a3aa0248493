"""Writing and reading run results: ``config.json``, ``summary.json``, ``trajectory.npz``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .jsonable import jsonable
from .model import Params
from .training import RunResult

SUMMARY_KEYS = ("test_accuracy", "train_accuracy", "dispatch_entropy", "test_dispatch_entropy", "loss", "updates")


def summary_stats(result: RunResult) -> dict[str, dict[str, float]]:
    """Mean, population std (ddof = 0, as the paper), min and max over seeds of each summary value."""
    out = {}
    for key in SUMMARY_KEYS:
        if key in result.summary:
            v = np.asarray(result.summary[key], dtype=np.float64)
            out[key] = dict(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()))
    return out


def save_run(result: RunResult, out_dir: str | os.PathLike, extra: dict | None = None,
             overwrite: bool = False) -> Path:
    """Write a run to ``out_dir``: config, per-seed and aggregate summary, trajectories, params.

    Written atomically (``moesim.outputs.write_atomic``): into a temporary sibling folder renamed
    over ``out_dir`` at the end. An existing non-empty ``out_dir`` is refused (``OutputError``)
    unless ``overwrite``, and then replaced whole, so no file of an earlier run is left beside
    the new ones.
    """
    from .outputs import write_atomic

    summary = dict(seeds=result.seeds, wall_time_s=result.wall_time, per_seed={k: jsonable(v) for k, v in
                   result.summary.items() if k != "test_dispatch_counts"}, stats=summary_stats(result))
    summary.update(result.info)
    if extra:
        summary.update(extra)

    def write(out: Path) -> None:
        (out / "config.json").write_text(json.dumps(result.config.to_dict(), indent=2) + "\n")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        arrays = {f"history/{k}": v for k, v in result.history.items()}
        arrays.update({f"snapshots/{k}": v for k, v in result.snapshots.items()})
        arrays.update({f"summary/{k}": np.asarray(v) for k, v in result.summary.items()})
        arrays["seeds"] = np.asarray(result.seeds)
        np.savez_compressed(out / "trajectory.npz", **arrays)
        if result.params is not None:
            torch.save({"W": result.params.W, "b": result.params.b, "theta": result.params.theta},
                       out / "params.pt")

    return write_atomic(out_dir, write, overwrite=overwrite)


def load_run(out_dir: str | os.PathLike) -> RunResult:
    """Read a run written by ``save_run`` (also an incomplete one: ``result.info["incomplete"]``).

    Raises ``ValueError`` when the files disagree (parameters of another shape than the config's
    experts, filters and patch dimension, or another number of seeds).
    """
    out = Path(out_dir)
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} holds no moesim run (no config.json)")
    cfg = Config.from_dict(json.loads((out / "config.json").read_text()))
    info = json.loads((out / "summary.json").read_text())
    hist, snaps, summ = {}, {}, {}
    with np.load(out / "trajectory.npz") as f:
        for k in f.files:
            group, _, name = k.partition("/")
            {"history": hist, "snapshots": snaps, "summary": summ}.get(group, {})[name] = f[k]
        seeds = f["seeds"].tolist()
    params = None
    if (out / "params.pt").exists():
        p = torch.load(out / "params.pt", map_location="cpu")
        params = Params(p["W"], p["b"], p["theta"])
        expected = (len(seeds), cfg.experts, cfg.filters, cfg.patch_dim)
        if tuple(params.W.shape) != expected:
            raise ValueError(f"{out}: params.pt holds parameters of shape {tuple(params.W.shape)} but config.json "
                             f"describes (seeds, experts, filters, patch_dim) = {expected}; the folder mixes runs")
    kept = {k: v for k, v in info.items() if k not in ("seeds", "wall_time_s", "per_seed", "stats")}
    return RunResult(cfg, seeds, hist, snaps, summ, params=params, wall_time=info.get("wall_time_s", 0.0),
                     info=kept)
