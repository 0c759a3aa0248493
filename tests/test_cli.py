"""The command line: a tiny run end to end, its files, and bad input (exit code 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from moesim.cli import cli
from moesim.results import load_run

TINY = ["--set", "n_train=200", "--set", "n_test=100", "--set", "n_steps=5", "--set", "n_steps_single=5"]


def test_run_writes_loadable_results(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli(["run", "--preset", "official-s1-quick", "--model", "moe-nonlinear", "--seeds", "2", "--out", str(out),
              "--no-progress", *TINY])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| test_accuracy |" in text and "99.46 ± 0.55" in text  # the paper's value beside ours
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and "mean" in summary["stats"]["test_accuracy"]
    res = load_run(out)
    assert res.config.n_train == 200 and res.history["loss"].shape == (5, 2)
    assert np.allclose(res.summary["test_accuracy"], summary["per_seed"]["test_accuracy"])
    assert res.params.W.shape == (2, 8, 16, 50)


@pytest.mark.parametrize("args, words", [
    (["run", "--preset", "official-s9"], "preset"),
    (["run", "--model", "moe-quadratic"], "model"),
    (["run", "--set", "n_expert=3"], "unknown config field"),
    (["run", "--set", "n_experts=three"], "wrong type"),
    (["run", "--set", "n_patches=2"], "n_patches"),
    (["run", "--set", "patch_dim=5"], "patch_dim"),
    (["run", "--set", "gamma_range=2,1"], "gamma_range"),
    (["run", "--seeds", "0"], "seeds"),
    (["run", "--seeds", "5-2"], "seeds"),
    (["run", "--device", "tpu"], "device"),
    (["run", "--preset", "paper-s1-quick", "--engine", "fused", "--set", "dtype=float64", "--set", "n_train=100",
      "--set", "n_test=20", "--no-progress"], "engine='fused' cannot run here: dtype torch.float64"),
])
def test_bad_input_exits_2_with_one_message(args, words, capsys):
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "moesim: error:" in err and words in err and "Traceback" not in err


def test_bad_input_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "moesim.cli", "run", "--set", "sigma_p=-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "sigma_p" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "moesim.cli", "run", "--seeds", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--seeds" in proc.stderr and "Traceback" not in proc.stderr


def test_diverging_run_keeps_its_trajectory(tmp_path, capsys):
    out = tmp_path / "div"
    rc = cli(["run", "--preset", "paper-s1-quick", "--model", "single-nonlinear", "--seeds", "1", "--out", str(out),
              "--no-progress", "--set", "single_optimizer=gd", "--set", "lr_single=1e8", *TINY,
              "--set", "n_steps_single=50"])
    assert rc == 1
    assert "diverged at step" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged_at_step"] > 0
    assert load_run(out).history["loss"].shape[0] == summary["diverged_at_step"]
