"""The fused C step (moesim.engines.fused) against the eager reference (moesim.engines.eager), and engine selection.

The fused kernel computes in float32; the reference runs in float64 on the same inputs, so the
comparisons allow float32 rounding (relative 1e-5 of each tensor's largest entry). Routing is
discrete: each test first checks that no sample's top two noisy logits are within 1e-5 (float32
rounding of logits of size 1-10 is ~1e-6), so that rounding cannot flip a routing decision.
"""

from __future__ import annotations

import pytest
import torch

import moesim
from moesim import preset
from moesim.engines import fused
from moesim.model import Params, init_params, router_logits, second_layer
from moesim.engines.eager import moe_step, single_step
from moesim.training import make_problem

F32, F64 = torch.float32, torch.float64

pytestmark = pytest.mark.skipif(fused.available(preset("paper-s1"), torch.zeros(1, 1, 1)) is not None,
                                reason="the fused kernel cannot be built here (no C compiler)")


def _setup(semantics, n=257, seeds=(0, 1, 2), **over):
    """A problem with remainders everywhere: n not a multiple of the sample block or chunk count,
    and (by default from the callers) M, J, P, d that need padding or a remainder loop."""
    cfg = preset(f"{semantics}-s1-quick", n_train=n, n_test=8, dtype="float64", **over)
    prob = make_problem(cfg)
    a = second_layer(cfg, cfg.filters, F64, "cpu")
    p = init_params(cfg, list(seeds), dtype=F64)
    g = torch.Generator().manual_seed(11)
    W = p.W / cfg.init_sigma * 0.02  # O(1) pre-activations: every term of the gradient is visible
    theta = torch.randn(p.theta.shape, generator=g, dtype=F64) * 0.05
    b = None if p.b is None else torch.randn(p.b.shape, generator=g, dtype=F64) * 0.1
    noise = torch.rand(len(seeds), n, cfg.experts, generator=g, dtype=F64)
    return cfg, prob, a, Params(W, b, theta), noise


def _f32(params: Params) -> Params:
    return Params(params.W.float(), None if params.b is None else params.b.float(), params.theta.float())


def _assert_close(got, want):
    scale = want.abs().max().item()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale)


CASES = [  # (semantics, overrides): gates, losses, heads, bias, powers, and shapes needing padding
    ("official", dict()),  # noisy_logit gate, double-softmax loss, two heads, bias, M = 8, J = 16
    ("paper", dict()),  # softmax gate, logistic loss, no bias
    ("official", dict(gate="noisy_softmax", activation="power", power=4, n_experts=5, n_filters=10)),
    ("paper", dict(activation="power", power=2, n_experts=11, n_filters=20, n_patches=5, patch_dim=23)),
    ("paper", dict(activation="power", power=5, n_patches=3, n_clusters=2, patch_dim=9, loss="double_softmax_ce")),
    ("official", dict(activation="linear")),  # a linear expert: one inner product with sum_p x^(p)
    ("paper", dict(activation="power", power=1, n_experts=11)),
]


@pytest.mark.parametrize("semantics, over", CASES)
def test_fused_moe_step_equals_eager_step(semantics, over):
    cfg, prob, a, params, noise = _setup(semantics, **over)
    noisy = (router_logits(params, prob.x_sum) + noise).sort(-1, descending=True).values
    assert (noisy[..., 0] - noisy[..., 1]).min() > 1e-5, "a near tie in routing: pick another seed"
    ref = moe_step(cfg, params, prob.x, prob.x_sum, prob.y, noise, a)
    out = fused.moe_step(cfg, _f32(params), prob.x.float(), prob.x_sum.float(), prob.y.float(), noise.float(),
                         a.float())
    assert torch.equal(out.expert, ref.expert)
    _assert_close(out.margin, ref.margin)
    _assert_close(out.loss, ref.loss)
    assert len(out.grads) == len(ref.grads)
    for g, r in zip(out.grads, ref.grads):
        assert g.shape == r.shape
        _assert_close(g, r)


@pytest.mark.parametrize("semantics, over", [("official", dict()), ("paper", dict(single_filters=10, n_patches=6))])
def test_fused_single_step_equals_eager_step(semantics, over):
    cfg, prob, a, params, _ = _setup(semantics, architecture="single", **over)
    ref = single_step(cfg, params, prob.x, prob.y, a)
    out = fused.single_step(cfg, _f32(params), prob.x.float(), prob.y.float(), a.float())
    _assert_close(out.margin, ref.margin)
    _assert_close(out.loss, ref.loss)
    for g, r in zip(out.grads[:-1], ref.grads[:-1]):
        _assert_close(g, r)
    assert not out.grads[-1].any()  # no router


def test_fused_step_does_not_depend_on_thread_count():
    """Gradient partial sums follow chunks of samples fixed by n, summed in chunk order: the same
    bits with 1, 2 or 3 threads."""
    cfg, prob, a, params, noise = _setup("official", n=1001)
    args = (cfg, _f32(params), prob.x.float(), prob.x_sum.float(), prob.y.float(), noise.float(), a.float())
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            outs.append(fused.moe_step(*args))
    finally:
        torch.set_num_threads(before)
    for out in outs[1:]:
        assert torch.equal(out.margin, outs[0].margin) and torch.equal(out.loss, outs[0].loss)
        assert all(torch.equal(g, g0) for g, g0 in zip(out.grads, outs[0].grads))


