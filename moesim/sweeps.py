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

Command line: ``moesim sweep [SWEEP.yaml] [--grid name=v1,v2,...] [--set name=value] [--store FILE]``
(``--scheduler tcp://host:8786`` for an existing Dask cluster; default: a ``LocalCluster``
sized to the machine). dask, pyyaml and pandas are imported only when a sweep runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
import traceback
import typing
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import Config, ConfigError, field_names, parse_value, preset
from .store import (
    RunRecord, RunStore, StaleRunsError, code_version, config_field_types, config_hash, pack_arrays, run_key,
)

DEFAULT_STORE = "runs/sweeps.sqlite"  # runs/ is git-ignored
DEFAULT_PRESET = "official-s1-quick"
DEFAULT_SEEDS = 10
_SWEEP_KEYS = ("name", "preset", "model", "set", "grid", "seeds")


# --- the grid ---------------------------------------------------------------------------------

def coerce_value(name: str, value: typing.Any) -> typing.Any:
    """``value`` (text, or a number/list/bool from YAML) as the type of config field ``name``.

    Raises ``ConfigError`` naming the field for an unknown field or a value of the wrong type.
    """
    types = config_field_types()
    if name not in types:
        raise ConfigError(f"unknown config field {name!r}; allowed: {', '.join(field_names())}")
    kind = types[name]
    if isinstance(value, str):
        return parse_value(name, value)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          tuple: lambda v: isinstance(v, (list, tuple)) and len(v) == 2
          and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in v)}.get(kind)
    if ok is None or not ok(value):
        what = {bool: "true or false", int: "an integer", float: "a number", tuple: "a pair [low, high]",
                str: "text"}[kind]
        raise ConfigError(f"{name}={value!r} has the wrong type; it must be {what}")
    if kind is float:
        return float(value)
    if kind is tuple:
        return tuple(float(a) for a in value)
    return value


def parse_grid_item(item: str) -> tuple[str, list[typing.Any]]:
    """``name=v1,v2,...`` -> (name, typed values). Range fields separate values by ``;``:
    ``gamma_range=0.5,1;0.5,3``."""
    if "=" not in item:
        raise ConfigError(f"--grid {item!r} must look like name=v1,v2,...")
    name, raw = (s.strip() for s in item.split("=", 1))
    if name not in config_field_types():
        raise ConfigError(f"--grid: unknown config field {name!r}; allowed: {', '.join(field_names())}")
    sep = ";" if config_field_types()[name] is tuple else ","
    texts = [t.strip() for t in raw.split(sep) if t.strip()]
    if not texts:
        raise ConfigError(f"--grid {name}= is empty: give at least one value, e.g. {name}=v1,v2")
    return name, [parse_value(name, t) for t in texts]


def _seeds(value: typing.Any) -> list[int]:
    from .cli import UsageError, parse_seeds

    if isinstance(value, bool):
        raise UsageError(f"seeds={value!r} is not allowed; give a count (10), a list ([0, 3, 5]) or a range ('0-9')")
    if isinstance(value, int):
        return parse_seeds(str(value))
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise UsageError(f"seeds={value!r} is not allowed; a list of seeds must be non-empty integers >= 0")
        if len(set(value)) != len(value):
            raise UsageError(f"seeds={value!r} contains duplicates")
        return [int(s) for s in value]
    if isinstance(value, str):
        seeds = parse_seeds(value)
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"seeds={value!r} contains duplicates")
        return seeds
    raise UsageError(f"seeds={value!r} is not allowed; give a count (10), a list ([0, 3, 5]) or a range ('0-9')")


def _plain(v: typing.Any) -> typing.Any:
    return list(v) if isinstance(v, tuple) else v


def axis_fields(axis: str) -> list[str]:
    """The config fields of a grid axis: ``"n_experts"``, or linked fields ``"n_experts,lr_router"``."""
    return [name.strip() for name in axis.split(",")]


