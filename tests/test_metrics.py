"""Dispatch entropy, the paper's Eq. (6.1), on worked examples (the load-weighted entropy of the
cluster given the expert; book/official_code.md, 'The protocol behind Table 1')."""

from __future__ import annotations

import math

import numpy as np
import torch

from moesim.metrics import dispatch_counts, dispatch_entropy, majority_experts


def test_one_cluster_per_expert_gives_zero():
    counts = torch.tensor([[5, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 9]])  # K=3 rows, M=4 columns, one empty
    assert dispatch_entropy(counts).item() == 0.0


def test_uniform_table_gives_log_k():
    assert math.isclose(dispatch_entropy(torch.full((4, 8), 7)).item(), math.log(4), rel_tol=1e-12)


def test_empty_experts_are_ignored():
    base = torch.tensor([[2, 0], [2, 4]])
    padded = torch.tensor([[2, 0, 0], [2, 4, 0]])
    assert dispatch_entropy(base).item() == dispatch_entropy(padded).item()


def test_worked_example():
    """counts [[2,0],[2,4]] (rows clusters): -(4/8)(2 * 1/2 ln 1/2) - (4/8) * 0 = 0.3466."""
    assert math.isclose(dispatch_entropy(torch.tensor([[2, 0], [2, 4]])).item(), 0.5 * math.log(2), rel_tol=1e-12)


def test_conditional_not_marginal_entropy():
    """One expert receiving every cluster equally has entropy ln K (H of the marginal would be 0)."""
    counts = torch.tensor([[5, 0], [5, 0], [5, 0]])
    assert math.isclose(dispatch_entropy(counts).item(), math.log(3), rel_tol=1e-12)


def test_counts_from_assignments_batched():
    expert = torch.tensor([[0, 1, 1, 2], [2, 2, 2, 2]])
    cluster = torch.tensor([0, 0, 1, 1])
    c = dispatch_counts(expert, cluster, 2, 3)
    assert c.tolist() == [[[1, 1, 0], [0, 1, 1]], [[0, 0, 2], [0, 0, 2]]]


def test_majority_experts_takes_numpy_lists_and_torch():
    counts = [[[3, 1], [0, 5]], [[2, 2], [4, 1]]]  # (S, K, M)
    assert majority_experts(counts).tolist() == [[0, 1], [0, 0]]  # a tie goes to the first expert
    assert isinstance(majority_experts(np.asarray(counts)), np.ndarray)
    t = majority_experts(torch.tensor(counts))
    assert isinstance(t, torch.Tensor) and t.tolist() == [[0, 1], [0, 0]]
