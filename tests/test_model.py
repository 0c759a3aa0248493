"""The MoE layer (Section 3): invariances, gradients, the fast path against the dense reference."""

from __future__ import annotations

import pytest
import torch

from moesim import nonlinearities, preset
from moesim.model import (
    Params, expert_outputs_dense, expert_outputs_routed, gate_values, init_params, router_logits, routing_layout,
    second_layer,
)
from moesim.nonlinearities import loss_from_margin
from moesim.engines.eager import moe_step, single_step
from moesim.optim import expert_step
from moesim.training import make_problem

F64 = torch.float64
ACTIVATIONS = list(nonlinearities.ACTIVATIONS)  # every entry of the table


def _setup(semantics="paper", n=96, seeds=(0, 1), scale_w=200.0, **over):
    cfg = preset(f"{semantics}-s1-quick", n_train=n, n_test=8, dtype="float64", n_experts=4, n_filters=6,
                 single_filters=6, **over)
    prob = make_problem(cfg)
    a = second_layer(cfg, cfg.filters, F64, "cpu")
    p = init_params(cfg, list(seeds), dtype=F64)
    g = torch.Generator().manual_seed(5)
    W = p.W * scale_w  # leave the tiny init so that every term of the gradient is visible
    theta = torch.randn(p.theta.shape, generator=g, dtype=F64) * 0.05
    b = None if p.b is None else torch.randn(p.b.shape, generator=g, dtype=F64) * 0.1
    noise = torch.rand(len(seeds), n, cfg.experts, generator=g, dtype=F64)
    return cfg, prob, a, Params(W, b, theta), noise


def _reference_loss(cfg, params, prob, noise, a):
    """Algorithm 1's loss from the dense reference: every expert on every sample, then pick."""
    h = router_logits(params, prob.x_sum)
    noisy = h + noise
    expert = noisy.argmax(-1)
    gate = gate_values(cfg, h, noisy, expert)
    f_all = expert_outputs_dense(cfg, params, prob.x, a)  # (S, M, n)
    f = torch.gather(f_all, 1, expert[:, None, :])[:, 0]
    return loss_from_margin(cfg, prob.y * gate * f).mean(1)


@pytest.mark.parametrize("semantics", ["paper", "official"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fast_step_equals_dense_reference(semantics, activation):
    """The eager engine (routed, hand-written gradients) = autograd through the dense reference: loss
    values and the gradients of every parameter, in float64."""
    cfg, prob, a, params, noise = _setup(semantics, activation=activation, power=4)
    out = moe_step(cfg, params, prob.x, prob.x_sum, prob.y, noise, a)
    tensors = [t.clone().requires_grad_(True) for t in params.tensors()]
    ref_params = Params(tensors[0], tensors[1] if params.b is not None else None, tensors[-1])
    ref_loss = _reference_loss(cfg, ref_params, prob, noise, a)
    ref_grads = torch.autograd.grad(ref_loss.sum(), tensors)
    torch.testing.assert_close(out.loss, ref_loss, rtol=1e-12, atol=1e-12)
    for g, r in zip(out.grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9 * r.abs().max().item())


@pytest.mark.parametrize("semantics, power", [("official", 2), ("paper", 5)])  # with and without filter bias
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_single_step_equals_autograd(activation, semantics, power):
    cfg, prob, a, params, _ = _setup(semantics, architecture="single", activation=activation, power=power)
    out = single_step(cfg, params, prob.x, prob.y, a, tile_elements=2**12)  # several tiles
    tensors = [t.clone().requires_grad_(True) for t in params.tensors()]
    n_grads = 2 if params.b is not None else 1
    f = expert_outputs_dense(cfg, Params(tensors[0], tensors[1] if n_grads == 2 else None, tensors[-1]),
                             prob.x, a)[:, 0]
    ref = torch.nn.functional.softplus(-prob.y * f).mean(1)
    grads = torch.autograd.grad(ref.sum(), tensors[:n_grads])
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=1e-12)
    assert len(out.grads) == n_grads + 1
    for g, r in zip(out.grads[:n_grads], grads):
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-9 * r.abs().max().item())


@pytest.mark.parametrize("activation", ["cubic", "relu", "linear"])
@pytest.mark.parametrize("routing", ["random", "all-to-one", "one-empty"])
def test_routed_kernel_equals_dense(activation, routing):
    """The expert-sorted, block-padded kernel returns the routed expert's dense output, also when
    routing is maximally unbalanced or leaves experts empty."""
    cfg, prob, a, params, _ = _setup("official", activation=activation, n=300, seeds=(0, 1, 2))
    S, n, M = 3, 300, cfg.experts
    g = torch.Generator().manual_seed(1)
    expert = torch.randint(M, (S, n), generator=g)
    if routing == "all-to-one":
        expert[:] = 2
    elif routing == "one-empty":
        expert[expert == 1] = 0
    dense = expert_outputs_dense(cfg, params, prob.x, a)
    want = torch.gather(dense, 1, expert[:, None])[:, 0]
    for block in (None, 8, 64):
        lay = routing_layout(expert, M, block)
        torch.testing.assert_close(expert_outputs_routed(cfg, params, prob.x, a, expert, lay), want)