def _axis_values(axis: str, values: list[typing.Any]) -> list[typing.Any]:
    """Typed values of an axis; a linked axis takes one list [v1, v2, ...] per point."""
    names = axis_fields(axis)
    if len(names) == 1:
        return [coerce_value(axis, v) for v in values]
    out = []
    for v in values:
        if not isinstance(v, (list, tuple)) or len(v) != len(names):
            raise ConfigError(f"grid axis {axis!r} links {len(names)} fields: each value must be a list of "
                              f"{len(names)} values, got {v!r}")
        out.append(tuple(coerce_value(n, a) for n, a in zip(names, v)))
    return out


@dataclass
class SweepSpec:
    """A sweep: base config, grid axes (their product is the set of points), seeds.

    Args:
        name: the sweep's name in the store.
        preset: a preset name (``moesim.config.preset_names()``).
        model: a model name (``moesim.config.MODELS``) or None for the preset's.
        fixed: config overrides applied to every point.
        axes: ``{field: [values]}``; the grid is their product, in this order. An axis may link
            fields that vary together, ``{"n_experts,lr_router": [(4, 0.025), (8, 0.1)]}`` (e.g.
            Theorem 4.2's router step eta_r = Theta(M^2) eta).
        seeds: the model seeds of every point.
    """

    name: str
    preset: str = DEFAULT_PRESET
    model: str | None = None
    fixed: dict[str, typing.Any] = field(default_factory=dict)
    axes: dict[str, list[typing.Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))

    @classmethod
    def from_dict(cls, d: dict[str, typing.Any], name: str | None = None) -> SweepSpec:
        """Build from the mapping of a YAML spec (keys: name, preset, model, set, grid, seeds)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a sweep spec must be a mapping with keys {', '.join(_SWEEP_KEYS)}; "
                              f"got {type(d).__name__}")
        unknown = sorted(set(d) - set(_SWEEP_KEYS))
        if unknown:
            raise ConfigError(f"unknown sweep spec key(s) {unknown}; allowed: {', '.join(_SWEEP_KEYS)}")
        fixed, grid = d.get("set") or {}, d.get("grid")
        if not isinstance(fixed, dict):
            raise ConfigError(f"spec 'set' must be a mapping field: value, got {fixed!r}")
        if grid is None:
            grid = {}
        if not isinstance(grid, dict):
            raise ConfigError(f"spec 'grid' must be a mapping field: [values], got {grid!r}")
        axes = {}
        for k, values in grid.items():
            if not isinstance(values, list):
                values = [values]
            axes[",".join(axis_fields(str(k)))] = _axis_values(str(k), values)
        return cls(name=str(d.get("name") or name or "sweep"), preset=str(d.get("preset") or DEFAULT_PRESET),
                   model=d.get("model"), fixed={k: coerce_value(k, v) for k, v in fixed.items()}, axes=axes,
                   seeds=_seeds(d.get("seeds", DEFAULT_SEEDS)))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SweepSpec:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"sweep spec {str(path)!r} does not exist")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"sweep spec {str(path)!r} is not valid YAML: {err}") from None
        return cls.from_dict(d if d is not None else {}, name=path.stem)

    def to_dict(self) -> dict[str, typing.Any]:
        """JSON-able form (what the store logs with each invocation)."""
        return dict(name=self.name, preset=self.preset, model=self.model,
                    set={k: _plain(v) for k, v in self.fixed.items()},
                    grid={k: [[_plain(a) for a in v] if "," in k else _plain(v) for v in vs]
                          for k, vs in self.axes.items()}, seeds=list(self.seeds))

    def check(self) -> None:
        """Raise ``ConfigError`` for an empty grid, an empty axis, a repeated value or field."""
        if not self.axes:
            raise ConfigError("the grid is empty: give at least one axis, --grid name=v1,v2,... or "
                              "'grid: {name: [v1, v2]}' in the spec")
        seen: set[str] = set()
        for axis, values in self.axes.items():
            for name in axis_fields(axis):
                if name not in config_field_types():
                    raise ConfigError(f"grid: unknown config field {name!r}; allowed: {', '.join(field_names())}")
                if name in self.fixed:
                    raise ConfigError(f"{name!r} is both a grid axis and a fixed override (--set); keep one")
                if name in seen:
                    raise ConfigError(f"{name!r} is in two grid axes; keep one")
                seen.add(name)
            if not values:
                raise ConfigError(f"grid axis {axis!r} has no values; give at least one")
            if len(set(values)) != len(values):
                raise ConfigError(f"grid axis {axis!r} repeats a value: {values!r}")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed")

    def points(self) -> list[Config]:
        """Every grid point's config, validated, in grid order (last axis fastest)."""
        self.check()
        base = dict(self.fixed)
        out = []
        axes = list(self.axes)
        for values in itertools.product(*(self.axes[a] for a in axes)):
            point = {}
            for axis, value in zip(axes, values):
                names = axis_fields(axis)
                point.update(zip(names, value) if len(names) > 1 else {axis: value})
            try:
                out.append(preset(self.preset, self.model, **base, **point))
            except ConfigError as err:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise ConfigError(f"grid point {where}: {err}") from None
        return out

    @property
    def n_runs(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()])) * len(self.seeds)