def test_fused_argmax_follows_torch_on_nan():
    """torch.argmax counts a NaN as the maximum (first NaN wins); the fused routing does too."""
    cfg, prob, a, params, noise = _setup("official", n=40, seeds=(0,))
    noise = noise.float()
    noise[0, 3, 5] = float("nan")
    noise[0, 7, [2, 6]] = float("nan")
    out = fused.moe_step(cfg, _f32(params), prob.x.float(), prob.x_sum.float(), prob.y.float(), noise, a.float())
    want = (router_logits(_f32(params), prob.x_sum.float()) + noise).argmax(-1)
    assert out.expert[0, 3] == 5 and out.expert[0, 7] == 2
    assert torch.equal(out.expert, want)
    assert out.margin[0, 3].isnan() and out.loss[0].isnan()  # the run's mean loss: a divergence


def test_fused_training_follows_eager_training():
    """A whole float32 run: the fused engine's trajectory is the eager engine's, to float32 rounding."""
    cfg = preset("official-s1-quick", n_train=600, n_test=200, n_steps=30, record_every=10, dtype="float32")
    fast, ref = moesim.train(cfg, [0, 1], engine="fused"), moesim.train(cfg, [0, 1], engine="eager")
    assert fast.info["engine"] == "fused" and ref.info["engine"] == "eager"
    assert (fast.history["dispatch_counts"] == ref.history["dispatch_counts"]).all()
    torch.testing.assert_close(torch.from_numpy(fast.history["loss"]), torch.from_numpy(ref.history["loss"]),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fast.params.W, ref.params.W, rtol=1e-3, atol=1e-3 * ref.params.W.abs().max().item())


def test_engine_auto_picks_what_can_run():
    base = dict(n_train=200, n_test=50, n_steps=3, record_every=10)
    assert moesim.train(preset("paper-s1-quick", dtype="float32", **base), 1).info["engine"] == "fused"
    assert moesim.train(preset("paper-s1-quick", dtype="float64", **base), 1).info["engine"] == "eager"
    assert moesim.train(preset("paper-s1-quick", "moe-linear", dtype="float32", **base), 1).info["engine"] == "fused"
    assert moesim.train(preset("paper-s1-quick", activation="tanh", **base), 1).info["engine"] == "eager"
    assert moesim.train(preset("paper-s1-quick", "single-linear", dtype="float32", **base), 1).info["engine"] == "eager"


def test_engine_errors_name_the_reason():
    cfg = preset("paper-s1-quick", n_train=100, n_test=20, n_steps=2, dtype="float64")
    with pytest.raises(ValueError, match="engine='fused' cannot run here: dtype torch.float64"):
        moesim.train(cfg, 1, engine="fused")
    with pytest.raises(ValueError, match="engine='turbo' is not allowed; choose one of auto, fused, eager, autograd"):
        moesim.train(cfg, 1, engine="turbo")
    with pytest.raises(ValueError, match="cannot train load_balancing"):
        moesim.train(cfg.replace(load_balancing=0.1), 1, engine="eager")


def test_without_a_compiler_auto_falls_back_to_eager(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MOESIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fused, "_lib", None)
    monkeypatch.setattr(fused, "_lib_error", None)
    cfg = preset("paper-s1-quick", n_train=100, n_test=20, n_steps=2, dtype="float32")
    reason = fused.available(cfg, torch.zeros(1, 1, 1))
    assert reason is not None and "no C compiler" in reason
    assert moesim.train(cfg, 1).info["engine"] == "eager"
    with pytest.raises(ValueError, match="no C compiler"):
        moesim.train(cfg, 1, engine="fused")


@pytest.mark.parametrize("semantics, over", CASES[:3] + CASES[-2:])
def test_fused_forward_passes_equal_eager(semantics, over):
    """Evaluation through the fused kernel: every expert on every sample (``expert_outputs``) and
    the routed layer with and without router noise (``routed_outputs``), against the float64 eager
    reference; and ``evaluate`` / ``expert_cluster_accuracy`` give the same answers either way."""
    from moesim.model import expert_outputs_dense, expert_outputs_routed, gate_values
    from moesim.evaluation import evaluate, expert_cluster_accuracy

    cfg, prob, a, params, noise = _setup(semantics, **over)
    p32, x32, xs32, a32 = _f32(params), prob.x.float(), prob.x_sum.float(), a.float()
    _assert_close(fused.expert_outputs(cfg, p32, x32, a32), expert_outputs_dense(cfg, params, prob.x, a))
    for r in (None, noise):
        h = router_logits(params, prob.x_sum)
        noisy = h if r is None else h + r
        assert (noisy.sort(-1, descending=True).values.diff(dim=-1).abs()[..., 0] > 1e-5).all()
        expert = noisy.argmax(-1)
        f, gate, e = fused.routed_outputs(cfg, p32, x32, xs32, None if r is None else r.float(), a32)
        assert torch.equal(e, expert)
        _assert_close(gate, gate_values(cfg, h, noisy, expert))
        _assert_close(f, expert_outputs_routed(cfg, params, prob.x, a, expert))
    y32 = prob.y.float()
    for fn, args in ((evaluate, (p32, x32, xs32, y32, noise.float(), a32)),
                     (expert_cluster_accuracy, (p32, x32, y32, prob.cluster, a32))):
        got, want = fn(cfg, *args, engine="fused"), fn(cfg, *args, engine="eager")
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert torch.equal(g, w)
