"""Running a scaling sweep on Dask into the run store, reading its runs back, and exporting them.

``run_spec`` trains the missing runs of a sweep (``moesim.sweeps.run_sweep``) and returns every
run of it from the store; ``success_of`` and ``_base_columns`` turn stored runs into the per-run
columns every claim's table shares; ``export_table`` writes a claim's table (CSV + JSON sidecar).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from ...jsonable import jsonable
from .grids import Options
from .rules import success


# --- running a sweep and reading its runs back ---------------------------------------------------

_CLIENT: dict = {}


def _client(opts: Options):
    """The Dask client of this process (a LocalCluster started once, closed at exit)."""
    if opts.client is not None:
        return opts.client
    if "client" not in _CLIENT:
        import atexit

        from dask.distributed import Client

        from ...sweeps import default_workers, local_cluster

        cluster = local_cluster(opts.workers or default_workers())
        client = Client(cluster)
        _CLIENT.update(client=client, cluster=cluster)

        def close():
            client.close()
            cluster.close()
            _CLIENT.clear()

        atexit.register(close)
        _CLIENT["close"] = close
    return _CLIENT["client"]


def close_client() -> None:
    """Shut down the LocalCluster started by this module (if any)."""
    if "close" in _CLIENT:
        _CLIENT["close"]()


def train_batch_router(config: dict, seeds: list[int], threads: int | None = None):
    """``moesim.sweeps.train_batch`` plus ``router_output_max``: max_{i, m} |h_m(x_i)| over the
    training set at the last step (Section 5's router output), one ``RunRecord`` per seed."""
    import torch

    import moesim
    from ...data import generate
    from ...store import RunRecord, code_version, pack_arrays
    from ...sweeps.runner import _Clock, _metrics, _per_seed

    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    seeds = [int(s) for s in seeds]
    clock = _Clock()
    try:
        cfg = moesim.Config.from_dict(config)
        data = generate(cfg)
        res = moesim.train(cfg, seeds, data=data, keep_params=True)
        x_sum = data[0].x.sum(1).to(torch.float64)  # (n, d): the router's input
        h = torch.einsum("nd,sdm->snm", x_sum, res.params.theta.to(torch.float64))
        hmax = h.abs().amax((1, 2)).numpy()
    except Exception as err:  # noqa: BLE001 -- a failing run is data: stored with its error
        t = clock.timing()
        return [RunRecord(config=config, seed=s, status="failed", error=f"{type(err).__name__}: {err}",
                          batch_size=len(seeds), worker=worker, moesim_version=code_version(), **t) for s in seeds]
    t = clock.timing()
    out = []
    for i, s in enumerate(seeds):
        m = _metrics(res.summary, i)
        m["router_output_max"] = float(hmax[i])
        traj = {**_per_seed(res.history, i, "history"), **_per_seed(res.snapshots, i, "snapshots", ("step",))}
        out.append(RunRecord(config=config, seed=s, status="done", metrics=m, trajectory=pack_arrays(traj),
                             batch_size=len(seeds), worker=worker, moesim_version=code_version(), **t))
    return out


def run_spec(spec, opts: Options, task=None) -> list[dict]:
    """Train the missing runs of ``spec`` into the store; return its runs (record dicts with
    ``config``, ``seed``, ``status``, ``metrics``, ``trajectory``), in grid x seed order."""
    from ...store import RunStore, run_key
    from ...sweeps import run_sweep, train_batch

    from ...sweeps import plan

    log = opts.log or (lambda text: None)
    t0 = time.perf_counter()
    with RunStore(opts.store) as store:  # start Dask only when something is left to train
        jobs = plan(spec, store, opts.sizes.batch_size)[0]
    report = run_sweep(spec, opts.store, client=_client(opts) if jobs else None, threads=1, progress=opts.progress,
                       batch_size=opts.sizes.batch_size, task=task or train_batch,
                       retry_stale=True)  # runs of older code are recomputed, never mixed in
    opts.sweep_seconds[spec.name] = time.perf_counter() - t0
    log(report.line())
    keys = [run_key(cfg, s) for cfg in spec.points() for s in spec.seeds]
    with RunStore(opts.store, create=False) as store:
        by_key = {r["key"]: r for r in store.records(spec.name)}
        missing = [k for k in keys if k not in by_key]
        if missing:
            raise RuntimeError(f"sweep {spec.name}: {len(missing)} runs are missing from {opts.store} after the sweep")
        rows = [by_key[k] for k in keys]
        for r in rows:
            r["trajectory"] = store.trajectory(r["key"])
    return rows


def _config_value(rows, name: str) -> np.ndarray:
    return np.array([r["config"][name] for r in rows])


def _metric(rows, name: str, default=np.nan) -> np.ndarray:
    return np.array([r["metrics"].get(name, default) if r["status"] == "done" else default for r in rows],
                    dtype=np.float64)


def success_of(rows) -> np.ndarray:
    """``success`` of stored runs (final snapshot and test dispatch); failed runs are no success."""
    out = np.zeros(len(rows), dtype=bool)
    done = [i for i, r in enumerate(rows) if r["status"] == "done"]
    if not done:
        return out
    by_shape: dict[tuple, list[int]] = {}
    for i in done:
        by_shape.setdefault(np.asarray(rows[i]["metrics"]["test_dispatch_counts"]).shape, []).append(i)
    for idx in by_shape.values():
        counts = np.stack([np.asarray(rows[i]["metrics"]["test_dispatch_counts"]) for i in idx])
        acc = np.stack([np.asarray(rows[i]["trajectory"]["snapshots/expert_cluster_accuracy"])[-1] for i in idx])
        out[idx] = success([rows[i]["metrics"]["train_accuracy"] for i in idx],
                           [rows[i]["metrics"]["test_accuracy"] for i in idx], counts, acc)
    return out


def _base_columns(rows) -> dict:
    return dict(seed=[r["seed"] for r in rows], status=[r["status"] for r in rows],
                test_accuracy=_metric(rows, "test_accuracy"), train_accuracy=_metric(rows, "train_accuracy"),
                dispatch_entropy=_metric(rows, "dispatch_entropy"),
                test_dispatch_entropy=_metric(rows, "test_dispatch_entropy"),
                success=success_of(rows), cpu_time_s=[(r["batch_cpu_time_s"] or 0.0) / max(1, r["batch_size"])
                                                       for r in rows])


def export_table(opts: Options, claim: str, df, specs, extra: dict | None = None) -> None:
    """Write a claim's per-run table to ``opts.export/<claim>.csv`` with a JSON sidecar: specs, grid,
    and the training time of its sweeps as the run store logged it (``store_timing``: the same
    whether this process trained the runs or found them stored)."""
    if opts.export is None:
        return
    from ... import __version__

    folder = Path(opts.export)
    folder.mkdir(parents=True, exist_ok=True)
    stem = claim.replace("-", "_")
    df.to_csv(folder / f"{stem}.csv", index=False, float_format="%.6g")
    meta = dict(claim=claim, grid=opts.grid, moesim_version=__version__, n_runs=int(len(df)),
                n_failed=int((df["status"] != "done").sum()) if "status" in df else 0,
                cpu_time_s=float(df["cpu_time_s"].sum()) if "cpu_time_s" in df else None,
                training={s.name: store_timing(opts.store, [s.name]) for s in specs},
                specs=[s.to_dict() for s in specs], **(extra or {}))
    (folder / f"{stem}.json").write_text(json.dumps(jsonable(meta, nonfinite="text"), indent=2) + "\n")


def store_timing(store: str | os.PathLike, sweeps: list[str]) -> dict:
    """How long the training of ``sweeps`` took, as the run store logged it.

    ``training_wall_time_s``: the summed wall time of every invocation that computed runs (a tier
    checked again from a full store adds nothing); ``training_first_start``/``_last_finish``: the
    span from the first such invocation's start to the last one's end (Unix time);
    ``training_cpu_time_s``: the CPU time of the runs' tasks, summed.
    """
    from ...store import RunStore

    if not Path(store).exists():
        return {}
    with RunStore(store, create=False, readonly=True) as st:
        log = [r for s in sweeps for r in st.sweep_log(s) if r["n_computed"] and r["finished_at"]]
        runs = {r["key"]: r for s in sweeps for r in st.records(s)}  # a run shared by two sweeps counts once
        cpu = sum((r["batch_cpu_time_s"] or 0.0) / max(1, r["batch_size"]) for r in runs.values())
    if not log:
        return dict(training_cpu_time_s=cpu)
    return dict(training_wall_time_s=sum(r["finished_at"] - r["started_at"] for r in log),
                training_first_start=min(r["started_at"] for r in log),
                training_last_finish=max(r["finished_at"] for r in log), training_cpu_time_s=cpu,
                training_invocations=len(log))
