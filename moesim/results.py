"""Writing and reading run results: ``config.json``, ``summary.json``, ``trajectory.npz``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from .config import Config
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


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return v


def save_run(result: RunResult, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write a run to ``out_dir`` (created): config, per-seed and aggregate summary, trajectories, params."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(result.config.to_dict(), indent=2) + "\n")
    summary = dict(seeds=result.seeds, wall_time_s=result.wall_time, per_seed={k: _jsonable(v) for k, v in
                   result.summary.items() if k != "test_dispatch_counts"}, stats=summary_stats(result))
    summary.update(result.info)
    if extra:
        summary.update(extra)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    arrays = {f"history/{k}": v for k, v in result.history.items()}
    arrays.update({f"snapshots/{k}": v for k, v in result.snapshots.items()})
    arrays.update({f"summary/{k}": np.asarray(v) for k, v in result.summary.items()})
    arrays["seeds"] = np.asarray(result.seeds)
    np.savez_compressed(out / "trajectory.npz", **arrays)
    if result.params is not None:
        torch.save({"W": result.params.W, "b": result.params.b, "theta": result.params.theta}, out / "params.pt")
    return out


def load_run(out_dir: str | os.PathLike) -> RunResult:
    """Read a run written by ``save_run``."""
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
    return RunResult(cfg, seeds, hist, snaps, summ, params=params, wall_time=info.get("wall_time_s", 0.0))
