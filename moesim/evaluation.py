"""Evaluation of trained parameters: predictions of the layer, and each expert's accuracy per cluster.

``engine`` is a name of ``moesim.config.ENGINES`` or an ``Engine`` (``moesim.engines``): the
engine that runs the forward passes (``"auto"``: the fused kernel where it can run, else the torch
reference of ``moesim.model``; ``"official-ops"``: the official code's test pass).
"""

from __future__ import annotations

import torch

from . import engines, metrics
from .model import Params


def _engine(engine):
    return engines.get(engine) if isinstance(engine, str) else engine


@torch.no_grad()
def evaluate(cfg, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor | None, a: torch.Tensor, chunk_elements: int = 2**23, engine="auto"):
    """Predictions of the trained layer: (correct (S, n) bool, routed expert (S, n)).

    Routing uses the clean logits h, plus ``noise`` when the config evaluates with noise. With
    ``engine`` "auto" or "fused" the fused kernel computes it where it can (one pass, no large
    temporaries); otherwise samples are evaluated in chunks whose largest temporary
    (S x samples x P x max(d, J) values) stays near ``chunk_elements``: memory does not grow with n.
    """
    return _engine(engine).evaluate(cfg, params, x, x_sum, y, noise, a, chunk_elements)


@torch.no_grad()
def expert_cluster_accuracy(cfg, params: Params, x: torch.Tensor, y: torch.Tensor, cluster: torch.Tensor,
                            a: torch.Tensor, chunk_elements: int = 2**24, engine="auto") -> torch.Tensor:
    """Accuracy of each expert alone, sign(f_m(x)), on each cluster: (S, M, K)."""
    eng = _engine(engine)
    S, M, J, _ = params.W.shape
    K = int(cluster.max().item()) + 1 if cluster.numel() else 1
    n, P, _ = x.shape
    step = eng.chunk_rows(cfg, x, max(1, S * M * J * P), chunk_elements)
    correct = torch.cat([(eng.expert_outputs(cfg, params, x[i:i + step], a) * y[i:i + step]) > 0
                         for i in range(0, n, step)] or [eng.expert_outputs(cfg, params, x, a) * y > 0],
                        dim=2)  # (S, M, n)
    return metrics.per_cluster_accuracy(correct, cluster, K).to(torch.float32)
