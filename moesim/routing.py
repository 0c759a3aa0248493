"""Noisy top-1 routing and its exact probabilities (Lemma 5.1).

With r_m i.i.d. Unif[0, 1], the probability that noisy top-1 routing picks expert m is

    p_m(h) = P(argmax_m' (h_m' + r_m') = m) = int_0^1 prod_{m' != m} clip(u + h_m - h_m', 0, 1) du,

(condition on r_m = u: every other r_m' must stay below u + h_m - h_m'). The integrand is a
polynomial of degree M - 1 between the breakpoints h_m' - h_m and 1 + h_m' - h_m, so Gauss-Legendre
quadrature with ceil(M / 2) nodes on each piece is exact up to rounding.
"""

from __future__ import annotations

import numpy as np
import torch


def noisy_top1(h: torch.Tensor, *, generator: torch.Generator | None = None, scale: float = 1.0) -> torch.Tensor:
    """argmax_m (h_m + scale * r_m), r ~ Unif[0,1]^M fresh per row (Algorithm 1)."""
    r = torch.rand(h.shape, generator=generator, dtype=h.dtype, device=h.device)
    return (h + scale * r).argmax(-1)


def routing_probabilities(h: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Exact p(h) of Lemma 5.1 for gating outputs ``h`` of shape (..., M); float64, same shape.

    Differentiable: autograd through it gives the Jacobian of p (a C^1 function), ties included.
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    M = h.shape[-1]
    if M == 1:
        return torch.ones_like(h)
    diff = h[..., :, None] - h[..., None, :]  # diff[..., m, m'] = h_m - h_m'
    # breakpoints in u where a factor starts (u = -diff) or stops (u = 1 - diff) growing
    raw = torch.cat([-diff, 1 - diff], -1)
    # A breakpoint outside (0, 1) is pinned to the integration limit: it carries no gradient, also
    # when it sits exactly on 0 or 1 (a plain clamp would pass the gradient there, and at ties such
    # as h = 0 autograd would move the limits of integration: a Jacobian wrong by up to 1).
    bps = torch.where((raw > 0) & (raw < 1), raw, raw.detach().clamp(0, 1))
    bps = torch.cat([bps, torch.zeros_like(diff[..., :1]), torch.ones_like(diff[..., :1])], -1)
    bps = bps.sort(-1).values  # (..., M, 2M+2)
    lo, hi = bps[..., :-1], bps[..., 1:]
    nodes, weights = np.polynomial.legendre.leggauss(M // 2 + 1)
    nodes = torch.as_tensor((nodes + 1) / 2, dtype=torch.float64)
    weights = torch.as_tensor(weights / 2, dtype=torch.float64)
    u = lo[..., None] + (hi - lo)[..., None] * nodes  # (..., M, pieces, G)
    factors = (u[..., None] + diff[..., :, None, None, :]).clamp(0, 1)  # (..., M, pieces, G, M)
    eye = torch.eye(M, dtype=torch.bool)[:, None, None, :]
    factors = torch.where(eye, torch.ones_like(factors), factors)  # drop m' = m
    integrand = factors.prod(-1)
    return ((integrand * weights).sum(-1) * (hi - lo)).sum(-1)


def routing_probabilities_mc(h: torch.Tensor | np.ndarray, n_samples: int, *,
                             generator: torch.Generator) -> torch.Tensor:
    """Monte-Carlo estimate of p(h) from ``n_samples`` noise draws (h of shape (M,) or (B, M))."""
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples} must be >= 1")
    h = torch.as_tensor(h, dtype=torch.float64)
    M = h.shape[-1]
    picks = noisy_top1(h[..., None, :].expand(*h.shape[:-1], n_samples, M), generator=generator)
    return torch.nn.functional.one_hot(picks, M).to(torch.float64).mean(-2)