# --- the task that runs on a worker -----------------------------------------------------------

def _per_seed(arrays: dict[str, np.ndarray], i: int, prefix: str, keep_first: tuple[str, ...] = ()) -> dict:
    out = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        out[f"{prefix}/{k}"] = v if k in keep_first or v.ndim < 2 else v[:, i]
    return out


def _metrics(summary: dict[str, np.ndarray], i: int) -> dict[str, typing.Any]:
    """The summary values of seed ``i``, plus the cluster-to-expert assignment (Theorem 4.2)."""
    m = {("final_loss" if k == "loss" else k): np.asarray(v)[i].tolist() for k, v in summary.items()}
    counts = np.asarray(summary["test_dispatch_counts"])[i]  # (K, M): rows clusters, columns experts
    majority = counts.argmax(-1)  # m*(k), the expert receiving most of cluster k
    m["majority_experts"] = majority.tolist()
    m["distinct_majority"] = bool(len(set(majority.tolist())) == counts.shape[0])
    m["experts_used"] = int((counts.sum(0) > 0).sum())
    return m


class _Clock:
    """Wall and CPU time of this worker process since creation (the batch's timing fields)."""

    def __init__(self):
        self.t0, self.cpu0, self.wall0 = time.perf_counter(), time.process_time(), time.time()

    def timing(self) -> dict[str, float]:
        return {"batch_wall_time_s": time.perf_counter() - self.t0, "batch_cpu_time_s": time.process_time() - self.cpu0,
                "started_at": self.wall0, "finished_at": time.time()}


def train_batch(config: dict[str, typing.Any], seeds: list[int], threads: int | None = None) -> list[RunRecord]:
    """Train ``seeds`` of one config as one program; one ``RunRecord`` per seed (runs on a worker).

    A seed whose loss diverges is recorded as failed (with its trajectory up to that step) and
    the others are trained again without it (a seed's result does not depend on its batch). Any
    other exception fails every seed of the batch with the error and its traceback.
    """
    import moesim

    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    records: list[RunRecord] = []
    remaining = [int(s) for s in seeds]

    def record(seed, status, **kw):
        return RunRecord(config=config, seed=seed, status=status, batch_size=len(remaining), worker=worker,
                         moesim_version=code_version(), **kw)

    while remaining:
        clock = _Clock()
        try:
            cfg = Config.from_dict(config)
            res = moesim.train(cfg, remaining, keep_params=False)
        except moesim.DivergenceError as err:
            part, t = err.result, clock.timing()
            for s in err.seeds:
                i = remaining.index(s)
                traj = {**_per_seed(part.history, i, "history"), **_per_seed(part.snapshots, i, "snapshots", ("step",))}
                records.append(record(s, "failed", error=str(err), metrics={"diverged_at_step": err.step},
                                      trajectory=pack_arrays(traj), **t))
            remaining = [s for s in remaining if s not in err.seeds]
            continue
        except Exception as err:  # noqa: BLE001 -- a failing run is data: it is stored with its error
            tb = traceback.format_exc(limit=8)
            msg = f"{type(err).__name__}: {err}\n{tb[-3000:]}"
            t = clock.timing()
            records += [record(s, "failed", error=msg, **t) for s in remaining]
            break
        t = clock.timing()
        for i, s in enumerate(remaining):
            traj = {**_per_seed(res.history, i, "history"), **_per_seed(res.snapshots, i, "snapshots", ("step",))}
            records.append(record(s, "done", metrics=_metrics(res.summary, i), trajectory=pack_arrays(traj), **t))
        break
    return records


