"""``RunResult``'s repr is a short summary, and ``stopped_at`` finds the NaN rows of early stopping.

The dataclass repr printed every array (about 42,000 characters for ten seeds); the summary names
the model, the preset, the seeds and the shapes, and where runs stopped early.
"""

from __future__ import annotations

import numpy as np

import moesim
from moesim import preset
from moesim.training import RunResult


def fake_result(cfg, seeds, stops):
    """A RunResult with the array shapes of a real run of ``cfg``; seed i's history is NaN from stops[i]."""
    T, S = cfg.n_steps, len(seeds)
    loss = np.ones((T, S), dtype=np.float32)
    for i, t in enumerate(stops):
        loss[t:, i] = np.nan
    history = dict(loss=loss, train_accuracy=loss.copy(), dispatch_entropy=loss.astype(np.float64),
                   dispatch_counts=np.zeros((T, S, cfg.n_clusters, cfg.n_experts), dtype=np.int64))
    snapshots = dict(step=np.arange(0, T, 10), test_accuracy=np.zeros((len(range(0, T, 10)), S)))
    summary = dict(seed=np.asarray(seeds), test_accuracy=np.full(S, 99.5))
    return RunResult(cfg, list(seeds), history, snapshots, summary, wall_time=12.3)


def test_repr_is_short_and_names_preset_seeds_and_shapes():
    cfg = preset("official-s1", "moe-nonlinear")
    r = fake_result(cfg, range(10), [cfg.n_steps] * 10)
    text = repr(r)
    # the default dataclass repr of this object is about 10,000 characters (it prints the arrays)
    assert len(text) < 1000, len(text)
    assert "preset official-s1" in text and "M=8" in text and "activation='cubic'" in text
    assert "10 seeds [0, ..., 9]" in text
    assert "loss, train_accuracy, dispatch_entropy (501, 10)" in text
    assert "dispatch_counts (501, 10, 4, 8)" in text
    assert "stopped early" not in text
    assert "preset paper-s2" in repr(fake_result(preset("paper-s2", "single-linear"), [4], [500]))
    assert "preset custom" in repr(fake_result(preset("paper-s1", gate="noisy_logit"), [0], [500]))
    assert "preset paper-s1" in repr(fake_result(preset("paper-s1-quick", n_steps=300), [0], [300]))


def test_repr_names_the_seeds_that_stopped_early():
    cfg = preset("official-s1", "moe-nonlinear")
    r = fake_result(cfg, [5, 6, 7], [182, cfg.n_steps, 40])
    assert r.stopped_at().tolist() == [182, 501, 40]
    assert "5@182, 7@40" in repr(r) and "np.nanmean" in repr(r)


def test_stopped_at_matches_the_training_loop():
    """On a real run with the official early stopping, history rows after the last update are NaN:
    ``stopped_at`` is the number of updates plus one (the loss row of the step that stopped)."""
    cfg = preset("official-s1-quick", "moe-nonlinear", n_train=400, n_test=200)
    r = moesim.train(cfg, [0, 2])
    stop = r.stopped_at()
    assert r.summary["stopped_early"].any(), "this small run is expected to stop early; pick other seeds"
    for i, t in enumerate(stop):
        if r.summary["stopped_early"][i]:
            assert t == r.summary["updates"][i] + 1
            assert np.isfinite(r.history["loss"][:t, i]).all() and np.isnan(r.history["loss"][t:, i]).all()
        else:
            assert t == cfg.n_steps
    assert len(repr(r)) < 1000
