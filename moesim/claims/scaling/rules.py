"""Success and the decision rules of the scaling tier: one definition for every prediction.

A run succeeds when Theorem 4.2's conclusions (1)-(4) hold with the core tier's thresholds
(``success``); the constants below fix every interval's level, margin and replicate count before
any run.
"""

from __future__ import annotations

import numpy as np


# --- success: one definition for every prediction ---------------------------------------------

#: Test accuracy (%) a successful run needs: Theorem 4.2 (2), o(1) test error, with the core tier's
#: threshold (claim ``thm4.2``: 98 %).
SUCCESS_TEST_ACCURACY = 98.0
#: An expert is *competent* on cluster k when alone it classifies >= this share of cluster k's test
#: points (Theorem 4.2 (3); the core tier's ``no-collapse`` threshold, 97 %).
COMPETENT = 0.97
#: The router must send >= this share of every cluster's test points to that cluster's group M_k
#: (Theorem 4.2 (4), 1 - o(1), with the core tier's 10-point margin: 90 %).
ROUTED = 0.90


def routed_share(dispatch_counts, expert_cluster_accuracy) -> np.ndarray:
    """Share of each cluster's test points that the router sends into its group M_k, (R, K).

    ``dispatch_counts`` (R, K, M): test points of cluster k routed to expert m (clean routing);
    ``expert_cluster_accuracy`` (R, M, K): expert m alone on cluster k. M_k (Theorem 4.2 (3)) holds
    the experts whose routed test points come mostly from cluster k and that are competent on all of
    cluster k (accuracy >= ``COMPETENT``), so the groups are disjoint by construction.
    """
    counts = np.asarray(dispatch_counts, dtype=np.float64)
    acc = np.asarray(expert_cluster_accuracy, dtype=np.float64)
    R, K, M = counts.shape
    if acc.shape != (R, M, K):
        raise ValueError(f"expert_cluster_accuracy has shape {acc.shape}, expected {(R, M, K)} "
                         "(runs, experts, clusters)")
    load = counts.sum(1)  # (R, M)
    main = counts.argmax(1)  # (R, M): the cluster sending most points to expert m
    competent = np.take_along_axis(acc, main[..., None], axis=2)[..., 0] >= COMPETENT  # (R, M)
    member = (np.arange(K)[None, None, :] == main[..., None]) & (competent & (load > 0))[..., None]  # (R, M, K)
    inside = np.einsum("rkm,rmk->rk", counts, member.astype(np.float64))
    return inside / np.clip(counts.sum(-1), 1, None)


def success(train_accuracy, test_accuracy, dispatch_counts, expert_cluster_accuracy) -> np.ndarray:
    """Theorem 4.2's conclusions, per run: the one definition of success of the scaling tier.

    A run succeeds when (1) its training error is zero (training accuracy 100 %), (2) its test
    accuracy is >= ``SUCCESS_TEST_ACCURACY``, and (3)-(4) no collapse: every cluster k has a
    non-empty group M_k of competent experts and the router sends >= ``ROUTED`` of cluster k's test
    points into M_k (``routed_share``). Arrays over R runs; returns (R,) bool. A failed (diverged or
    raised) run is passed as NaN accuracies and counts as no success.
    """
    tr = np.nan_to_num(np.asarray(train_accuracy, dtype=np.float64), nan=-1.0)
    te = np.nan_to_num(np.asarray(test_accuracy, dtype=np.float64), nan=-1.0)
    share = routed_share(dispatch_counts, expert_cluster_accuracy).min(-1)
    return (tr >= 100.0) & (te >= SUCCESS_TEST_ACCURACY) & (share >= ROUTED)


# --- decision rules ------------------------------------------------------------------------------

#: Confidence of every interval of this tier (two-sided bootstrap/likelihood intervals are 95 %).
LEVEL = 0.95
#: An exponent predicted by an order agrees when its 95 % interval meets [theory - d, theory + d].
#: The orders hide logarithmic factors (O~, Theta of log log d): a factor ln(1/x) changes a power
#: fitted over x in our grids (n in 2000..16000, sigma_0 in 1e-3..0.25) by 1/ln(1/x) ~ 0.1 to 0.2.
#: The smaller value, 0.1, is the margin.
EXPONENT_MARGIN = 0.1
#: Royall's benchmark of strong evidence: a likelihood ratio of 8 (log 8 = 2.08) between two models.
LIKELIHOOD_RATIO = 8.0
#: Significance of the one-sided trend tests (permutation p-values).
ALPHA = 0.05
#: The 90 % success level of "experts needed" (the issue's level; ``moesim.phase.SUCCESS_LEVEL``).
EXPERTS_LEVEL = 0.9
#: Routing has left uniform exploration once the training dispatch entropy (Eq. 6.1) drops below
#: this share of ln K. Uniform routing of n samples over M experts gives ln K minus a finite-sample
#: bias (K - 1) M / (2 n) ~ 0.01 (Miller-Madow; n = 1280, M = 8); 5 % of ln 4 = 0.07 is well below it.
EXPLORATION_ENTROPY = 0.95
#: Bootstrap replicates of every interval; the generator seed makes the verdicts reproducible.
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 20220808
#: Permutations of every trend test.
PERMUTATIONS = 20000
