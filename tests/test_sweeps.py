"""Sweeps on Dask: the grid, exactly-once runs in the store, resume, and faults.

Faults are real: a client process killed with SIGKILL mid-sweep and a Dask worker process that
kills itself mid-task. Runs are tiny (n = 200, 20 steps) so the whole file takes seconds of
compute; most of its time is starting Dask worker processes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import cloudpickle
import pytest

import moesim
from moesim.config import ConfigError
from moesim.store import RunStore, configs, run_key
from moesim.sweeps import SweepSpec, local_cluster, parse_grid_item, run_sweep, train_batch

TINY = {"n_train": 200, "n_test": 100, "n_steps": 20, "record_every": 10}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def tiny_spec(name="tiny", **axes) -> SweepSpec:
    return SweepSpec(name=name, preset="paper-s1-quick", model="moe-nonlinear", fixed=dict(TINY),
                     axes=axes or {"n_experts": [2, 3, 4, 5], "n_clusters": [2, 3]}, seeds=[0, 1])


def expected_keys(spec: SweepSpec) -> set[str]:
    return {run_key(cfg, s) for cfg in spec.points() for s in spec.seeds}


def stored_rows(path) -> list[tuple[str, str]]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT key, status FROM runs").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def client():
    """One 2-worker LocalCluster (separate processes, as the CLI makes) for this file."""
    from dask.distributed import Client

    cluster = local_cluster(2)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


# --- the grid, before any work ------------------------------------------------------------------

def test_grid_items_are_typed_by_their_field():
    assert parse_grid_item("n_experts=2,4,8") == ("n_experts", [2, 4, 8])
    assert parse_grid_item("sigma_p=0.5,1") == ("sigma_p", [0.5, 1.0])
    assert parse_grid_item("gamma_range=0.5,1;0.5,3") == ("gamma_range", [(0.5, 1.0), (0.5, 3.0)])
    assert parse_grid_item("test_noise=true,false") == ("test_noise", [True, False])


@pytest.mark.parametrize("spec, words", [
    (dict(grid={"n_expert": [2, 4]}), "unknown config field 'n_expert'"),
    (dict(grid={}), "the grid is empty"),
    (dict(grid={"n_experts": []}), "has no values"),
    (dict(grid={"n_experts": [2, 2]}), "repeats a value"),
    (dict(grid={"n_experts": ["many"]}), "n_experts='many' has the wrong type"),
    (dict(grid={"n_clusters": [2, 30]}), "grid point n_clusters=30: patch_dim=50 is too small"),
    (dict(grid={"n_experts": [2]}, set={"sigma_p": -1}), "sigma_p"),
    (dict(grid={"n_experts": [2]}, colour="red"), "unknown sweep spec key"),
])
def test_bad_specs_fail_before_any_work(tmp_path, spec, words):
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=words):
        run_sweep(SweepSpec.from_yaml(path), tmp_path / "store.sqlite", progress=False)
    assert not (tmp_path / "store.sqlite").exists()  # no store, no cluster: nothing started


@pytest.mark.parametrize("args, words", [
    (["--grid", "n_expert=2,4"], "unknown config field 'n_expert'"),
    (["--grid", "n_experts="], "is empty"),
    ([], "the grid is empty"),
    (["--grid", "n_experts=2", "--seeds", "0"], "seeds"),
    (["--grid", "n_experts=2", "--set", "n_experts=3"], "both to --grid and to --set"),
])
def test_cli_bad_input_exits_2_before_any_work(tmp_path, capsys, args, words):
    from moesim.cli import cli

    store = tmp_path / "store.sqlite"
    assert cli(["sweep", *args, "--store", str(store), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "moesim: error:" in err and words in err and "Traceback" not in err
    assert not store.exists()


def test_yaml_spec_and_flags(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "preset: paper-s1-quick\nmodel: moe-nonlinear\nset: {sigma_p: 1, n_train: 200}\n"
        "grid: {n_experts: [2, 4], gamma_range: [[0.5, 1], [0.5, 3]]}\nseeds: 0-2\n")
    spec = SweepSpec.from_yaml(tmp_path / "s.yaml")
    assert spec.name == "s" and spec.seeds == [0, 1, 2] and spec.fixed == {"sigma_p": 1.0, "n_train": 200}
    points = spec.points()
    assert [(c.n_experts, c.gamma_range) for c in points] == [
        (2, (0.5, 1.0)), (2, (0.5, 3.0)), (4, (0.5, 1.0)), (4, (0.5, 3.0))]
    assert spec.n_runs == 12


def test_linked_axes_vary_together(tmp_path):
    """Theorem 4.2 ties the router step to M (eta_r = Theta(M^2) eta): a linked axis sweeps both."""
    (tmp_path / "s.yaml").write_text(
        "preset: paper-s1-quick\ngrid:\n  n_clusters: [2, 4]\n"
        "  n_experts, lr_router: [[4, 0.025], [8, 0.1]]\nseeds: 2\n")
    spec = SweepSpec.from_yaml(tmp_path / "s.yaml")
    assert [(c.n_clusters, c.n_experts, c.lr_router) for c in spec.points()] == [
        (2, 4, 0.025), (2, 8, 0.1), (4, 4, 0.025), (4, 8, 0.1)]
    assert spec.n_runs == 8
    assert SweepSpec.from_dict(spec.to_dict()).points() == spec.points()  # what the store logs reads back
    bad = "preset: paper-s1-quick\ngrid:\n  n_experts, lr_router: [[4, 0.025], [8]]\n"
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(ConfigError, match="links 2 fields"):
        SweepSpec.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="in two grid axes"):
        SweepSpec(name="x", axes={"n_experts": [2], "n_experts,lr_router": [(4, 0.1)]}).points()


def test_trajectory_metrics_stop_at_the_lowest_training_loss():
    import numpy as np

    from moesim.sweeps import trajectory_metrics

    counts = np.zeros((30, 2, 3), dtype=int)
    counts[:, 0, 0] = counts[:, 1, 1] = 5  # clusters 0, 1 on experts 0, 1 ...
    counts[20:, 1, 0] = 9  # ... until step 20, when cluster 1 moves to expert 0
    loss = np.linspace(1.0, 0.1, 30)
    loss[25:] = 5.0  # the loss is lowest at step 24, on the snapshot grid at step 20
    traj = {"history/loss": loss, "history/dispatch_counts": counts, "snapshots/step": np.array([0, 10, 20, 30]),
            "snapshots/test_accuracy": np.array([50.0, 99.5, 98.0, 70.0])}
    m = trajectory_metrics(traj)
    assert m["min_loss"] == pytest.approx(loss[24]) and (m["peak_test_accuracy"], m["peak_step"]) == (99.5, 10)
    assert (m["early_stop_step"], m["early_stop_test_accuracy"], m["early_stop_distinct"]) == (20, 98.0, 0.0)
    traj["history/dispatch_counts"] = counts[:, :, :] * 0 + np.eye(2, 3, dtype=int)  # distinct at every step
    assert trajectory_metrics(traj)["early_stop_distinct"] == 1.0
    assert all(v != v for v in trajectory_metrics({}).values())  # a failed run without trajectory: NaN


def test_a_batch_gives_each_seed_its_separate_run():
    """The task trains its seeds as one program; each seed's numbers equal a run of that seed alone."""
    cfg = moesim.preset("paper-s1-quick", "moe-nonlinear", **TINY)
    batch = train_batch(cfg.to_dict(), [0, 1, 2])
    alone = train_batch(cfg.to_dict(), [2])
    assert [r.seed for r in batch] == [0, 1, 2] and all(r.status == "done" for r in batch)
    assert batch[2].metrics["test_accuracy"] == alone[0].metrics["test_accuracy"]
    assert batch[2].metrics["final_loss"] == pytest.approx(alone[0].metrics["final_loss"], rel=1e-5)
    counts = batch[0].metrics["test_dispatch_counts"]
    assert len(counts) == cfg.n_clusters and sum(map(sum, counts)) == cfg.n_test