# --- planning and running ---------------------------------------------------------------------

@dataclass
class Job:
    """One Dask task: a batch of seeds of one grid point."""

    config: dict[str, typing.Any]
    seeds: list[int]
    keys: list[str]


@dataclass
class SweepReport:
    """What a sweep did: runs in the grid, found in the store, computed now, failed, wall time."""

    name: str
    store: str
    n_runs: int
    n_stored_before: int
    n_computed: int = 0
    n_failed: int = 0
    n_tasks: int = 0
    wall_time_s: float = 0.0
    executor: str = ""
    interrupted: bool = False

    def line(self) -> str:
        return (f"sweep {self.name}: {self.n_runs} runs; {self.n_stored_before} already stored, "
                f"{self.n_computed} computed now ({self.n_failed} failed) in {self.n_tasks} tasks, "
                f"wall time {self.wall_time_s:.1f} s on {self.executor or 'no executor'}; store {self.store}")


def plan(spec: SweepSpec, store: RunStore, batch_size: int | None = None,
         retry_failed: bool = False) -> tuple[list[Job], list[str], int]:
    """The tasks still to run: (jobs, keys already stored, total runs). Validates every point.

    Keys are those of this code (``moesim.store.code_version``); see ``stale_runs`` for runs of
    the same points stored by other code.
    """
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed; it must be an integer >= 1")
    points = spec.points()
    version = code_version()
    keys = {(i, s): run_key(cfg, s, version) for i, cfg in enumerate(points) for s in spec.seeds}
    status = store.statuses(keys.values())
    stored = [k for k, st in status.items() if st == "done" or not retry_failed]
    have = set(stored)
    jobs = []
    for i, cfg in enumerate(points):
        missing = [s for s in spec.seeds if keys[i, s] not in have]
        step = batch_size or len(missing) or 1
        for j in range(0, len(missing), step):
            seeds = missing[j:j + step]
            jobs.append(Job(cfg.to_dict(), seeds, [keys[i, s] for s in seeds]))
    return jobs, stored, len(keys)


def stale_runs(spec: SweepSpec, store: RunStore) -> list[dict[str, typing.Any]]:
    """Runs of ``spec``'s points and seeds in ``store`` computed by other code (``RunStore.stale``)."""
    pairs = {(config_hash(cfg), s) for cfg in spec.points() for s in spec.seeds}
    return store.stale(pairs)


def _stale_message(spec: SweepSpec, store_path, stale: list[dict]) -> str:
    versions = sorted({r["moesim_version"] for r in stale})
    return (f"store {str(store_path)!r} holds {len(stale)} run(s) of sweep {spec.name!r}'s grid computed by other "
            f"code ({', '.join(versions)}; this code is {code_version()}); give --retry-stale to compute them with "
            f"this code (the old rows leave the sweep), or use another --store")


