"""Loss and gradients of one full-batch step, by hand (the fast path of ``moesim.training``).

This computes exactly what ``torch.autograd`` computes for ``moesim.training.forward_train`` (tested
equal to it, and to the dense reference of ``moesim.model``), without autograd's bookkeeping:
each (run, sample) goes through its routed expert only, the expert kernel keeps one
(rows x J) temporary, and the gradients come from closed forms:

* loss: l(margin), margin = y * gate * f, with l' of the logistic or double-softmax loss;
* experts: dL/dw_mj = sum_{i -> m} dL/df_i * a_j * sum_p sigma'(<w_mj, x_i^(p)> + b_mj) x_i^(p);
* router: dL/dh from the gate (softmax: pi_e (delta_em - pi_m); noisy logit: delta_em), then
  dL/dTheta = sum_i x_sum_i (dL/dh_i)^T.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Config
from .model import Params, RoutedBuffer, is_linear, router_logits, routing_layout


@dataclass
class StepOutput:
    loss: torch.Tensor  # (S,) mean loss of each run
    margin: torch.Tensor  # (S, n) y * gate * f
    expert: torch.Tensor  # (S, n) routed expert
    grads: list[torch.Tensor]  # gradients, in the order of Params.tensors()


def activation_and_derivative(cfg: Config, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma(z) and sigma'(z) of the expert activation."""
    name = cfg.activation
    q = 3 if name == "cubic" else (cfg.power if name == "power" else None)
    if name == "linear" or q == 1:
        return z, torch.ones_like(z)
    if q is not None:
        zq1 = z * z if q == 3 else z ** (q - 1)
        s = zq1 * z
        return s, zq1.mul_(q)
    if name == "relu":
        return torch.relu(z), (z > 0).to(z.dtype)
    if name == "tanh":
        t = torch.tanh(z)
        return t, 1 - t * t
    if name == "gelu":
        cdf = 0.5 * (1 + torch.erf(z * 0.5**0.5))
        pdf = torch.exp(-0.5 * z * z) * (2 * torch.pi) ** -0.5
        return z * cdf, cdf + z * pdf
    if name == "celu":
        return F.celu(z), torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0)))
    raise ValueError(f"activation={name!r} has no derivative here")


