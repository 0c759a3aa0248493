"""Algorithm 1 as a batched program: seeds, determinism, stopping rules, divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import moesim
from moesim import preset
from moesim.stopping import stop_rule as _stop_rule
from moesim.training import DivergenceError

TINY = dict(n_train=300, n_test=100, n_experts=4, n_filters=6, single_filters=8, dtype="float64", record_every=5)


@pytest.mark.parametrize("name, model, steps", [
    ("official-s1-quick", "moe-nonlinear", 40), ("paper-s1-quick", "moe-nonlinear", 30),
    ("official-s1-quick", "moe-linear", 30), ("official-s1-quick", "single-nonlinear", 30),
])
def test_batched_seeds_equal_separate_runs(name, model, steps):
    """Training S seeds as one tensor program gives each seed the result it gets alone: the same
    per-step loss, dispatch, and final parameters (float64, to rounding)."""
    cfg = preset(name, model, n_steps=steps, n_steps_single=steps, **TINY)
    together = moesim.train(cfg, [3, 7, 11])
    for i, s in enumerate([3, 7, 11]):
        alone = moesim.train(cfg, [s])
        np.testing.assert_allclose(together.history["loss"][:, i], alone.history["loss"][:, 0], rtol=1e-10)
        assert (together.history["dispatch_counts"][:, i] == alone.history["dispatch_counts"][:, 0]).all()
        torch.testing.assert_close(together.params.W[i], alone.params.W[0], rtol=1e-9, atol=1e-14)
        assert together.summary["test_accuracy"][i] == alone.summary["test_accuracy"][0]
        assert together.summary["updates"][i] == alone.summary["updates"][0]


def test_same_seed_same_result_bitwise():
    cfg = preset("official-s1-quick", "moe-nonlinear", n_steps=20, **{**TINY, "dtype": "float32"})
    a, b = moesim.train(cfg, [0, 1]), moesim.train(cfg, [0, 1])
    assert torch.equal(a.params.W, b.params.W) and (a.history["loss"] == b.history["loss"]).all()
    c = moesim.train(cfg, [2])
    assert not torch.equal(a.params.W[0], c.params.W[0])


@pytest.mark.parametrize("name", ["official-s1-quick", "paper-s1-quick"])
def test_fast_engine_equals_autograd_engine(name):
    """The hand-written step and autograd through the routed forward pass train identically."""
    cfg = preset(name, "moe-nonlinear", n_steps=25, **TINY)
    fast, ref = moesim.train(cfg, [0, 1], engine="eager"), moesim.train(cfg, [0, 1], engine="autograd")
    np.testing.assert_allclose(fast.history["loss"], ref.history["loss"], rtol=1e-10)
    torch.testing.assert_close(fast.params.W, ref.params.W, rtol=1e-9, atol=1e-14)


def test_official_moe_early_stopping_rule():
    """The official early-stopping rule (book/official_code.md): keep the running minimum; when the
    loss does not improve, stop if it rose by more than 0.02 or if it is already <= 0.314 -- before taking the step."""
    cfg = preset("official-s1")
    best = torch.tensor([0.50, 0.50, 0.320, 0.3130])
    loss = torch.tensor([0.49, 0.53, 0.3139, 0.3135])  # improves / rises by > 0.02 / improves / up but <= 0.314
    stop, new_best = _stop_rule(cfg, 10, loss, best)
    assert stop.tolist() == [False, True, False, True]
    assert new_best.tolist() == pytest.approx([0.49, 0.50, 0.3139, 0.3130])


def test_official_single_stopping_rule_waits_for_epoch_500():
    cfg = preset("official-s1", "single-nonlinear")
    best, loss = torch.tensor([0.3]), torch.tensor([0.4])
    assert not _stop_rule(cfg, 500, loss, best)[0].item()
    assert _stop_rule(cfg, 501, loss, best)[0].item()


def test_early_stopped_runs_freeze_and_report_their_stop_step():
    cfg = preset("official-s1-quick", "moe-nonlinear", n_test=200, n_steps=501, record_every=1000)
    res = moesim.train(cfg, [0])
    for i in range(1):
        stop = int(res.summary["updates"][i])
        assert res.summary["stopped_early"][i] and stop < 501
        # the reported entropy is the one of the forward pass at which the rule fired
        # (book/official_code.md, 'The protocol behind Table 1')
        assert res.summary["dispatch_entropy"][i] == res.history["dispatch_entropy"][stop, i]
        assert np.isnan(res.history["loss"][stop + 1:, i]).all()
        assert res.history["loss"][stop, i] <= 0.314 or res.history["loss"][stop, i] > np.nanmin(
            res.history["loss"][:stop, i]) + 0.02


def test_divergence_names_the_step_and_keeps_the_trajectory():
    """A run whose loss becomes inf/NaN stops with an error naming the step; the steps before it
    are kept in the error's result."""
    cfg = preset("paper-s1-quick", "single-nonlinear", single_optimizer="gd", lr_single=1e8, n_steps_single=50,
                 **TINY)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+") as err:
        moesim.train(cfg, [0])
    e = err.value
    assert 0 < e.step < 50 and e.seeds == [0]
    kept = e.result.history["loss"]
    assert kept.shape[0] == e.step and np.isfinite(kept).all()