# --- on a 2-worker LocalCluster -----------------------------------------------------------------

def test_sweep_stores_exactly_its_runs_and_resume_computes_nothing(client, tmp_path):
    spec = tiny_spec()  # 8 points x 2 seeds
    store = tmp_path / "s.sqlite"
    calls = []
    import moesim.sweeps.runner as runner_mod

    real_bar = runner_mod.progress_bar
    runner_mod.progress_bar = lambda total, desc, enabled=True: (lambda n, t: calls.append((n, t)), lambda: None)
    try:
        rep = run_sweep(spec, store, client=client, progress=True)
    finally:
        runner_mod.progress_bar = real_bar
    assert (rep.n_runs, rep.n_computed, rep.n_failed, rep.n_tasks) == (16, 16, 0, 8)
    assert calls[0] == (0, 16) and calls[-1] == (16, 16)  # the bar counts runs
    rows = stored_rows(store)
    assert {k for k, _ in rows} == expected_keys(spec) and len(rows) == 16
    assert {s for _, s in rows} == {"done"}
    with RunStore(store) as st:
        df = st.dataframe("tiny")
        before = dict(zip(df["key"], df["committed_at"]))
    # the DataFrame gives back the configs of the grid
    assert sorted(c.to_dict().items().__repr__() for c in configs(df)) == sorted(
        c.to_dict().items().__repr__() for c in spec.points() for _ in spec.seeds)

    again = run_sweep(spec, store, client=client, progress=False)
    assert (again.n_stored_before, again.n_computed, again.n_tasks) == (16, 0, 0)
    with RunStore(store) as st:
        assert dict(zip(st.dataframe()["key"], st.dataframe()["committed_at"])) == before  # nothing rewritten

    wider = tiny_spec(n_experts=[2, 3, 4, 5, 6], n_clusters=[2, 3])
    rep = run_sweep(wider, store, client=client, progress=False)
    assert (rep.n_stored_before, rep.n_computed) == (16, 4)  # only the new point n_experts = 6
    assert {k for k, _ in stored_rows(store)} == expected_keys(wider)