def loss_and_derivative(cfg: Config, margin: torch.Tensor, single: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """l(margin) and l'(margin): logistic (paper, and the single models' CE on two logits) or the
    official MoE's double softmax, l = softplus(-tanh(margin/2))."""
    if single or cfg.loss == "logistic":
        return F.softplus(-margin), -torch.sigmoid(-margin)
    t = torch.tanh(margin / 2)
    return F.softplus(-t), -torch.sigmoid(-t) * (1 - t * t) / 2


def _expert_grads_from_dz(dz_blocks, rows3, block_group, n_groups, J, d, bias):
    gWg = torch.bmm(dz_blocks.transpose(1, 2), rows3)  # (blocks, J, d)
    gW = torch.zeros(n_groups, J, d, dtype=gWg.dtype, device=gWg.device).index_add_(0, block_group, gWg)
    gb = None
    if bias:
        gb = torch.zeros(n_groups, J, dtype=gWg.dtype, device=gWg.device).index_add_(0, block_group, dz_blocks.sum(1))
    return gW, gb


def moe_step(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor, a: torch.Tensor, buffer: RoutedBuffer | None = None) -> StepOutput:
    """Loss of Algorithm 1 and its gradients for S runs (no load-balancing term)."""
    W, b, theta = params.W, params.b, params.theta
    S, M, J, d = W.shape
    n, P, _ = x.shape
    h = router_logits(params, x_sum)  # (S, n, M)
    noisy = h + noise
    expert = noisy.argmax(-1)
    idx = expert[..., None]
    if cfg.gate == "noisy_logit":
        gate = torch.gather(noisy, 2, idx)[..., 0]
        probs = None
    else:
        probs = torch.softmax(h if cfg.gate == "softmax" else noisy, -1)
        gate = torch.gather(probs, 2, idx)[..., 0]

    flat_e = (expert + M * torch.arange(S, device=x.device)[:, None]).reshape(-1)  # (S*n,) run-expert
    if is_linear(cfg):
        u = torch.einsum("smjd,j->smd", W, a)  # f_m(x) = <u_m, x_sum> + P <b_m, a>
        f_all = (x_sum @ u.reshape(S * M, d).T)  # (n, S*M): every expert, one skinny GEMM
        f = torch.gather(f_all.view(n, S, M).transpose(0, 1), 2, idx)[..., 0]
        if b is not None:
            f = f + P * torch.gather(b @ a, 1, expert)
    else:
        lay = routing_layout(expert, M)
        R = lay.n_blocks * lay.block
        flat = x.reshape(n, P * d)
        rows = (torch.index_select(flat, 0, lay.source, out=buffer.get((R, P * d), x)) if buffer is not None
                else torch.index_select(flat, 0, lay.source))
        rows3 = rows.view(lay.n_blocks, lay.block * P, d)
        Wg = W.reshape(S * M, J, d)[lay.block_group]
        z = torch.bmm(rows3, Wg.transpose(1, 2))
        if b is not None:
            z += b.reshape(S * M, J)[lay.block_group][:, None, :]
        s, ds = activation_and_derivative(cfg, z)
        del z
        f = (s @ a).view(R, P).sum(1)[lay.pos]
        del s

    margin = y * gate * f
    loss_i, dl = loss_and_derivative(cfg, margin, single=False)
    dm = dl / n  # dL/dmargin, (S, n)
    df = dm * y * gate
    dgate = dm * y * f

    if is_linear(cfg):
        d_all = torch.zeros(S, n, M, dtype=x.dtype, device=x.device).scatter_(2, idx, df[..., None])
        gu = (x_sum.T @ d_all.transpose(0, 1).reshape(n, S * M)).T  # (S*M, d)
        gW = (gu[:, None, :] * a[None, :, None]).view(S, M, J, d)
        gb = None
        if b is not None:
            gsum = torch.zeros(S * M, dtype=x.dtype, device=x.device).index_add_(0, flat_e, df.reshape(-1))
            gb = (P * gsum[:, None] * a).view(S, M, J)
    else:
        g_row = torch.zeros(R, dtype=x.dtype, device=x.device)
        g_row[lay.pos.reshape(-1)] = df.reshape(-1)
        dz = ds.view(R, P, J).mul_((g_row[:, None, None] * a))  # in place: ds is not needed again
        gW, gb = _expert_grads_from_dz(dz.view(lay.n_blocks, lay.block * P, J), rows3, lay.block_group,
                                       S * M, J, d, b is not None)
        gW = gW.view(S, M, J, d)
        gb = gb.view(S, M, J) if gb is not None else None

    # router: dL/dh, then dL/dTheta = x_sum^T dL/dh
    if probs is None:
        dh = torch.zeros_like(h).scatter_(2, idx, dgate[..., None])
    else:
        onehot = torch.zeros_like(probs).scatter_(2, idx, 1.0)
        dh = (dgate * gate)[..., None] * (onehot - probs)
    g_theta = (x_sum.T @ dh.transpose(0, 1).reshape(n, S * M)).view(d, S, M).permute(1, 0, 2)
    grads = [gW] + ([gb] if gb is not None else []) + [g_theta]
    return StepOutput(loss_i.mean(1), margin, expert, grads)


def single_step(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor) -> StepOutput:
    """Logistic loss of single CNNs F(x) = sum_j a_j sum_p sigma(<w_j, x^(p)> + b_j) and its gradients."""
    W, b = params.W[:, 0], (params.b[:, 0] if params.b is not None else None)  # (S, J, d), (S, J)
    S, J, d = W.shape
    n, P, _ = x.shape
    if is_linear(cfg):
        return _single_linear_step(cfg, params, x.sum(1), y, a, P)
    flat = x.reshape(n * P, d)
    z = (flat @ W.reshape(S * J, d).T).view(n, P, S, J)
    if b is not None:
        z += b
    s, ds = activation_and_derivative(cfg, z)
    f = (s @ a).sum(1).T  # (S, n)
    del s
    margin = y * f
    loss_i, dl = loss_and_derivative(cfg, margin, single=True)
    df = dl * y / n  # (S, n)
    dz = ds.mul_(df.T[:, None, :, None] * a)  # (n, P, S, J)
    gW = (dz.view(n * P, S * J).T @ flat).view(S, 1, J, d)
    gb = dz.sum((0, 1)).view(S, 1, J) if b is not None else None
    g_theta = torch.zeros_like(params.theta)
    grads = [gW] + ([gb] if gb is not None else []) + [g_theta]
    return StepOutput(loss_i.mean(1), margin, torch.zeros_like(margin, dtype=torch.long), grads)


def _single_linear_step(cfg: Config, params: Params, x_sum: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                        n_patches: int) -> StepOutput:
    """A linear single CNN is F(x) = <sum_j a_j w_j, sum_p x^(p)> + P sum_j a_j b_j: one GEMV per run."""
    W, b = params.W[:, 0], (params.b[:, 0] if params.b is not None else None)
    S, J, d = W.shape
    n = x_sum.shape[0]
    u = torch.einsum("sjd,j->sd", W, a)
    f = (x_sum @ u.T).T  # (S, n)
    if b is not None:
        f = f + n_patches * (b @ a)[:, None]
    margin = y * f
    loss_i, dl = loss_and_derivative(cfg, margin, single=True)
    df = dl * y / n
    gu = df @ x_sum  # (S, d)
    gW = (a[None, :, None] * gu[:, None, :]).view(S, 1, J, d)
    gb = (n_patches * df.sum(1)[:, None] * a).view(S, 1, J) if b is not None else None
    grads = [gW] + ([gb] if gb is not None else []) + [torch.zeros_like(params.theta)]
    return StepOutput(loss_i.mean(1), margin, torch.zeros_like(margin, dtype=torch.long), grads)
