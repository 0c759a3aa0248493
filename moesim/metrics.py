"""Diagnostics of an MoE run: dispatch entropy (Eq. 6.1), loads, alignments, accuracies."""

from __future__ import annotations

import numpy as np
import torch


def dispatch_counts(expert: torch.Tensor, cluster: torch.Tensor, n_clusters: int, n_experts: int) -> torch.Tensor:
    """n_{k,m}: samples of cluster k dispatched to expert m, per run. expert (S, n) -> (S, K, M)."""
    S = expert.shape[0]
    flat = (torch.arange(S, device=expert.device)[:, None] * n_clusters + cluster[None, :]) * n_experts + expert
    return torch.bincount(flat.reshape(-1), minlength=S * n_clusters * n_experts).view(S, n_clusters, n_experts)


def dispatch_entropy(counts: torch.Tensor) -> torch.Tensor:
    """Eq. (6.1): the load-weighted entropy of the cluster given the expert, H(cluster | expert).

    entropy = - sum_{m: n_m > 0} (n_m / n) sum_k (n_km / n_m) log(n_km / n_m), natural log,
    0 log 0 = 0, experts with no samples skipped. ``counts`` (..., K, M) -> (...).
    In [0, log K]: 0 iff every expert sees at most one cluster.
    """
    c = counts.to(torch.float64)
    n_m = c.sum(-2, keepdim=True)
    n = c.sum((-2, -1))
    frac = torch.where(n_m > 0, c / n_m.clamp(min=1), torch.zeros_like(c))
    plogp = torch.where(frac > 0, frac * torch.log(frac.clamp(min=1e-300)), torch.zeros_like(frac))
    return (n_m[..., 0, :] * -plogp.sum(-2)).sum(-1) / n + 0.0


def majority_experts(counts: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """m*(k) of Theorem 4.2: the expert receiving most of cluster k's samples (the first on a tie).

    ``counts`` (..., K, M) dispatch counts n_{k,m} (``dispatch_counts``), a torch tensor or anything
    numpy reads (an array, nested lists) -> (..., K), a tensor for a tensor, else a numpy array.
    """
    if isinstance(counts, torch.Tensor):
        return counts.argmax(-1)
    return np.asarray(counts).argmax(-1)


def signed_filter_alignment(W: torch.Tensor, a: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """max_j a_j <w_mj, u_k>: the best-aligned filter of each expert with each unit direction.

    The sign a_j of the second layer makes the value positive when the filter pushes the output
    towards the label of +u_k. W (S, M, J, d), directions (K, d) -> (S, M, K).
    """
    return (torch.einsum("smjd,kd->smkj", W, directions) * a).amax(-1)


def router_alignment(theta: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """<theta_m, u_k> for each run, expert and unit direction: theta (S, d, M) -> (S, M, K)."""
    return torch.einsum("sdm,kd->smk", theta, directions)


def per_cluster_accuracy(correct: torch.Tensor, cluster: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Mean of ``correct`` (..., n) within each cluster: (..., K)."""
    onehot = torch.nn.functional.one_hot(cluster, n_clusters).to(torch.float64)  # (n, K)
    return (correct.to(torch.float64) @ onehot) / onehot.sum(0).clamp(min=1)
