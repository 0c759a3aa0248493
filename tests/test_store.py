"""The run store: keys, whole-run commits, DataFrame round trip, and clear errors for foreign files.

No Dask here; the sweep tests (test_sweeps.py) drive the store through real workers.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from moesim.config import preset
from moesim.store import (
    SCHEMA_VERSION, RunRecord, RunStore, StoreError, code_version, config_hash, configs, load_runs, run_key,
)


def _record(cfg, seed, status="done", acc=100.0, **kw):
    traj = {"history/loss": np.linspace(1, 0, 5) + seed, "snapshots/step": np.arange(3)}
    metrics = {"test_accuracy": acc, "dispatch_entropy": 0.01 * seed, "test_dispatch_counts": [[3, 0], [0, 4]]}
    return RunRecord(config=cfg.to_dict(), seed=seed, status=status, metrics=metrics, trajectory=traj, **kw)


def test_key_is_a_hash_of_config_seed_and_version():
    cfg = preset("paper-s1-quick", sigma_p=1.0)
    same = preset("paper-s1-quick", sigma_p=1)  # int and float spell one config
    assert run_key(cfg, 0) == run_key(same, 0) == run_key(cfg.to_dict(), 0)
    assert config_hash(cfg) == config_hash(same)
    assert len({run_key(cfg, 0), run_key(cfg, 1), run_key(cfg.replace(n_experts=4), 0),
                run_key(cfg, 0, version="0.0.0")}) == 4
    assert run_key(cfg, 0, code_version()) == run_key(cfg, 0)


def test_dataframe_round_trips_configs_metrics_and_trajectories(tmp_path):
    cfgs = [preset("official-s1-quick", "moe-nonlinear", n_experts=m, gamma_range=(0.5, g))
            for m in (2, 8) for g in (1.0, 3.0)]
    with RunStore(tmp_path / "s.sqlite") as store:
        for i, cfg in enumerate(cfgs):
            for seed in (0, 1):
                assert store.commit(_record(cfg, seed, acc=90.0 + i), sweep="grid")
        df = store.dataframe("grid")
        assert len(df) == 8 and df["key"].is_unique
        back = configs(df)
        assert back == [c for c in cfgs for _ in (0, 1)]
        assert all(isinstance(v, tuple) for v in df["gamma_range"])
        assert df["test_accuracy"].tolist() == [90.0 + i for i in range(4) for _ in (0, 1)]
        assert df["test_dispatch_counts"].iloc[0] == [[3, 0], [0, 4]]
        key = run_key(cfgs[3], 1)
        traj = store.trajectory(key)
        np.testing.assert_allclose(traj["history/loss"], np.linspace(1, 0, 5) + 1)
        with pytest.raises(KeyError):
            store.trajectory("nope")
    df2 = load_runs(tmp_path / "s.sqlite")  # one call, from the path
    assert df2["key"].tolist() == df["key"].tolist()


def test_a_finished_run_is_never_replaced_a_failed_one_is(tmp_path):
    cfg = preset("paper-s1-quick")
    with RunStore(tmp_path / "s.sqlite") as store:
        assert store.commit(_record(cfg, 0, status="failed", error="boom"))
        assert store.statuses([run_key(cfg, 0)]) == {run_key(cfg, 0): "failed"}
        assert store.commit(_record(cfg, 0, acc=99.0))  # a new attempt replaces the failure
        assert not store.commit(_record(cfg, 0, acc=12.0))  # a finished run stays
        df = store.dataframe()
        assert len(df) == 1 and df["status"].iloc[0] == "done" and df["test_accuracy"].iloc[0] == 99.0
        assert store.conn.execute("SELECT count(*) FROM trajectories").fetchone()[0] == 1


def test_a_commit_that_fails_midway_writes_nothing(tmp_path):
    """The row, its trajectory and its sweep membership are one transaction: a failure between
    them (here, a trajectory of the wrong type) rolls the row back."""
    cfg = preset("paper-s1-quick")
    with RunStore(tmp_path / "s.sqlite") as store:
        # the trajectory insert (after the row's) fails, as a full disk would
        store.conn.execute("CREATE TRIGGER no_traj BEFORE INSERT ON trajectories "
                           "BEGIN SELECT RAISE(ABORT, 'disk'); END")
        with pytest.raises(sqlite3.DatabaseError, match="disk"):
            store.commit(_record(cfg, 0), sweep="s")
        assert store.count() == 0 and store.count("s") == 0
        store.conn.execute("DROP TRIGGER no_traj")
        assert store.commit(_record(cfg, 0), sweep="s") and store.count("s") == 1


def test_foreign_files_get_a_clear_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        RunStore(text)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a moesim run store"):
        RunStore(other)
    with pytest.raises(StoreError, match="directory"):
        RunStore(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()  # reading does not create a store


@pytest.mark.parametrize("version, advice", [(SCHEMA_VERSION + 1, "upgrade moesim"), (0, "sweep into a new store")])
def test_other_schema_versions_get_a_clear_error(tmp_path, version, advice):
    path = tmp_path / "s.sqlite"
    RunStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=f"schema version {version}.*{advice}"):
        RunStore(path)


def test_the_cli_reports_a_foreign_store_with_exit_code_2(tmp_path, capsys):
    from moesim.cli import cli

    text = tmp_path / "runs.sqlite"
    text.write_text("not a store")
    assert cli(["sweep", "--grid", "n_experts=2,4", "--store", str(text), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not a moesim run store" in err and "Traceback" not in err