def test_failing_runs_are_stored_with_their_error_and_the_sweep_goes_on(client, tmp_path):
    """A diverging run (plain GD with a huge step on a single model) and a run that raises (a GPU
    that is not there) are stored as failed; the other runs finish."""
    spec = SweepSpec(name="faults", preset="paper-s1-quick", model="single-nonlinear",
                     fixed={"n_train": 200, "n_test": 100, "n_steps_single": 50, "single_optimizer": "gd"},
                     axes={"lr_single": [1e-3, 1e8], "device": ["cpu", "cuda:63"]}, seeds=[0, 1])
    rep = run_sweep(spec, tmp_path / "s.sqlite", client=client, progress=False)
    assert rep.n_computed == 8 and rep.n_failed == 6
    with RunStore(tmp_path / "s.sqlite") as st:
        df = st.dataframe()
        ok = df[(df.device == "cpu") & (df.lr_single == 1e-3)]
        assert set(ok.status) == {"done"} and len(ok) == 2
        div = df[(df.device == "cpu") & (df.lr_single == 1e8)]
        assert set(div.status) == {"failed"} and all("diverged at step" in e for e in div.error)
        assert all(m > 0 for m in div.diverged_at_step)
        assert len(st.trajectory(div.key.iloc[0])["history/loss"]) == div.diverged_at_step.iloc[0]
        gpu = df[df.device == "cuda:63"]
        assert set(gpu.status) == {"failed"} and all("cuda:63" in e and "not available" in e for e in gpu.error)
    # failed runs count as stored; --retry-failed computes them again
    assert run_sweep(spec, tmp_path / "s.sqlite", client=client, progress=False).n_computed == 0
    assert run_sweep(spec, tmp_path / "s.sqlite", client=client, progress=False, retry_failed=True).n_computed == 6