def check_devices(spec: SweepSpec) -> None:
    """Every device the grid names exists here (``ConfigError``/``ValueError`` naming it), before any worker starts."""
    from .training import check_device

    for device in dict.fromkeys(cfg.device for cfg in spec.points()):
        check_device(device)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def local_cluster(n_workers: int):
    """A ``LocalCluster`` of ``n_workers`` single-threaded worker processes on this machine.

    It listens on 127.0.0.1 only, on free ports (its HTTP endpoint too: no dashboard, and no
    clash with another cluster on port 8787); Dask's own log lines below ERROR are silenced.
    """
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0", scheduler_kwargs={"dashboard": False},
                        silence_logs=logging.ERROR)


class _Executor:
    """A dask.distributed Client on ``client``, on ``scheduler`` (an address), or on a new LocalCluster."""

    def __init__(self, client=None, scheduler: str | None = None, workers: int | None = None):
        self.client, self.cluster, self.own_client = client, None, client is None
        self.scheduler, self.workers = scheduler, workers

    def __enter__(self):
        from dask.distributed import Client

        if self.client is None and self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout="30s")
            except OSError as err:
                from .cli import UsageError

                raise UsageError(f"--scheduler {self.scheduler!r}: cannot connect to a Dask scheduler "
                                 f"({err})") from None
        elif self.client is None:
            self.cluster = local_cluster(self.workers or default_workers())
            self.client = Client(self.cluster)
        return self

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def describe(self) -> str:
        if self.cluster is not None:
            return f"LocalCluster({self.n_workers} workers x 1 thread)"
        return f"Dask scheduler {self.client.scheduler.address} ({self.n_workers} workers)"

    def __exit__(self, *exc):
        if self.own_client:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()


def _failed_records(job: Job, error: str) -> list[RunRecord]:
    return [RunRecord(config=job.config, seed=s, status="failed", error=error, batch_size=len(job.seeds),
                      moesim_version=code_version(), finished_at=time.time()) for s in job.seeds]


def run_sweep(spec: SweepSpec, store_path: str | os.PathLike = DEFAULT_STORE, *, client=None,
              scheduler: str | None = None, workers: int | None = None, batch_size: int | None = None,
              retry_failed: bool = False, threads: int | None = None, progress: bool = True,
              task: typing.Callable[..., list[RunRecord]] = train_batch, retry_stale: bool = False) -> SweepReport:
    """Run the missing runs of ``spec`` on Dask and commit each to the store as it finishes.

    Args:
        spec: the sweep.
        store_path: the SQLite run store (created if absent).
        client: an existing ``dask.distributed.Client`` to use (it is left open).
        scheduler: address of a running Dask scheduler (``tcp://host:8786``); ignored with ``client``.
        workers: workers of the LocalCluster made when neither is given (default: the cores).
        batch_size: seeds per task (default: all missing seeds of a point in one task).
        retry_failed: compute stored failed runs again (default: they count as done).
        threads: torch threads per task (default 1 on a cluster of several workers, else all cores).
        progress: show a progress bar of completed / total runs.
        task: the function run per task (``train_batch``; tests pass a fault-injecting wrapper).
        retry_stale: the store holds runs of this grid computed by other code (``stale_runs``):
            compute them with this code and take the old rows out of the sweep. Without it such
            a store is refused (``StaleRunsError``) before any worker starts.

    Every point is validated, and (without ``client`` or ``scheduler``) every device checked,
    before any work; the store is opened and checked before any worker starts. Interrupting
    (KeyboardInterrupt) cancels the tasks not yet finished; every run committed so far stays in the store.
    """
    from .cli import progress_bar

    t0 = time.perf_counter()
    spec.points()  # every point validated before the store is opened or a worker started
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} is not allowed; it must be an integer >= 1")
    if client is None and scheduler is None:
        check_devices(spec)
    with RunStore(store_path) as store:
        stale = stale_runs(spec, store)
        if stale and not retry_stale:
            raise StaleRunsError(_stale_message(spec, store_path, stale))
        if stale:
            store.remove_from_sweep(spec.name, [r["key"] for r in stale])
        jobs, stored, total = plan(spec, store, batch_size, retry_failed)
        store.add_to_sweep(spec.name, stored)
        report = SweepReport(spec.name, str(store_path), total, len(stored), n_tasks=len(jobs))
        if not jobs:
            report.wall_time_s = time.perf_counter() - t0
            return report
        from dask.distributed import as_completed

        with _Executor(client, scheduler, workers) as ex:
            report.executor = ex.describe()
            n_threads = threads or (1 if ex.n_workers > 1 or ex.cluster is None else default_workers())
            log_id = store.log_start(spec.name, spec.to_dict(), total, len(stored), report.executor)
            update, close = progress_bar(total, f"sweep {spec.name} (runs)", progress)
            update(len(stored), total)
            done = len(stored)
            futures = {}
            try:
                for job in jobs:
                    key = f"moesim-train-{config_hash(job.config)[:10]}-s{job.seeds[0]}-{uuid.uuid4().hex[:8]}"
                    futures[ex.client.submit(task, job.config, job.seeds, n_threads, key=key, pure=False)] = job
                for fut in as_completed(list(futures)):
                    job = futures.pop(fut)
                    try:
                        records = fut.result()
                    except Exception as err:  # noqa: BLE001 -- e.g. KilledWorker: the task killed its workers
                        records = _failed_records(job, f"{type(err).__name__}: {err}")
                    for rec in records:
                        store.commit(rec, sweep=spec.name)
                        report.n_computed += 1
                        report.n_failed += rec.status == "failed"
                        done += 1
                    update(done, total)
            except BaseException:
                report.interrupted = True
                ex.client.cancel(list(futures))
                raise
            finally:
                close()
                report.wall_time_s = time.perf_counter() - t0
                store.log_finish(log_id, report.n_computed, report.n_failed, report.interrupted)
    return report


