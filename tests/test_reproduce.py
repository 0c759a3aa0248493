"""The Table 1 protocol runs end to end and lays our numbers beside the paper's."""

from __future__ import annotations

import pytest

from moesim.cli import cli
from moesim.reproduce import table1

TINY = dict(n_train=300, n_test=100, n_steps=15, n_steps_single=15, n_filters=8, single_filters=8)


def test_table1_rows_hold_ours_and_the_papers():
    tab = table1(["s1"], ["single-linear", "moe-nonlinear"], seeds=2, quick=True, overrides=TINY)
    moe = tab.row("s1", "moe-nonlinear")
    assert moe.seeds == 2 and len(moe.per_seed_test_accuracy) == 2
    assert moe.paper_test_accuracy == (99.46, 0.55) and moe.dispatch_entropy is not None
    single = tab.row("s1", "single-linear")
    assert single.dispatch_entropy is None and single.paper_test_accuracy == (68.71, None)
    md = tab.markdown()
    assert "| s1 | moe-nonlinear |" in md and "99.46 ± 0.55" in md


def test_table1_rejects_unknown_names():
    with pytest.raises(ValueError, match="setting"):
        table1(["s7"], ["moe-nonlinear"], seeds=1)
    with pytest.raises(ValueError, match="model"):
        table1(["s1"], ["moe-quadratic"], seeds=1)


def test_reproduce_cli_bad_input(capsys):
    assert cli(["reproduce", "table1", "--settings", "s9", "--no-progress"]) == 2
    assert "setting" in capsys.readouterr().err
