"""The ``official-ops`` engine (moesim.engines.official_ops): the official code's operations, bit for bit.

The oracle is the official demo notebooks' model written with ``torch.nn`` modules (one
``nn.Conv1d`` per expert and one for the router) and their optimizers, as the appendix *The paper
and its official code* describes them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moesim import preset
from moesim.model import init_params
from moesim.training import make_problem, train


def _official_step(W, b, theta, x, y, noise, cubic, lr=0.001, lr_router=0.1):
    """One step of the official MoE (cells 2, 3, 6 and 11 of the demo notebooks) on torch modules."""
    M, J, d = W.shape
    n, P, _ = x.shape
    router = torch.nn.Conv1d(1, M, d, d, bias=False)
    router.weight = torch.nn.Parameter(theta.t().contiguous().unsqueeze(1).clone())
    experts = []
    for m in range(M):
        conv = torch.nn.Conv1d(1, J, d, d)
        conv.weight, conv.bias = torch.nn.Parameter(W[m].unsqueeze(1).clone()), torch.nn.Parameter(b[m].clone())
        experts.append(conv)
    xin = x.reshape(n, 1, P * d)
    select = torch.sum(router(xin), 2) + noise
    values, index = select.topk(k=1, dim=-1)
    gate, index = values.squeeze(-1), index.squeeze(-1)
    mask_flat = F.one_hot(index, M).float().sum(dim=-1)
    combine = gate[..., None, None] * mask_flat[..., None, None] * F.one_hot(index, M)[..., None]
    inputs = torch.einsum("bnd,ben->ebd", xin, combine.bool().to(combine)).unsqueeze(2)
    outs = []
    for m in range(M):
        z = experts[m](inputs[m])
        z = torch.sum(z**3 if cubic else z, 2)
        outs.append(torch.stack([torch.sum(z[:, :J // 2], 1), torch.sum(z[:, J // 2:], 1)]).transpose(1, 0))
    output = F.softmax(torch.einsum("ijk,jil->il", combine, torch.stack(outs)), dim=1)
    loss = torch.nn.CrossEntropyLoss()(output, (y > 0).long())
    loss.backward()
    with torch.no_grad():
        for conv in experts:  # NormalizedGD: divide by the sum of the two tensors' norms, then SGD
            norm = 0 + conv.weight.grad.norm() + conv.bias.grad.norm()
            for p in (conv.weight, conv.bias):
                if norm != 0:
                    p.grad /= norm
                p.add_(p.grad, alpha=-lr)
        router.weight.add_(router.weight.grad, alpha=-lr_router)
    return (loss.detach(), torch.stack([c.weight[:, 0] for c in experts]).detach(),
            torch.stack([c.bias for c in experts]).detach(), router.weight[:, 0].t().detach())


@pytest.mark.parametrize("model", ["moe-linear", "moe-nonlinear"])
def test_two_steps_are_bit_identical_to_the_official_modules(model):
    """Loss and every parameter after each of two steps equal the modules' to the last bit."""
    torch.set_num_threads(1)
    cfg = preset("official-s1", model, n_train=96, n_test=8, n_steps=2, record_every=10**6, stopping="fixed")
    prob = make_problem(cfg)
    g = torch.Generator().manual_seed(4)
    noises = [torch.rand(1, 96, cfg.experts, generator=g) for _ in range(2)]

    class Fixed:  # the same two noise draws for both implementations
        def __init__(self):
            self.i = 0

        def draw(self):
            self.i += 1
            return noises[self.i - 1]

        def eval(self, split):
            return torch.rand(1, 96 if split == "train" else 8, cfg.experts, generator=g)

        def close(self):
            pass

    res = train(cfg, [3], problem=prob, engine="official-ops", noise=Fixed())
    p0 = init_params(cfg, [3], device="cpu", dtype=torch.float32)  # train's default W^(0), b^(0), Theta^(0)
    W, b, theta = p0.W[0], p0.b[0], p0.theta[0]
    losses = []
    for t in range(2):
        loss, W, b, theta = _official_step(W, b, theta, prob.x, prob.y, noises[t][0], model == "moe-nonlinear")
        losses.append(float(loss))
    assert res.history["loss"][:, 0].tolist() == losses
    assert torch.equal(res.params.W[0], W) and torch.equal(res.params.b[0], b)
    assert torch.equal(res.params.theta[0], theta)


#: Largest differences between official-ops and the eager / fused engines over 30 steps of two runs
#: on 200 samples (benchmarks/results/calibration/replay.md): loss 1.8e-7 absolute, parameters
#: 4.7e-6 relative to their largest entry (W, b, theta); bounds are 10 times that.
LOSS_TOL, PARAM_TOL = 2e-6, 5e-5


@pytest.mark.parametrize("model", ["moe-linear", "moe-nonlinear"])
@pytest.mark.parametrize("other", ["eager", "fused"])
def test_agrees_with_the_other_engines_up_to_rounding(model, other):
    torch.set_num_threads(1)
    cfg = preset("official-s1", model, n_train=200, n_test=200, n_steps=30, record_every=10**6, stopping="fixed")
    ops, res = train(cfg, [0, 1], engine="official-ops"), train(cfg, [0, 1], engine=other)
    assert np.abs(ops.history["loss"] - res.history["loss"]).max() <= LOSS_TOL
    for name in ("W", "b", "theta"):
        a, c = getattr(ops.params, name), getattr(res.params, name)
        assert float((a - c).abs().max() / a.abs().max()) <= PARAM_TOL, name


def test_refuses_a_config_it_does_not_implement():
    cfg = preset("paper-s1", "moe-nonlinear", n_train=20, n_test=20, n_steps=1)
    with pytest.raises(ValueError, match=r"official-ops.*gate='softmax'"):
        train(cfg, [0], engine="official-ops")