# --- export -----------------------------------------------------------------------------------

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
        majority = counts[steps[j]].argmax(-1)
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
    from . import __version__

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


# --- command line -----------------------------------------------------------------------------

def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``moesim sweep``."""
    from .cli import add_config_arguments, add_threads_argument

    p.add_argument("spec", nargs="?", default=None,
                   help="YAML sweep spec (keys: name, preset, model, set, grid, seeds); optional with --grid")
    add_config_arguments(p, default_preset=DEFAULT_PRESET)
    for action in p._actions:  # the spec's preset/model apply unless given here
        if action.dest == "preset":
            action.default = None
            action.help = ("{paper|official}-{s1|s2|s3|s4|verify}[-quick] "
                           f"(default: the spec's, else {DEFAULT_PRESET})")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a grid axis (repeatable; replaces the spec's axis of that name); range fields "
                        "separate values by ';', e.g. --grid 'gamma_range=0.5,1;0.5,3'")
    p.add_argument("--seeds", default=None,
                   help=f"seeds of every point: a count, a list (0,3,5) or a range (0-9) (default: the spec's, "
                        f"else {DEFAULT_SEEDS})")
    p.add_argument("--name", default=None, help="the sweep's name in the store (default: the spec's, else derived)")
    p.add_argument("--store", default=DEFAULT_STORE, help="SQLite run store (default %(default)s; created if absent)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"workers of the LocalCluster (default: the cores available, {default_workers()} here)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="seeds per task (default: all missing seeds of a point in one task)")
    p.add_argument("--retry-failed", action="store_true", help="compute stored failed runs again")
    p.add_argument("--retry-stale", action="store_true",
                   help="recompute the grid's runs the store holds from other code (otherwise such a store is refused)")
    p.add_argument("--export", default=None, metavar="CSV",
                   help="afterwards write the sweep's runs to this CSV (+ .json with its spec and log)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --export CSV")
    add_threads_argument(p, "torch CPU threads of each task")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The sweep the command line describes: the spec file, then the flags on top."""
    from .cli import UsageError

    spec = SweepSpec.from_yaml(args.spec) if args.spec else SweepSpec(name="")
    if args.preset:
        spec.preset = args.preset
    if args.model:
        spec.model = args.model
    linked = {n: axis for axis in spec.axes if "," in axis for n in axis_fields(axis)}
    for item in args.overrides:  # --set fixes a field: it replaces the spec's axis of that name
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like name=value")
        name, raw = (s.strip() for s in item.split("=", 1))
        if name in linked:
            raise ConfigError(f"--set {name}: {name!r} is part of the linked grid axis {linked[name]!r} of the spec")
        spec.fixed[name] = coerce_value(name, raw)
        spec.axes.pop(name, None)
    for key, value in (("device", args.device), ("dtype", args.dtype)):
        if value is not None:
            spec.fixed[key] = value
            spec.axes.pop(key, None)
    cli_axes = [parse_grid_item(item) for item in args.grid]
    for name, values in cli_axes:  # --grid sweeps a field: it replaces the spec's value or axis
        if name in linked:
            raise ConfigError(f"--grid {name}: {name!r} is part of the linked grid axis {linked[name]!r} of the spec")
        if name in spec.fixed and any(f"{name}=" in o.replace(" ", "") for o in args.overrides):
            raise ConfigError(f"{name!r} is given both to --grid and to --set; keep one")
        spec.fixed.pop(name, None)
        spec.axes[name] = values
    if args.seeds is not None:
        spec.seeds = _seeds(args.seeds)
    if args.name:
        spec.name = args.name
    elif not spec.name:
        axes = [a.replace(",", "+") for a in spec.axes]
        spec.name = "-".join([spec.preset] + ([spec.model] if spec.model else []) + axes)
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers sizes the LocalCluster; with --scheduler the cluster's own workers are used")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not allowed; it must be >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; it must be >= 1")
    spec.points()  # every point validated before any work
    return spec


