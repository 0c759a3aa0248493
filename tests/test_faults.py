"""Nothing lost, nothing stale: output folders, interrupts, memory, validation, the run store.

Each test names the fault it injects and what a broken implementation would do. Runs are tiny
(n = 200, a few steps); the CLI is called in-process (``moesim.cli.cli``) except where a real
signal to a separate process is the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import moesim
from moesim import memory
from moesim.cli import cli
from moesim.config import Config, ConfigError, preset
from moesim.outputs import OutputError, cache_dir, default_out, prepare_out, write_atomic
from moesim.results import load_run, save_run
from moesim.store import RunRecord, RunStore, StaleRunsError, StoreError, code_version, run_key
from moesim.store.keys import _code_text
from moesim.sweeps import SweepSpec, run_sweep
from moesim.training import TrainingInterrupted, train

TINY = ["--preset", "paper-s1-quick", "--set", "n_train=200", "--set", "n_test=200", "--set", "n_steps=20",
        "--no-progress"]
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def one_clean_line(err: str, *words: str) -> None:
    """The CLI's bad-input contract: one line, no traceback, naming what was wrong."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("moesim: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def no_training(monkeypatch):
    """Training fails the test: the check under test must come before any of it."""
    def boom(*a, **k):
        raise AssertionError("training started before the check")

    monkeypatch.setattr("moesim.training.train", boom)


# --- 1. output folders ---------------------------------------------------------------------------