def test_permutation_invariance_over_patches():
    """f_m and h sum over patches with shared filters, so shuffling patches changes nothing
    (Definition 3.1 shuffles them; Section 3's f_m and h are sums over p): outputs, loss and gradients
    are equal."""
    cfg, prob, a, params, noise = _setup("official")
    g = torch.Generator().manual_seed(3)
    perm = torch.argsort(torch.rand(prob.x.shape[:2], generator=g), 1)
    x_perm = torch.gather(prob.x, 1, perm[..., None].expand_as(prob.x))
    assert not torch.equal(x_perm, prob.x)
    torch.testing.assert_close(expert_outputs_dense(cfg, params, x_perm, a), expert_outputs_dense(cfg, params, prob.x, a))
    a_out = moe_step(cfg, params, prob.x, prob.x_sum, prob.y, noise, a)
    b_out = moe_step(cfg, params, x_perm, x_perm.sum(1), prob.y, noise, a)
    torch.testing.assert_close(a_out.loss, b_out.loss)
    for u, v in zip(a_out.grads, b_out.grads):
        torch.testing.assert_close(u, v)


def test_expert_and_gate_pass_gradcheck():
    """float64 finite-difference check of the expert (weights and bias) and of the softmax gate."""
    cfg, prob, a, params, noise = _setup("official", n=12, seeds=(0,), scale_w=50.0)
    x = prob.x

    def expert_fn(W, b):
        return expert_outputs_dense(cfg, Params(W, b, params.theta), x, a)

    assert torch.autograd.gradcheck(expert_fn, (params.W.clone().requires_grad_(), params.b.clone().requires_grad_()))
    cfg_p = cfg.replace(gate="softmax")
    expert = (router_logits(params, prob.x_sum) + noise).argmax(-1)

    def gate_fn(theta):
        h = router_logits(Params(params.W, params.b, theta), prob.x_sum)
        return gate_values(cfg_p, h, h + noise, expert)

    assert torch.autograd.gradcheck(gate_fn, (params.theta.clone().requires_grad_(),))


def test_router_gets_a_gradient_from_the_task_loss():
    """At Theta = 0 the top-1 softmax gate is pi = 1/M, not renormalized to 1, so dL/dTheta != 0
    from the task loss alone (paper semantics, no load-balancing term)."""
    cfg, prob, a, params, noise = _setup("paper")
    params = Params(params.W, params.b, torch.zeros_like(params.theta))
    out = moe_step(cfg, params, prob.x, prob.x_sum, prob.y, noise, a)
    g_theta = out.grads[-1]
    assert g_theta.abs().max() > 1e-6 * out.grads[0].abs().max()
    assert torch.all(g_theta.flatten(1).norm(dim=1) > 0)


def test_m1_moe_equals_single_expert():
    """With one expert, pi = softmax(h) = 1, so the paper's MoE is the single CNN: trained with the
    same seed they give identical parameters and losses."""
    import moesim

    over = dict(n_train=200, n_test=50, n_steps=15, n_steps_single=15, n_filters=6, single_filters=6,
                dtype="float64")
    moe = moesim.train(preset("paper-s1-quick", "moe-nonlinear", n_experts=1, **over), [4])
    single = moesim.train(preset("paper-s1-quick", "single-nonlinear", **over), [4])
    torch.testing.assert_close(moe.params.W, single.params.W)
    assert (moe.history["loss"] == single.history["loss"]).all()
    assert (moe.summary["test_accuracy"] == single.summary["test_accuracy"]).all()


@pytest.mark.parametrize("normalization", ["frobenius", "sum_of_norms", "per_tensor", "none"])
def test_normalized_expert_step_has_the_prescribed_norm(normalization):
    """Algorithm 1: each expert moves by exactly eta in Frobenius norm (paper); the code's variants:
    ||dW|| + ||db|| = eta (demo notebooks), ||dW|| = ||db|| = eta (entropy notebooks); an expert
    with zero gradient does not move."""
    cfg = preset("official-s1", normalization=normalization)
    g = torch.Generator().manual_seed(0)
    gW = torch.randn(3, 5, 16, 50, generator=g, dtype=F64)
    gb = torch.randn(3, 5, 16, generator=g, dtype=F64)
    gW[1, 2] = 0
    gb[1, 2] = 0
    eta = 1e-3
    dW, db = expert_step(cfg, gW, gb, eta)
    nW, nb = dW.flatten(2).norm(dim=-1), db.norm(dim=-1)
    alive = torch.ones(3, 5, dtype=torch.bool)
    alive[1, 2] = False
    assert nW[1, 2] == 0 and nb[1, 2] == 0
    if normalization == "frobenius":
        torch.testing.assert_close(torch.sqrt(nW**2 + nb**2)[alive], torch.full((14,), eta, dtype=F64))
    elif normalization == "sum_of_norms":
        torch.testing.assert_close((nW + nb)[alive], torch.full((14,), eta, dtype=F64))
    elif normalization == "per_tensor":
        torch.testing.assert_close(nW[alive], torch.full((14,), eta, dtype=F64))
        torch.testing.assert_close(nb[alive], torch.full((14,), eta, dtype=F64))
    else:
        torch.testing.assert_close(dW, -eta * gW)


def test_training_steps_have_norm_eta():
    """In a real run (paper semantics, no bias) every expert that received samples moved by exactly
    eta per step."""
    import moesim

    cfg = preset("paper-s1-quick", n_train=400, n_test=50, n_steps=1, dtype="float64")
    before = init_params(cfg, [0], dtype=F64)
    after = moesim.train(cfg, [0])
    moved = (after.params.W - before.W).flatten(2).norm(dim=-1)
    torch.testing.assert_close(moved, torch.full_like(moved, cfg.lr_expert))