def main(args: argparse.Namespace) -> int:
    """``moesim sweep``: run the grid, print what was done, optionally export a CSV."""
    from .store import StoreError

    def stop(signum, frame):  # SIGTERM (kill, a batch system's time limit) ends the sweep like Ctrl-C
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        return _main(args)
    except StoreError as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    from .cli import UsageError

    spec = spec_from_args(args)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads} is not allowed; give an integer >= 1")
    if args.export:
        _check_export(Path(args.export), args.overwrite)
    if args.dry_run:
        existing = Path(args.store).exists()  # a dry run creates and changes no store
        with RunStore(args.store if existing else ":memory:", readonly=existing) as store:
            jobs, stored, total = plan(spec, store, args.batch_size, args.retry_failed)
            stale = stale_runs(spec, store)
        axes = " x ".join(f"{k} ({len(v)})" for k, v in spec.axes.items())
        print(f"sweep {spec.name}: grid {axes} x {len(spec.seeds)} seeds = {total} runs; "
              f"{len(stored)} stored; {total - len(stored)} to compute in {len(jobs)} tasks"
              + (f"; {len(stale)} stale (computed by other code: --retry-stale recomputes them)" if stale else ""))
        return 0
    report = run_sweep(spec, args.store, scheduler=args.scheduler, workers=args.workers,
                       batch_size=args.batch_size, retry_failed=args.retry_failed, threads=args.threads,
                       progress=not args.no_progress, retry_stale=args.retry_stale)
    print(report.line())
    if args.export:
        path = export_csv(args.store, spec.name, args.export)
        print(f"exported {path} and {path.with_suffix('.json')}")
    return 1 if report.n_failed and report.n_failed == report.n_computed else 0


def _check_export(path: Path, overwrite: bool) -> None:
    """``--export`` can be written (checked before any run): a new file, or an old one with --overwrite."""
    from .outputs import OutputError, os_error_text

    for target in (path, path.with_suffix(".json")):
        if target.is_dir():
            raise OutputError(f"--export {str(path)!r} is not allowed: {str(target)!r} is a folder")
        if target.exists() and not overwrite:
            raise OutputError(f"--export {str(path)!r}: {str(target)!r} exists; give --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--export {str(path)!r} cannot be written: {os_error_text(path.parent, err)}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"--export {str(path)!r} cannot be written: its folder is not writable")