def _kill_worker_once(config, seeds, threads, marker):
    """The sweep task, except that the first call anywhere kills its own worker process."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return train_batch(config, seeds, threads)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_mid_task_loses_no_run(client, tmp_path):
    import functools

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
    try:
        marker = tmp_path / "killed"
        spec = tiny_spec("worker-death", n_experts=[2, 3, 4], n_clusters=[2])
        rep = run_sweep(spec, tmp_path / "s.sqlite", client=client, progress=False,
                        task=functools.partial(_kill_worker_once, marker=str(marker)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists()  # a worker really died
    assert (rep.n_computed, rep.n_failed) == (6, 0)
    rows = stored_rows(tmp_path / "s.sqlite")
    assert {k for k, _ in rows} == expected_keys(spec) and {s for _, s in rows} == {"done"}
    killed_pid = marker.read_text()
    with RunStore(tmp_path / "s.sqlite") as st:
        assert not any(w.endswith(f":{killed_pid}") for w in st.dataframe()["worker"])


# --- the client killed with SIGKILL, in a real process -----------------------------------------

def test_client_killed_with_sigkill_then_rerun_completes_exactly_once(client, tmp_path):
    """``moesim sweep --scheduler`` in its own process, killed with SIGKILL once some runs are
    committed; the same command again computes exactly the missing runs: no duplicate, no lost
    run, no half run. (Both processes use this file's cluster through its scheduler address, as
    they would use a cluster started with ``dask scheduler``.)"""
    store, log = tmp_path / "s.sqlite", tmp_path / "client.log"
    grid = dict(n_experts=[2, 3, 4, 5], n_clusters=[2, 3])
    spec = tiny_spec("killed", **grid)
    total = len(expected_keys(spec))  # 8 points x 2 seeds, one run per task
    cmd = [sys.executable, "-m", "moesim.cli", "sweep", "--preset", "paper-s1-quick", "--model", "moe-nonlinear",
           *TINY_ARGS, *[a for k, v in grid.items() for a in ("--grid", f"{k}={','.join(map(str, v))}")],
           "--seeds", "2", "--batch-size", "1", "--scheduler", client.scheduler.address, "--store", str(store),
           "--name", "killed", "--no-progress"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        n, deadline = 0, time.monotonic() + 300
        while n < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                n = len(stored_rows(store)) if store.exists() else 0
            except sqlite3.OperationalError:  # the schema is being created
                n = 0
        assert proc.poll() is None, f"the sweep ended before it could be killed: {log.read_text()!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        _end_group(proc.pid)
    partial = stored_rows(store)
    assert 3 <= len(partial) < total, "the kill must land mid-sweep"
    assert {s for _, s in partial} == {"done"} and {k for k, _ in partial} <= expected_keys(spec)

    csv = tmp_path / "killed.csv"
    done = subprocess.run([*cmd, "--export", str(csv)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(partial)} already stored, {total - len(partial)} computed now (0 failed)" in done.stdout
    rows = stored_rows(store)
    assert len(rows) == total and {k for k, _ in rows} == expected_keys(spec) and {s for _, s in rows} == {"done"}
    from moesim.phase import load_results

    exported = load_results(csv)  # the export holds the same runs, and what their trajectories say
    assert (exported["peak_test_accuracy"] >= exported["test_accuracy"]).all()  # the last snapshot is the end
    assert (exported["min_loss"] <= exported["final_loss"] + 1e-12).all()
    assert len(exported) == total and set(zip(exported.n_experts, exported.n_clusters, exported.seed)) == {
        (m, k, s) for m in grid["n_experts"] for k in grid["n_clusters"] for s in (0, 1)}


def _end_group(pgid: int) -> None:
    """Stop what is left of the killed client's process group (its Dask workers exit by themselves
    once their parent is gone; this only guards against a stray one)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_export_round_trips_through_csv(tmp_path):
    """``export_csv`` writes the sweep's varying fields (ranges as 'low,high') and scalar metrics;
    ``phase.load_results`` reads the same values as the store gives."""
    from moesim.phase import load_results
    from moesim.store import RunRecord
    from moesim.sweeps import export_csv

    store = tmp_path / "s.sqlite"
    with RunStore(store) as st:
        for m in (2, 4):
            for g in ((0.5, 1.0), (0.5, 3.0)):
                cfg = moesim.preset("paper-s1-quick", n_experts=m, gamma_range=g)
                metrics = {"test_accuracy": 90.0 + m + g[1], "dispatch_entropy": 0.5, "distinct_majority": m == 4,
                           "majority_experts": [0, m - 1, 1, 2], "final_loss": 0.1}
                st.commit(RunRecord(config=cfg.to_dict(), seed=0, status="done", metrics=metrics), sweep="x")
        st.commit(RunRecord(config=moesim.preset("paper-s1-quick").to_dict(), seed=0, status="done"), sweep="other")
    export_csv(store, "x", tmp_path / "x.csv")
    csv, full = load_results(tmp_path / "x.csv"), load_results(store, "x")
    assert len(csv) == 4 and "n_clusters" not in csv  # only what varies
    key = ["n_experts", "gamma_range"]
    a, b = csv.sort_values(key).reset_index(drop=True), full.sort_values(key).reset_index(drop=True)
    assert a["gamma_range"].tolist() == b["gamma_range"].tolist() == [(0.5, 1.0), (0.5, 3.0)] * 2
    for col in ("n_experts", "test_accuracy", "success", "majority_experts"):
        assert a[col].tolist() == b[col].tolist()
    with pytest.raises(ConfigError, match="no runs"):
        export_csv(store, "nope", tmp_path / "n.csv")