def test_existing_out_is_refused_then_replaced_whole(tmp_path, capsys):
    """The issue's sequence: run into ``ow``; a second run (M = 4) is refused; with --overwrite a
    diverged run replaces the folder whole, so no params.pt of the M = 8 run is left beside its config.
    (Broken: save_run writing into the existing folder: exit 0 and a mixed folder.)"""
    ow = tmp_path / "ow"
    assert cli(["run", *TINY, "--seeds", "3", "--out", str(ow)]) == 0
    first = (ow / "config.json").read_text()
    capsys.readouterr()
    assert cli(["run", *TINY, "--seeds", "5", "--set", "n_experts=4", "--out", str(ow)]) == 2
    one_clean_line(capsys.readouterr().err, "--out", "--overwrite")
    assert (ow / "config.json").read_text() == first  # untouched
    assert cli(["run", *TINY, "--seeds", "7", "--set", "lr_expert=1e30", "--out", str(ow), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert ".result" not in err and "diverged" in err
    assert sorted(p.name for p in ow.iterdir()) == ["config.json", "summary.json", "trajectory.npz"]
    summary = json.loads((ow / "summary.json").read_text())
    assert summary["preset"] == "paper-s1-quick" and summary["model"] == "moe-nonlinear"
    assert summary["status"] == "diverged" and summary["incomplete"] is True
    res = load_run(ow)
    assert res.config.lr_expert == 1e30 and res.params is None and res.seeds == list(range(7))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ow.")]  # no temporary folders left


def test_load_run_refuses_a_folder_that_mixes_runs(tmp_path):
    """params.pt of another run beside config.json (what the old in-place writer left): ValueError,
    not a config with M = 8 and parameters with M = 4. (Broken: no shape check.)"""
    cfg = preset("paper-s1-quick", n_train=200, n_test=200, n_steps=5)
    save_run(train(cfg, 2), tmp_path / "a")
    save_run(train(cfg.replace(n_experts=4), 2), tmp_path / "b")
    (tmp_path / "a" / "params.pt").write_bytes((tmp_path / "b" / "params.pt").read_bytes())
    with pytest.raises(ValueError, match="mixes runs"):
        load_run(tmp_path / "a")


def test_default_out_is_new_every_time(tmp_path, monkeypatch):
    """Two runs in the same second get two folders (suffix -2), never the same one; reproduce no
    longer defaults to a fixed runs/table1. (Broken: a time-stamped name without the collision suffix.)"""
    monkeypatch.setattr(time, "strftime", lambda fmt: "20260101-000000")
    a = prepare_out(default_out("run", "p-m", root=tmp_path))
    (a / "x").write_text("1")
    b = default_out("run", "p-m", root=tmp_path)
    assert a.name == "run-p-m-20260101-000000" and b.name == "run-p-m-20260101-000000-2"
    import argparse

    from moesim.commands.reproduce import configure_parser

    p = argparse.ArgumentParser()
    configure_parser(p)
    assert p.parse_args(["table1"]).out is None


def test_atomic_write_failure_leaves_the_old_folder(tmp_path):
    """A writer that fails half way (disk full, Ctrl-C) leaves the old results as they were and no
    temporary folder. (Broken: writing in place.)"""
    out = tmp_path / "r"
    write_atomic(out, lambda d: (d / "a.txt").write_text("old"))

    def half(d: Path) -> None:
        (d / "a.txt").write_text("new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_atomic(out, half, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["r"] and (out / "a.txt").read_text() == "old"
    with pytest.raises(OutputError, match="--overwrite"):
        write_atomic(out, lambda d: None)


def test_atomic_replace_failing_at_the_rename_puts_the_old_folder_back(tmp_path, monkeypatch):
    """The old folder is moved aside, then renaming the new one in fails: the old one goes back."""
    out = tmp_path / "r"
    write_atomic(out, lambda d: (d / "a.txt").write_text("old"))
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr("moesim.outputs.os.replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_atomic(out, lambda d: (d / "a.txt").write_text("new"), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["r"] and (out / "a.txt").read_text() == "old"


@pytest.mark.parametrize("command", [["verify", "--claims", "lemma5.1"], ["reproduce", "table1"]])
def test_verify_and_reproduce_refuse_a_non_empty_out(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("moesim.claims.run_claims", lambda *a, **k: pytest.fail("claims ran"))
    monkeypatch.setattr("moesim.reproduce.table1", lambda *a, **k: pytest.fail("training ran"))
    (tmp_path / "keep.md").write_text("earlier results")
    assert cli([*command, "--no-progress", "--out", str(tmp_path)]) == 2
    one_clean_line(capsys.readouterr().err, "--out", "--overwrite")
    assert (tmp_path / "keep.md").read_text() == "earlier results"


# --- 2. unwritable outputs are found before any work ---------------------------------------------

@pytest.mark.parametrize("command", [["run", *TINY, "--seeds", "1"], ["verify", "--claims", "lemma5.1"],
                                     ["reproduce", "table1"]])
def test_unwritable_out_fails_before_training(command, tmp_path, capsys, monkeypatch, no_training):
    monkeypatch.setattr("moesim.claims.run_claims", lambda *a, **k: pytest.fail("claims ran"))
    monkeypatch.setattr("moesim.reproduce.table1", lambda *a, **k: pytest.fail("training ran"))
    (tmp_path / "afile").write_text("")
    assert cli([*command, "--out", str(tmp_path / "afile" / "out")]) == 2
    one_clean_line(capsys.readouterr().err, "--out", "is a file")


def test_sweep_export_is_checked_before_the_store_or_dask(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    store = tmp_path / "s.sqlite"
    assert cli(["sweep", *TINY, "--grid", "n_experts=2,4", "--store", str(store),
                "--export", str(tmp_path / "afile" / "x.csv")]) == 2
    one_clean_line(capsys.readouterr().err, "--export", "is a file")
    assert not store.exists()


# --- 3. memory ------------------------------------------------------------------------------------

def test_memory_check_names_the_parameter_before_allocating(capsys, no_training):
    """n_train = 10^9 asked for 8 GB over 25 s before a raw allocator error; now a one-line error
    naming n_train and the override, in well under a second. (Broken: no check: MemoryError/abort.)"""
    t0 = time.perf_counter()
    assert cli(["run", *TINY, "--set", "n_train=1000000000", "--seeds", "1"]) == 2
    one_clean_line(capsys.readouterr().err, "n_train=1000000000", "--no-memory-check", "GiB")
    assert time.perf_counter() - t0 < 5


def test_memory_check_in_the_api_and_its_override(monkeypatch):
    """train() checks before allocating; check_memory=False trains anyway. The available memory is
    set just below a tiny run's estimate, so a missing check trains (and fails the test) cheaply."""
    cfg = preset("paper-s1-quick", n_train=200, n_test=200, n_steps=2)
    with pytest.raises(memory.MemoryCheckError, match="n_train=1000000000"):
        memory.check(cfg.replace(n_train=10**9), 1)  # the real available memory
    with pytest.raises(ConfigError, match="seeds=50"):
        memory.check(cfg, 50, available=memory.RUNTIME_BYTES)
    assert memory.check(cfg, 1, available=2**40) == memory.total(memory.estimate(cfg, 1))
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": memory.RUNTIME_BYTES)
    with pytest.raises(memory.MemoryCheckError, match="check_memory=False"):
        train(cfg, 1)
    train(cfg, 1, check_memory=False)  # the override trains


def test_huge_seed_count_is_refused_before_the_list_is_built(capsys, no_training, monkeypatch):
    """--seeds 1000000000 built a 10^9-element list (MemoryError traceback). The cap is checked
    first on a lowered cap (a missing check then builds only a short list and fails the test)."""
    monkeypatch.setattr("moesim.arguments.MAX_SEEDS", 100)
    for text in ("101", "0-100", ",".join(map(str, range(101)))):
        assert cli(["run", *TINY, "--seeds", text]) == 2
        one_clean_line(capsys.readouterr().err, "--seeds", "at most 100")
    monkeypatch.undo()
    assert cli(["run", *TINY, "--seeds", "1000000000"]) == 2
    one_clean_line(capsys.readouterr().err, "--seeds")
    assert cli(["run", *TINY, "--seeds", "0-999999999"]) == 2
    one_clean_line(capsys.readouterr().err, "--seeds")


@pytest.mark.slow
def test_memory_estimate_within_a_factor_2_of_peak_rss(tmp_path):
    """benchmarks/results/calibration/memory.md: estimate / peak RSS in [0.5, 2] (measured 0.88-1.35)."""
    script = Path(__file__).parents[1] / "benchmarks" / "memory_calibration.py"
    out = subprocess.run([sys.executable, str(script), "paper-s1", "moe-nonlinear", "2", "auto", "n_train=100000",
                          "n_test=50000", "n_steps=3"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1])))
    ratio = json.loads(out.stdout.strip().splitlines()[-1])["ratio"]
    assert 0.5 <= ratio <= 2.0


# --- 4. interrupts ---------------------------------------------------------------------------------

def test_api_keyboard_interrupt_keeps_the_completed_steps():
    """Ctrl-C in train: TrainingInterrupted (a KeyboardInterrupt) whose result holds the completed
    steps and parameters. (Broken: a bare KeyboardInterrupt that drops everything.)"""
    cfg = preset("paper-s1-quick", n_train=200, n_test=200, n_steps=50)

    def progress(step, total):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as exc:
        train(cfg, 2, progress=progress)
    res = exc.value.result
    assert exc.value.steps_done == 7 and res.history["loss"].shape == (7, 2)
    assert res.info["incomplete"] is True and res.params.W.shape == (2, 8, 16, 50)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_run_writes_an_incomplete_run(sig, code, tmp_path, capsys, monkeypatch):
    """A real signal to this process at step 5: the run stops at the end of that step, writes what
    was trained (summary.json says incomplete, load_run reads it) and exits 130/143.
    (Broken: the default handlers: nothing written, or a traceback.)"""
    real_train = moesim.training.train

    def train_then_signal(cfg, seeds, progress=None, **kw):
        def hook(step, total):
            if step == 5:
                os.kill(os.getpid(), sig)
            progress(step, total)

        return real_train(cfg, seeds, progress=hook, **kw)

    monkeypatch.setattr("moesim.training.train", train_then_signal)
    out = tmp_path / "int"
    assert cli(["run", *TINY, "--set", "n_steps=1000", "--seeds", "2", "--out", str(out)]) == code
    err = capsys.readouterr().err
    assert signal.Signals(sig).name in err and "incomplete" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incomplete"] is True and summary["steps_done"] == 5
    assert summary["signal"] == signal.Signals(sig).name
    res = load_run(out)
    assert res.info["incomplete"] is True and res.history["loss"].shape == (5, 2) and res.params is not None
    assert signal.getsignal(sig) is not None and signal.getsignal(signal.SIGTERM) is not train_then_signal


@pytest.mark.slow
def test_sigterm_to_a_separate_moesim_run_process(tmp_path):
    """The real command in its own process, killed with SIGTERM once it has used 4 s of CPU."""
    out = tmp_path / "int"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "moesim.cli", "run", *TINY, "--set", "n_steps=1000000",
                             "--seeds", "1", "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    tick = os.sysconf("SC_CLK_TCK")
    deadline = time.time() + 120
    while time.time() < deadline:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        if (int(fields[11]) + int(fields[12])) / tick > 4:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert load_run(out).info["incomplete"] is True


# --- 5. config validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("shuffle_patches", "false"), ("expert_bias", "no"), ("test_noise", 2), ("test_noise", None),
    ("shared_init", 1.0), ("device", 5), ("device", None), ("device", "cuda:-1"), ("device", "tpu"),
    ("alpha_range", 1.0), ("alpha_range", None), ("alpha_range", (1.0,)), ("alpha_range", ("a", 2)),
    ("n_train", 2.0), ("n_train", True), ("lr_expert", "0.1"), ("activation", ["cubic"]), ("dtype", None),
])
def test_every_field_type_is_checked(field, value):
    """Each of these was accepted or raised AttributeError/TypeError. (Broken: validate without
    the type check: shuffle_patches='false' is truthy and acts as True.)"""
    with pytest.raises(ConfigError, match=field):
        preset("paper-s1-quick", **{field: value})
    with pytest.raises(ConfigError, match=field):
        Config(**{field: value}).validate()


def test_bad_whole_inputs_raise_config_error():
    for bad in (lambda: preset(None), lambda: preset("paper-s1", model=["moe-linear"]),
                lambda: Config.from_dict([]), lambda: Config.from_dict({"alpha_range": 3})):
        with pytest.raises(ConfigError):
            bad()


def test_a_range_given_as_a_list_is_the_tuple_config():
    """alpha_range=[1, 2] made an unhashable Config unequal to the tuple one."""
    a, b = preset("paper-s1", alpha_range=[1.0, 2.0]), preset("paper-s1", alpha_range=(1.0, 2.0))
    assert a == b and hash(a) == hash(b)


def test_yaml_and_cli_values_are_checked(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("grid: {n_experts: [2, 4]}\nset: {expert_bias: 2}\n")
    assert cli(["sweep", str(spec), "--store", str(tmp_path / "s.sqlite"), "--dry-run"]) == 2
    one_clean_line(capsys.readouterr().err, "expert_bias")
    assert cli(["run", *TINY, "--set", "shuffle_patches=maybe"]) == 2
    one_clean_line(capsys.readouterr().err, "shuffle_patches")


# --- 6. stale runs in the store ----------------------------------------------------------------------

def test_code_text_ignores_docstrings_and_comments_not_code(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    b.write_text('"""Other doc."""\n# a comment\ndef f(x):\n    return x + 1  # why\n')
    c.write_text('"""Doc."""\ndef f(x):\n    return x + 2\n')
    assert _code_text(a) == _code_text(b) != _code_text(c)
    assert run_key(preset("paper-s1"), 0) == run_key(preset("paper-s1"), 0, code_version())
    assert "+code." in code_version()


def _tiny_spec() -> SweepSpec:
    return SweepSpec(name="stale", preset="paper-s1-quick", model="moe-nonlinear",
                     fixed=dict(n_train=200, n_test=100, n_steps=5, record_every=5), axes={"n_experts": [2]}, seeds=[0])


def test_runs_of_other_code_are_refused_then_recomputed(tmp_path):
    """A run stored by older code (another fingerprint) for the same config and seed: the sweep
    refuses before any worker starts; --retry-stale computes it with this code and takes the old
    row out of the sweep. (Broken: a version-only key: the old run silently reused.)"""
    from dask.distributed import Client

    spec = _tiny_spec()
    path = tmp_path / "s.sqlite"
    (cfg,) = spec.points()
    with RunStore(path) as store:
        store.commit(RunRecord(cfg.to_dict(), 0, "done", metrics={"test_accuracy": 1.0},
                               moesim_version="0.1.0+code.0000000000000000"), sweep="stale")
    with pytest.raises(StaleRunsError, match="--retry-stale"):
        run_sweep(spec, path, progress=False)  # no client: it would start a LocalCluster after the check
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        rep = run_sweep(spec, path, client=client, progress=False, retry_stale=True)
    assert rep.n_computed == 1
    with RunStore(path, readonly=True) as store:
        df = store.dataframe("stale")
        assert list(df["moesim_version"]) == [code_version()] and store.count() == 2


def test_dry_run_reports_stale_runs(tmp_path, capsys):
    spec = _tiny_spec()
    path = tmp_path / "s.sqlite"
    with RunStore(path) as store:
        store.commit(RunRecord(spec.points()[0].to_dict(), 0, "done", moesim_version="0.0.9"))
    args = ["sweep", "--preset", "paper-s1-quick", "--set", "n_train=200", "--set", "n_test=100", "--set", "n_steps=5",
            "--set", "record_every=5", "--grid", "n_experts=2", "--seeds", "0-0", "--store", str(path), "--dry-run"]
    assert cli(args) == 0
    assert "1 stale" in capsys.readouterr().out


# --- 7. store and path errors --------------------------------------------------------------------------

def test_a_read_only_store_is_found_before_dask(tmp_path, monkeypatch):
    """os.access says the file is not writable (the tests may run as root, who may write anyway):
    a StoreError naming it, before any worker. (Broken: sqlite 'attempt to write a readonly
    database' after Dask started.)"""
    path = tmp_path / "s.sqlite"
    RunStore(path).close()
    real = os.access
    monkeypatch.setattr("moesim.store.database.os.access", lambda p, mode: False if Path(p) == path else real(p, mode))
    with pytest.raises(StoreError, match="read-only"):
        run_sweep(_tiny_spec(), path, progress=False)
    with RunStore(path, readonly=True) as store:  # reading still works
        assert store.count() == 0


@pytest.mark.skipif(ROOT, reason="root may write to read-only files and folders")
def test_real_read_only_file_and_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "s.sqlite"
    RunStore(path).close()
    path.chmod(0o444)
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="read-only"):
            RunStore(path)
        with RunStore(path, readonly=True) as store:  # a valid store in a read-only folder
            assert store.count() == 0
    finally:
        folder.chmod(0o755)


def test_empty_file_is_not_made_a_store_even_by_a_dry_run(tmp_path, capsys):
    path = tmp_path / "zero.sqlite"
    path.write_bytes(b"")
    assert cli(["sweep", *TINY, "--grid", "n_experts=2,4", "--store", str(path), "--dry-run"]) == 2
    one_clean_line(capsys.readouterr().err, "empty file", str(path))
    assert path.stat().st_size == 0
    path.write_text("not a database at all, just text")
    with pytest.raises(StoreError, match="not an SQLite database"):
        RunStore(path)


@pytest.mark.parametrize("where", ["afile/s.sqlite", "/proc/no-such-dir/s.sqlite"])
def test_impossible_store_paths_are_one_line(where, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    path = where if where.startswith("/") else str(tmp_path / where)
    assert cli(["sweep", *TINY, "--grid", "n_experts=2,4", "--store", path]) == 2
    one_clean_line(capsys.readouterr().err, "run store", path)


def test_a_killed_sweeps_log_row_is_closed_on_the_next_start(tmp_path):
    """SIGKILL leaves the sweep_log row open (finished_at NULL); the next start of that sweep
    closes it as interrupted with the runs it committed. (Broken: open forever.)"""
    spec = _tiny_spec()
    with RunStore(tmp_path / "s.sqlite") as store:
        first = store.log_start("stale", spec.to_dict(), 1, 0, "test")  # then the process is killed
        store.commit(RunRecord(spec.points()[0].to_dict(), 0, "done"), sweep="stale")
        store.log_start("stale", spec.to_dict(), 1, 1, "test")
        row = store.sweep_log("stale")[0]
        assert row["id"] == first and row["interrupted"] == 1 and row["n_computed"] == 1
        assert row["finished_at"] is not None
        assert store.sweep_log("stale")[1]["finished_at"] is None  # the new one is running


# --- 8. checks made up front -------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_sweep_on_a_missing_gpu_stops_before_dask(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert cli(["sweep", *TINY, "--grid", "n_experts=2,4", "--device", "cuda", "--store", str(store)]) == 2
    one_clean_line(capsys.readouterr().err, "device='cuda'")
    assert not store.exists()


@pytest.mark.parametrize("argv, words", [
    (["--device", "tpu", "--claims", "lemma5.1"], ["device='tpu'"]),
    (["--claims", ""], ["--claims"]),
])
def test_verify_checks_its_arguments_first(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("moesim.claims.run_claims", lambda *a, **k: pytest.fail("claims ran"))
    assert cli(["verify", "--no-progress", "--out", str(tmp_path / "v"), *argv]) == 2
    one_clean_line(capsys.readouterr().err, *words)


@pytest.mark.parametrize("option", ["--store", "--export"])
def test_verify_scaling_checks_its_store_and_export_first(option, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("moesim.claims.run_claims", lambda *a, **k: pytest.fail("claims ran"))
    (tmp_path / "afile").write_text("")
    argv = ["verify", "--scaling", "--no-progress", "--out", str(tmp_path / "v"), "--store",
            str(tmp_path / ("afile/s.sqlite" if option == "--store" else "s.sqlite"))]
    if option == "--export":
        argv += ["--export", str(tmp_path / "afile" / "x")]
    assert cli(argv) == 2
    one_clean_line(capsys.readouterr().err, option, "is a file")


def test_official_data_seed_range_is_named(capsys):
    assert cli(["run", "--preset", "official-s1-quick", "--set", "data_seed=1099511627776"]) == 2
    one_clean_line(capsys.readouterr().err, "data_seed=1099511627776", "data_rng='official'")
    preset("paper-s1", data_seed=1099511627776)  # the torch generator takes it


def test_cache_dir_rule(monkeypatch, tmp_path):
    monkeypatch.delenv("MOESIM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "moesim"
    from moesim.engines import fused

    assert cache_dir("data") == cache_dir() / "data" and fused.kernel_path("k").parent == cache_dir() / "kernels"
    monkeypatch.setenv("MOESIM_CACHE", str(tmp_path / "m"))
    assert cache_dir() == tmp_path / "m"
    monkeypatch.delenv("MOESIM_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "moesim"


# --- the README's Reliability numbers ------------------------------------------------------------------

def test_the_reliability_case_lists_are_clean(tmp_path):
    """Every command-line and API case of ``benchmarks/faults.py`` (the README's counts) is clean;
    its fault cases need real processes and run in the script."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("faults_script", Path(__file__).parents[1] / "benchmarks" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    for argv, word in faults.cli_cases(tmp_path):
        rc, err = faults.run_cli(argv)
        assert rc == 2, (argv, err)
        one_clean_line(err, word)
    for call, word in faults.api_cases():
        with pytest.raises(ConfigError, match=word):
            call()
