"""The ``official-ops`` engine: the official code's operation order, for bit-level replay; slow.

The MoE layer of the official demo notebooks (see the appendix *The paper and its official code*)
is the same function as moesim's other engines compute (Algorithm 1 with the code's switches:
two output heads, expert bias, noisy-logit gate, double-softmax cross-entropy, the sum-of-norms
normalization), but float32 sums are not associative: a different summation order moves edge
samples' predictions by one rounding. This engine computes a step with the same torch operations,
on tensors of the same shapes, as the official model and optimizers do:

- the router and every expert are ``F.conv1d`` with stride = kernel = d over the (n, 1, P*d)
  input, summed over the P patch positions afterwards (the router logit is summed *after* the
  convolution);
- top-1 of the noisy logits; each expert runs on the full batch with the rows routed elsewhere
  zeroed (``einsum('bnd,ben->ebd')``), one ``conv1d`` per expert; the two logits are the sums of the
  first and last J/2 channels; the routed expert's output is scaled by the gate with
  ``einsum('ijk,jil->il')``;
- ``softmax`` then ``cross_entropy`` (mean), gradients by autograd;
- each expert's gradient is divided by ``||grad W_m|| + ||grad b_m||`` (two ``norm()`` calls), then
  ``p.add_(grad, alpha=-lr)``, as ``torch.optim``'s single-tensor SGD does; the router the same with
  its own learning rate and no normalization.

The loop over the M experts and over the S runs is deliberate: it is what reproduces the official
summation order (batching the convolutions would change the GEMM shapes and so the rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Config
from ..model import Params
from .base import Engine, StepOutput

#: The config fields this engine implements, with the only values it implements (the official code's).
REQUIRED = dict(architecture="moe", output_heads="two", expert_bias=True, loss="double_softmax_ce",
                gate="noisy_logit", normalization="sum_of_norms", load_balancing=0, test_noise=True)


def unavailable(cfg: Config, x: torch.Tensor | None = None) -> str | None:
    """Why this engine cannot train ``cfg`` (None if it can); ``x`` is not read."""
    bad = [f"{k}={getattr(cfg, k)!r} (needs {v!r})" for k, v in REQUIRED.items() if getattr(cfg, k) != v]
    if cfg.activation not in ("linear", "cubic"):
        bad.append(f"activation={cfg.activation!r} (needs 'linear' or 'cubic')")
    return "; ".join(bad) if bad else None


def _forward(cfg: Config, W: list[torch.Tensor], b: list[torch.Tensor], w_router: torch.Tensor,
             x: torch.Tensor, noise: torch.Tensor):
    """One run's official forward pass: (gate * two logits (n, 2), routed expert (n,))."""
    n, P, d = x.shape
    M, J = len(W), W[0].shape[0]
    xin = x.reshape(n, 1, P * d)
    select = F.conv1d(xin, w_router, None, stride=d).sum(2) + noise  # Router.forward
    gate, index = select.topk(k=1, dim=-1)
    gate, index = gate.squeeze(-1), index.squeeze(-1)
    mask_flat = F.one_hot(index, M).float().sum(dim=-1)
    combine = gate[..., None, None] * mask_flat[..., None, None] * F.one_hot(index, M)[..., None]
    dispatch = combine.bool().to(combine)
    expert_inputs = torch.einsum("bnd,ben->ebd", xin, dispatch).unsqueeze(2)
    outputs = []
    for m in range(M):  # one Conv1d module per expert, as the official MoE
        z = F.conv1d(expert_inputs[m], W[m], b[m], stride=d)
        if cfg.activation == "cubic":
            z = z**3
        z = torch.sum(z, 2)
        outputs.append(torch.stack([torch.sum(z[:, :J // 2], 1), torch.sum(z[:, J // 2:], 1)]).transpose(1, 0))
    output = torch.einsum("ijk,jil->il", combine, torch.stack(outputs))
    return output, index


def _leaves(params: Params, s: int):
    """Run ``s``'s parameters as the official modules hold them (fresh leaves, contiguous)."""
    W = [params.W[s, m].detach().unsqueeze(1).clone().requires_grad_() for m in range(params.W.shape[1])]
    b = [params.b[s, m].detach().clone().requires_grad_() for m in range(params.b.shape[1])]
    w_router = params.theta[s].detach().t().contiguous().unsqueeze(1).requires_grad_()
    return W, b, w_router


def moe_step(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor, a: torch.Tensor, workspace=None) -> StepOutput:
    """Loss and raw gradients of S runs, each computed as the official model computes it."""
    S, M, J, d = params.W.shape
    labels = (y > 0).long()
    losses, margins, experts, gW, gb, gt = [], [], [], [], [], []
    for s in range(S):  # one official model per run (see the module docstring)
        W, b, w_router = _leaves(params, s)
        with torch.enable_grad():
            output, index = _forward(cfg, W, b, w_router, x, noise[s])
            loss = F.cross_entropy(F.softmax(output, dim=1), labels)
            grads = torch.autograd.grad(loss, W + b + [w_router])
        losses.append(loss.detach())
        margins.append(y * (output[:, 1] - output[:, 0]).detach())
        experts.append(index)
        gW.append(torch.stack([g[:, 0] for g in grads[:M]]))
        gb.append(torch.stack(grads[M:2 * M]))
        gt.append(grads[-1][:, 0].t())
    return StepOutput(torch.stack(losses), torch.stack(margins), torch.stack(experts),
                      [torch.stack(gW), torch.stack(gb), torch.stack(gt)])


@torch.no_grad()
def apply_update(cfg: Config, params: Params, grads, active: torch.Tensor, adam=None) -> None:
    """The official optimizers' step for the active runs: NormalizedGD on every expert, SGD on the router."""
    gW, gb, g_theta = grads
    S, M = gW.shape[:2]
    for s in range(S):
        if not bool(active[s]):
            continue
        for m in range(M):
            norm = 0 + gW[s, m].norm() + gb[s, m].norm()  # NormalizedGD: a sum of per-tensor norms
            gw, gbm = gW[s, m], gb[s, m]
            if norm != 0:
                gw, gbm = gw / norm, gbm / norm
            params.W[s, m].add_(gw, alpha=-cfg.lr_expert)
            params.b[s, m].add_(gbm, alpha=-cfg.lr_expert)
        params.theta[s].add_(g_theta[s], alpha=-cfg.lr_router)


@torch.no_grad()
def evaluate(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor | None):
    """The official ``test``: (correct (S, n) bool, routed expert (S, n)); argmax of softmax of the output."""
    if noise is None:
        raise ValueError("engine='official-ops' evaluates with router noise, as the official code; "
                         "this config has test_noise=False")
    labels = (y > 0).long()
    correct, experts = [], []
    for s in range(params.W.shape[0]):
        W, b, w_router = _leaves(params, s)
        output, index = _forward(cfg, W, b, w_router, x, noise[s])
        correct.append(torch.max(F.softmax(output, dim=1), 1).indices == labels)
        experts.append(index)
    return torch.stack(correct), torch.stack(experts)


class OfficialOpsEngine(Engine):
    """The official MoE's operations and optimizers, run by run (``REQUIRED`` configs only)."""

    name = "official-ops"
    load_balancing = "autograd"

    unavailable = staticmethod(unavailable)
    refusal_format = "engine='official-ops' cannot train this config: {reason}"

    moe_step = staticmethod(moe_step)
    update = staticmethod(apply_update)

    def evaluate(self, cfg, params, x, x_sum, y, noise, a, chunk_elements: int = 2**23):
        return evaluate(cfg, params, x, y, noise)


ENGINE = OfficialOpsEngine()
