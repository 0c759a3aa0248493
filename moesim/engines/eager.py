"""The ``eager`` engine: loss and gradients of one full-batch step by hand, in torch operations (any device).

This computes exactly what ``torch.autograd`` computes for ``moesim.engines.autograd.forward_train`` (tested
equal to it, and to the dense reference of ``moesim.model``), without autograd's bookkeeping:
each (run, sample) goes through its routed expert only, the expert kernel keeps one
(rows x J) temporary, and the gradients come from closed forms:

* loss: l(margin), margin = y * gate * f, with l' from the table of ``moesim.nonlinearities``;
* experts: dL/dw_mj = sum_{i -> m} dL/df_i * a_j * sum_p sigma'(<w_mj, x_i^(p)> + b_mj) x_i^(p);
* router: dL/dh from the gate (softmax: pi_e (delta_em - pi_m); noisy logit: delta_em), then
  dL/dTheta = sum_i x_sum_i (dL/dh_i)^T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import Config
from ..model import Params, is_linear, route, routing_layout
from ..nonlinearities import loss_and_derivative, sigma_and_derivative
from .base import Engine, StepOutput, Workspace


def _routed_experts(cfg: Config, W, b, a, x, y, gate, lay, workspace: Workspace | None, tile_elements: int = 2**18):
    """f of each (run, sample) through its routed expert, and the experts' loss gradients.

    Rows of the expert-sorted buffer (``routing_layout``) are processed in tiles of whole blocks
    whose (rows x P x J) pre-activations fit in cache: gather the tile's samples, one batched
    matmul, the activation and its derivative, the per-sample loss derivative (the loss is a mean
    of per-sample terms), and the tile's weight-gradient matmul. Padding rows carry weight 0.
    """
    S, M, J, d = W.shape
    n, P, _ = x.shape
    B = lay.block
    R = lay.n_blocks * B
    flat = x.reshape(n, P * d)
    row_block = torch.arange(R, device=x.device) // B
    row_run = lay.block_group[row_block] // M
    valid = torch.zeros(R, dtype=x.dtype, device=x.device)
    valid[lay.pos.reshape(-1)] = 1.0
    gate_row = gate.reshape(-1)[row_run * n + lay.source] * valid
    y_row = y[lay.source]
    Wg = W.reshape(S * M, J, d)[lay.block_group]  # (blocks, J, d)
    bg = b.reshape(S * M, J)[lay.block_group] if b is not None else None
    gWg = torch.empty_like(Wg)
    gbg = torch.empty_like(bg) if bg is not None else None
    f_row = torch.empty(R, dtype=x.dtype, device=x.device)
    tile_blocks = max(1, tile_elements // (B * P * J))
    for b0 in range(0, lay.n_blocks, tile_blocks):
        b1 = min(b0 + tile_blocks, lay.n_blocks)
        r0, r1 = b0 * B, b1 * B
        out = workspace.get("rows", (tile_blocks * B, P * d), x)[: r1 - r0] if workspace is not None else None
        rows = torch.index_select(flat, 0, lay.source[r0:r1], out=out).view(b1 - b0, B * P, d)
        z = torch.bmm(rows, Wg[b0:b1].transpose(1, 2))
        if bg is not None:
            z += bg[b0:b1, None, :]
        s, ds, scale = sigma_and_derivative(cfg, z)
        if scale != 1.0:
            ds.mul_(scale)
        del z
        f_t = (s @ a).view(r1 - r0, P).sum(1)
        del s
        f_row[r0:r1] = f_t
        _, dl = loss_and_derivative(cfg, y_row[r0:r1] * gate_row[r0:r1] * f_t, single=False)
        df = dl * y_row[r0:r1] * gate_row[r0:r1] / n  # zero on padding rows (gate_row = 0 there)
        dz = ds.view(r1 - r0, P, J).mul_(df[:, None, None] * a).view(b1 - b0, B * P, J)
        torch.bmm(dz.transpose(1, 2), rows, out=gWg[b0:b1])
        if gbg is not None:
            gbg[b0:b1] = dz.sum(1)
    gW = torch.zeros(S * M, J, d, dtype=x.dtype, device=x.device).index_add_(0, lay.block_group, gWg)
    gb = None
    if gbg is not None:
        gb = torch.zeros(S * M, J, dtype=x.dtype, device=x.device).index_add_(0, lay.block_group, gbg).view(S, M, J)
    return f_row[lay.pos], gW.view(S, M, J, d), gb


def moe_step(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor, a: torch.Tensor, workspace: Workspace | None = None) -> StepOutput:
    """Loss of Algorithm 1 and its gradients for S runs (no load-balancing term)."""
    W, b = params.W, params.b
    S, M, J, d = W.shape
    n, P, _ = x.shape
    h, _, expert, gate, probs = route(cfg, params, x_sum, noise)  # (S, n, M), (S, n), (S, n)
    idx = expert[..., None]

    flat_e = (expert + M * torch.arange(S, device=x.device)[:, None]).reshape(-1)  # (S*n,) run-expert
    if is_linear(cfg):
        u = torch.einsum("smjd,j->smd", W, a)  # f_m(x) = <u_m, x_sum> + P <b_m, a>
        f_all = (x_sum @ u.reshape(S * M, d).T)  # (n, S*M): every expert, one skinny GEMM
        f = torch.gather(f_all.view(n, S, M).transpose(0, 1), 2, idx)[..., 0]
        if b is not None:
            f = f + P * torch.gather(b @ a, 1, expert)
    else:
        f, gW, gb = _routed_experts(cfg, W, b, a, x, y, gate, routing_layout(expert, M), workspace)
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

    # router: dL/dh, then dL/dTheta = x_sum^T dL/dh
    if cfg.gate == "unit":
        dh = torch.zeros_like(h)
    elif probs is None:
        dh = torch.zeros_like(h).scatter_(2, idx, dgate[..., None])
    else:
        onehot = torch.zeros_like(probs).scatter_(2, idx, 1.0)
        dh = (dgate * gate)[..., None] * (onehot - probs)
    g_theta = torch.matmul(dh.transpose(1, 2), x_sum).transpose(1, 2)  # (S, M, n) @ (n, d): the fast GEMM shape
    grads = [gW] + ([gb] if gb is not None else []) + [g_theta]
    return StepOutput(loss_i.mean(1), margin, expert, grads)


def single_step(cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                workspace: Workspace | None = None, tile_elements: int = 2**19) -> StepOutput:
    """Logistic loss of single CNNs F(x) = sum_j a_j sum_p sigma(<w_j, x^(p)> + b_j) and its gradients.

    The loss is a mean of per-sample terms, so the batch is processed in tiles of samples whose
    (samples x P x runs x J) pre-activations fit in cache (``tile_elements``); each tile adds its
    share to the gradients. This is a loop over memory tiles (a handful per step), not over samples.
    The bias rides in the GEMMs as an extra input coordinate fixed at 1 (so its gradient is the
    last column of the weight gradient), and for sigma(z) = z^q the factor q of sigma' is folded
    into the per-sample coefficient: two fewer passes over the (samples x P x runs x J) tile.
    ``workspace`` is not used (accepted so that every engine's step shares one signature).
    """
    W, b = params.W[:, 0], (params.b[:, 0] if params.b is not None else None)  # (S, J, d), (S, J)
    S, J, d = W.shape
    n, P, _ = x.shape
    if is_linear(cfg):
        return _single_linear_step(cfg, params, x.sum(1), y, a, P)
    Wt = W.reshape(S * J, d) if b is None else torch.cat([W.reshape(S * J, d), b.reshape(S * J, 1)], 1)
    Wt = Wt.T.contiguous()  # (d [+1], S*J)
    g = torch.zeros(S * J, Wt.shape[0], dtype=x.dtype, device=x.device)
    margins, losses = [], []
    tile = max(1, tile_elements // (P * S * J))
    for i in range(0, n, tile):
        xt = x[i:i + tile].reshape(-1, d)  # (m*P, d)
        if b is not None:
            xt = F.pad(xt, (0, 1), value=1.0)  # (m*P, d+1): the bias coordinate
        m = xt.shape[0] // P
        z = (xt @ Wt).view(m, P, S, J)
        s, ds, scale = sigma_and_derivative(cfg, z)  # sigma' = scale * ds; scale goes into the coefficient
        del z
        yt = y[i:i + tile]
        margin = yt * (s @ a).sum(1).T  # (S, m)
        del s
        loss_i, dl = loss_and_derivative(cfg, margin, single=True)
        dz = ds.mul_((dl * yt * (scale / n)).T[:, None, :, None] * a)  # (m, P, S, J)
        g.addmm_(dz.view(m * P, S * J).T, xt)
        margins.append(margin)
        losses.append(loss_i.sum(1))
    margin = torch.cat(margins, 1)
    gW = g[:, :d].reshape(S, 1, J, d)
    grads = [gW] + ([g[:, d].reshape(S, 1, J)] if b is not None else []) + [torch.zeros_like(params.theta)]
    return StepOutput(torch.stack(losses).sum(0) / n, margin, torch.zeros_like(margin, dtype=torch.long), grads)


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


class EagerEngine(Engine):
    """Hand-written gradients in torch operations: any device, dtype, activation, gate and loss."""

    name = "eager"

    def step_bytes_per_sample(self, cfg: Config) -> int:
        return 2 * cfg.n_patches * cfg.filters  # pre-activations and their derivative

    moe_step = staticmethod(moe_step)
    single_step = staticmethod(single_step)


ENGINE = EagerEngine()
