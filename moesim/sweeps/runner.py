"""Running a sweep: every missing (grid point, seed) run trained on Dask and committed to a run store.

Each Dask task trains a batch of seeds of one point as one vectorized program (``train_batch``:
``moesim.train(cfg, seeds)``; per-seed results equal separate runs) and returns one ``RunRecord``
per seed; the client commits each run to the ``RunStore`` as it arrives (one writer, one
transaction per run). ``plan`` lists the runs the store lacks, so an interrupted sweep (Ctrl-C,
``kill -9`` of the client or of a worker) is completed by running it again; ``stale_runs`` finds
runs of the same points stored by other code. dask is imported only when a sweep runs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
import typing
import uuid
from dataclasses import dataclass

import numpy as np

from ..arguments import UsageError
from ..config import Config, ConfigError
from ..metrics import majority_experts
from ..progress import progress_bar
from ..store import RunRecord, RunStore, StaleRunsError, code_version, config_hash, pack_arrays, run_key
from .spec import SweepSpec

DEFAULT_STORE = "runs/sweeps.sqlite"  # runs/ is git-ignored


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
    majority = majority_experts(counts)  # m*(k), the expert receiving most of cluster k
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
    from ..training import check_device

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