def test_zero_router_dispatches_uniformly_at_first():
    """Theta^(0) = 0 plus U[0,1] noise routes uniformly: the first step's dispatch entropy is ln K
    up to the plug-in estimator's bias, about (K-1)M/(2n) = 0.003 at n = 4000 (the Miller-Madow bias of
    the plug-in entropy)."""
    cfg = preset("official-s1-quick", "moe-nonlinear", n_steps=1)
    res = moesim.train(cfg, [0, 1, 2])
    ent = res.history["dispatch_entropy"][0]
    assert np.all(ent > math.log(4) - 0.02)
    load = res.history["load"][0]
    n, M = cfg.n_train, cfg.n_experts
    assert np.all(np.abs(load - n / M) < 5 * math.sqrt(n / M))


def test_trajectory_records_every_quantity():
    cfg = preset("official-s1-quick", "moe-nonlinear", n_steps=12, record_every=5, **{
        k: v for k, v in TINY.items() if k != "record_every"})
    res = moesim.train(cfg, [0, 1])
    S, M, K = 2, cfg.n_experts, cfg.n_clusters
    assert res.history["dispatch_counts"].shape == (12, S, K, M)
    assert (res.history["dispatch_counts"].sum((2, 3)) == cfg.n_train).all()
    assert list(res.snapshots["step"]) == [0, 5, 10, 12]
    for key in ("router_center", "router_feature", "expert_feature", "expert_center", "expert_cluster_accuracy"):
        assert res.snapshots[key].shape == (4, S, M, K), key
    assert res.snapshots["test_accuracy"].shape == (4, S)


def test_bad_seeds_and_device():
    cfg = preset("official-s1-quick", n_steps=1, **TINY)
    with pytest.raises(ValueError, match="seeds"):
        moesim.train(cfg, [])
    with pytest.raises(ValueError, match="duplicates"):
        moesim.train(cfg, [1, 1])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cuda'"):
            moesim.train(cfg.replace(device="cuda"), [0])


@pytest.mark.parametrize("model", ["moe-nonlinear", "single-nonlinear"])
def test_evaluation_in_chunks_equals_one_pass(model):
    """``evaluate`` works through the samples in memory-sized chunks (its memory does not grow with
    n); the predictions and routed experts do not depend on the chunk size."""
    from moesim.model import second_layer
    from moesim.evaluation import evaluate
    from moesim.training import make_problem

    cfg = preset("official-s1-quick", model, n_steps=10, n_steps_single=10, **TINY)
    res = moesim.train(cfg, [0, 1])
    prob = make_problem(cfg)
    a = second_layer(cfg, cfg.filters, torch.float64, "cpu")
    noise = torch.rand(2, prob.x.shape[0], cfg.experts, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = evaluate(cfg, res.params, prob.x, prob.x_sum, prob.y, noise, a, chunk_elements=2**30)
    for chunk in (1, 5000):  # one sample per chunk, and a few dozen
        parts = evaluate(cfg, res.params, prob.x, prob.x_sum, prob.y, noise, a, chunk_elements=chunk)
        assert torch.equal(parts[0], whole[0]) and torch.equal(parts[1], whole[1])


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_prefetched_router_noise_is_torch_rand(scale):
    """Training draws the next step's noise on a background thread into reused buffers: the same
    numbers, in the same order, as torch.rand on each run's generator (without and with prefetch)."""
    from moesim.model import generator
    from moesim.noise import NoiseStream

    cfg = preset("official-s1", noise_scale=scale)
    gens = [generator(s, "router-noise", "cpu") for s in (0, 5)]
    plain = NoiseStream(cfg, [0, 5], 300, 8, "cpu", torch.float32, "router-noise")
    fetched = NoiseStream(cfg, [0, 5], 300, 8, "cpu", torch.float32, "router-noise", prefetch=True)
    try:
        for _ in range(4):
            want = torch.stack([torch.rand(300, 8, generator=g) for g in gens]) * scale
            assert torch.equal(plain.draw(), want)
            assert torch.equal(fetched.draw(), want)
    finally:
        fetched.close()
    assert fetched.pool is None
