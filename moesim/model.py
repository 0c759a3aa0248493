"""Experts, router and the MoE layer of Section 3, for S independent runs at once.

Every parameter carries a leading seed axis ``S``; experts are one stacked tensor, so nothing
loops over experts or samples.

* Expert (two-layer CNN with shared filters): ``f_m(x) = sum_j a_j sum_p sigma(<w_mj, x^(p)> + b_mj)``
  with second-layer signs ``a_j`` (all +1 in the paper; ``-1`` for the first half and ``+1`` for the
  second in the official code's two logit heads, so that ``F = logit_1 - logit_0``).
* Router: ``h(x) = sum_p Theta^T x^(p) = Theta^T (sum_p x^(p))``, zero-initialized.
* Top-1 routing with noise: ``m = argmax_m (h_m + r_m)``; the output is ``gate * f_m(x)``.

Two expert kernels compute the same numbers: ``expert_outputs_dense`` runs every expert on every
sample (the reference, and what per-expert diagnostics need), ``expert_outputs_routed`` runs each
sample through its routed expert only, by sorting samples into expert-homogeneous blocks and one
batched matmul. Both are differentiable with autograd (the ``autograd`` engine); the other engines
of ``moesim.engines`` use hand-written gradients: the fused C kernel on CPUs, or the ``eager`` step
(which shares ``routing_layout`` and ``route``). sigma and the loss come from the tables of
``moesim.nonlinearities``. A linear activation collapses to one inner product with ``sum_p x^(p)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import Config
from .nonlinearities import activation_fn, is_linear

if TYPE_CHECKING:
    from .engines.base import Workspace


@dataclass
class Params:
    """Trainable parameters of S runs."""

    W: torch.Tensor  # (S, M, J, d) expert filters w_mj
    b: torch.Tensor | None  # (S, M, J) expert biases, or None (paper: no bias)
    theta: torch.Tensor  # (S, d, M) router, column m is theta_m

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.W, self.b, self.theta) if t is not None]

    def detach(self) -> "Params":
        return Params(self.W.detach().clone(), None if self.b is None else self.b.detach().clone(),
                      self.theta.detach().clone())

    def select(self, seeds: slice | list[int] | torch.Tensor) -> "Params":
        """The parameters of some of the S runs."""
        return Params(self.W[seeds], None if self.b is None else self.b[seeds], self.theta[seeds])


# --- activations (the table: moesim.nonlinearities) ------------------------------------------

def second_layer(cfg: Config, n_filters: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Fixed second-layer weights a_j: ones (paper) or [-1]*J/2 + [+1]*J/2 (code's two heads)."""
    a = torch.ones(n_filters, dtype=dtype, device=device)
    if cfg.output_heads == "two":
        a[: n_filters // 2] = -1.0
    return a


# --- initialization --------------------------------------------------------------------------

def seed_stream(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of run ``seed`` (init, noise, eval noise, ...)."""
    tag = sum(ord(c) * 131**i for i, c in enumerate(stream)) % (2**31)
    return int(np.random.SeedSequence([seed, tag]).generate_state(2, dtype=np.uint64)[0] >> 1)


def generator(seed: int, stream: str, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed_stream(seed, stream))


def init_params(cfg: Config, seeds: list[int], *, device="cpu", dtype=torch.float32) -> Params:
    """W^(0) and Theta^(0) = 0 for each seed (Algorithm 1, step 1).

    Two switches break this on purpose (the mutants of ``moesim.claims.mutants``):
    ``shared_init`` gives every expert expert 0's draw, ``router_init_sigma > 0`` a random Theta^(0).

    Gaussian: w ~ N(0, sigma_0^2). Uniform (code): PyTorch's Conv1d default U(+-1/sqrt(d)) for
    weight and bias, times ``init_uniform_scale`` for MoE experts (``small=True``); singles x1.
    """
    M, J, d = cfg.experts, cfg.filters, cfg.patch_dim
    Ws, bs = [], []
    for s in seeds:  # one generator per run: a seed's draw does not depend on the others
        g = torch.Generator().manual_seed(seed_stream(s, "init"))
        if cfg.init == "gaussian":
            W = torch.randn(M, J, d, generator=g, dtype=torch.float64) * cfg.init_sigma
            b = torch.randn(M, J, generator=g, dtype=torch.float64) * cfg.init_sigma
        else:
            bound = 1.0 / d**0.5
            scale = cfg.init_uniform_scale if cfg.architecture == "moe" else 1.0
            W = (torch.rand(M, J, d, generator=g, dtype=torch.float64) * 2 - 1) * bound * scale
            b = (torch.rand(M, J, generator=g, dtype=torch.float64) * 2 - 1) * bound * scale
        Ws.append(W)
        bs.append(b)
    W = torch.stack(Ws)
    b = torch.stack(bs)
    if cfg.shared_init:  # broken on purpose: every expert starts where expert 0 starts
        W, b = W[:, :1].expand_as(W).clone(), b[:, :1].expand_as(b).clone()
    W = W.to(device=device, dtype=dtype)
    b = b.to(device=device, dtype=dtype) if cfg.expert_bias else None
    theta = torch.zeros(len(seeds), d, M, dtype=torch.float64)
    if cfg.router_init_sigma > 0:  # a random router (Algorithm 1 starts from Theta^(0) = 0)
        for i, s in enumerate(seeds):
            g = torch.Generator().manual_seed(seed_stream(s, "router-init"))
            theta[i] = torch.randn(d, M, generator=g, dtype=torch.float64) * cfg.router_init_sigma
    return Params(W, b, theta.to(device=device, dtype=dtype))


# --- experts ---------------------------------------------------------------------------------

def expert_outputs_dense(cfg: Config, params: Params, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """f_m(x_i) for every run, expert and sample: (S, M, n). The reference implementation."""
    W, b = params.W, params.b
    if is_linear(cfg):
        u = torch.einsum("smjd,j->smd", W, a)
        out = torch.einsum("smd,nd->smn", u, x.sum(1))
        if b is not None:
            out = out + x.shape[1] * (b @ a)[..., None]
        return out
    act = activation_fn(cfg)
    z = torch.einsum("npd,smjd->smnpj", x, W)
    if b is not None:
        z = z + b[:, :, None, None, :]
    return act(z).sum(3) @ a


def block_size(n: int, n_groups: int) -> int:
    """Rows per block of the routed kernel: about half an expert's fair share, 8 to 128."""
    b = max(8, min(128, n // max(1, 2 * n_groups)))
    return 1 << (b.bit_length() - 1)


@dataclass
class RoutingLayout:
    """Where each (run, sample) sits in the expert-sorted, block-padded buffer."""

    pos: torch.Tensor  # (S, n) row of the padded buffer holding sample i of run s
    source: torch.Tensor  # (n_blocks * block,) sample index held by each buffer row (padding: 0)
    block_group: torch.Tensor  # (n_blocks,) flat index s*M + m of the expert of each block
    n_blocks: int
    block: int


def routing_layout(expert: torch.Tensor, n_experts: int, block: int | None = None) -> RoutingLayout:
    """Sort the samples of each run by their routed expert into blocks of ``block`` rows.

    Each block holds samples of one (run, expert) pair only; groups are padded to a multiple
    of ``block``. The buffer has a fixed number of blocks, ceil(S n / B) + S M, so no shape
    depends on the routing (no host synchronization on a GPU).
    """
    S, n = expert.shape
    G = S * n_experts
    B = block or block_size(n, n_experts)
    group = expert + n_experts * torch.arange(S, device=expert.device)[:, None]  # (S, n)
    counts = torch.bincount(group.reshape(-1), minlength=G)
    n_blocks_g = (counts + B - 1) // B
    block_end = torch.cumsum(n_blocks_g, 0)  # exclusive end block of each group
    start_row = (block_end - n_blocks_g) * B
    onehot = F.one_hot(expert, n_experts)  # (S, n, M)
    rank = torch.gather(torch.cumsum(onehot, 1), 2, expert[..., None])[..., 0] - 1
    pos = start_row[group] + rank
    n_blocks = -(-S * n // B) + G
    source = torch.zeros(n_blocks * B, dtype=torch.long, device=expert.device)
    source[pos.reshape(-1)] = torch.arange(n, device=expert.device).repeat(S)
    block_group = torch.searchsorted(block_end, torch.arange(n_blocks, device=expert.device), right=True)
    return RoutingLayout(pos=pos, source=source, block_group=block_group.clamp_(max=G - 1),
                         n_blocks=n_blocks, block=B)


def expert_outputs_routed(cfg: Config, params: Params, x: torch.Tensor, a: torch.Tensor,
                          expert: torch.Tensor, layout: RoutingLayout | None = None,
                          workspace: Workspace | None = None) -> torch.Tensor:
    """f_{m_i}(x_i) of the routed expert only, for every run and sample: (S, n).

    Args:
        x: (n, P, d) samples (shared by the runs). expert: (S, n) routed expert index.
        layout: a precomputed ``routing_layout(expert, M)``. workspace: a ``moesim.engines.base.Workspace``
            for the gathered rows (padding rows hold a copy of sample 0, never read).
    """
    W, b = params.W, params.b
    S, M, J, d = W.shape
    if is_linear(cfg):
        u = torch.einsum("smjd,j->smd", W, a)  # (S, M, d)
        u_sel = torch.gather(u, 1, expert[..., None].expand(S, expert.shape[1], d))  # (S, n, d)
        out = (u_sel * x.sum(1)).sum(-1)
        if b is not None:
            out = out + x.shape[1] * torch.gather(b @ a, 1, expert)
        return out
    n, P, _ = x.shape
    lay = layout or routing_layout(expert, M)
    R = lay.n_blocks * lay.block
    flat = x.reshape(n, P * d)
    if workspace is not None:
        rows = torch.index_select(flat, 0, lay.source, out=workspace.get("rows", (R, P * d), x))
    else:
        rows = torch.index_select(flat, 0, lay.source)  # padding rows repeat sample 0: finite, never read
    rows3 = rows.view(lay.n_blocks, lay.block * P, d)
    Wg = W.reshape(S * M, J, d)[lay.block_group]  # (n_blocks, J, d)
    bg = b.reshape(S * M, J)[lay.block_group] if b is not None else None
    z = torch.bmm(rows3, Wg.transpose(1, 2))
    if bg is not None:
        z = z + bg[:, None, :]
    per_patch = activation_fn(cfg)(z) @ a
    return per_patch.reshape(R, P).sum(1)[lay.pos]


# --- router and gates ------------------------------------------------------------------------

def router_logits(params: Params, x_sum: torch.Tensor) -> torch.Tensor:
    """h(x) = Theta^T sum_p x^(p) for every run and sample: (S, n, M). One GEMM for all runs."""
    S, d, M = params.theta.shape
    h = x_sum @ params.theta.permute(1, 0, 2).reshape(d, S * M)  # (n, S*M)
    return h.view(-1, S, M).transpose(0, 1)


class Routing(NamedTuple):
    """Noisy top-1 routing of S runs (Section 3): logits, expert and gate, each per (run, sample)."""

    h: torch.Tensor  # (S, n, M) clean router logits
    noisy: torch.Tensor  # (S, n, M) h + r (h when there is no noise)
    expert: torch.Tensor  # (S, n) m = argmax_m (h_m + r_m)
    gate: torch.Tensor  # (S, n) the factor of the routed expert's output
    probs: torch.Tensor | None  # (S, n, M) the softmax the gate is taken from (softmax gates), else None


def route(cfg: Config, params: Params, x_sum: torch.Tensor, noise: torch.Tensor | None) -> Routing:
    """h = Theta^T x_sum, noisy top-1 m = argmax(h + r) (no noise: argmax h), and the gate."""
    h = router_logits(params, x_sum)
    noisy = h + noise if noise is not None else h
    expert = noisy.argmax(-1)
    gate, probs = gate_and_probs(cfg, h, noisy, expert)
    return Routing(h, noisy, expert, gate, probs)


def gate_and_probs(cfg: Config, h: torch.Tensor, noisy: torch.Tensor,
                   expert: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The factor of the routed expert's output (S, n), and the softmax it is taken from (or None).

    ``softmax``: pi_m(x) = softmax(h)_m of the clean logits (paper, Section 3; the top-1 gate
    is *not* renormalized to 1, so the router gets a gradient from the task loss).
    ``noisy_logit``: h_m + r_m (official synthetic code). ``noisy_softmax``: softmax(h + r)_m.
    ``unit``: pi_m / pi_m = 1, a broken model: the router still routes but gets no task gradient.
    """
    idx = expert[..., None]
    if cfg.gate == "unit":  # renormalized to 1: the output no longer depends on h
        return torch.ones_like(expert, dtype=h.dtype), None
    if cfg.gate == "noisy_logit":
        return torch.gather(noisy, 2, idx)[..., 0], None
    probs = torch.softmax(h if cfg.gate == "softmax" else noisy, -1)
    return torch.gather(probs, 2, idx)[..., 0], probs


def gate_values(cfg: Config, h: torch.Tensor, noisy: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """The gate of ``gate_and_probs`` alone: the factor of the routed expert's output (S, n)."""
    return gate_and_probs(cfg, h, noisy, expert)[0]


def load_balancing_loss(h: torch.Tensor, expert: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-style auxiliary loss per run: M * sum_m (fraction routed to m) * mean_i pi_m(x_i)."""
    density = F.one_hot(expert, n_experts).to(h.dtype).mean(1)  # (S, M)
    prob = torch.softmax(h, -1).mean(1)  # (S, M)
    return n_experts * (density * prob).sum(-1)
