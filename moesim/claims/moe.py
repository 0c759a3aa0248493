"""Theorem 4.2 and the training stages behind it (SPEC sections 6.2, 6.4, 6.5).

All claims here read the same trained runs of the model under test (nonlinear MoE on setting 1,
official and paper semantics), so one training run feeds Theorem 4.2, no-collapse and the router
claim; the exploration claim adds two short runs (20 and 35 steps) of the same configuration.
"""

from __future__ import annotations

import math

import numpy as np

from .base import Context, per_seed_check, quantity_check, register

SEMANTICS = ("official", "paper")
#: Steps of the exploration-stage checks (SPEC 6.4, T4: epoch 20 for the router, ~35 for experts).
EXPLORATION_ROUTER_STEP = 20
EXPLORATION_EXPERT_STEP = 35


def moe_run(ctx: Context, semantics: str = "official", model: str = "moe-nonlinear", **changes):
    """The model under test on setting 1 (official data seed 12 / paper's torch generator).

    Paper-semantics runs take ``ctx.scale.paper_steps`` steps unless ``changes`` says otherwise.
    """
    if semantics == "paper":
        changes.setdefault("n_steps", ctx.scale.paper_steps)
    cfg = ctx.config(f"{semantics}-s1", model, record_every=10**6, **changes)
    tag = "".join(f", {k}={v}" for k, v in changes.items() if k != "activation")
    return ctx.train(cfg, label=f"MoE {cfg.activation} ({semantics}{tag})")


def final_snapshot(result, key: str) -> np.ndarray:
    """The last recorded value of a snapshot array: (S, ...)."""
    return np.asarray(result.snapshots[key][-1])


def majority_experts(result) -> np.ndarray:
    """m*(k): the expert receiving most test points of cluster k, (S, K)."""
    return np.asarray(result.summary["test_dispatch_counts"]).argmax(-1)


def rows_of(per_expert: np.ndarray, experts: np.ndarray) -> np.ndarray:
    """``per_expert`` (S, M, ...) at ``experts`` (S, K): (S, K, ...), row k = expert experts[s, k]."""
    return per_expert[np.arange(per_expert.shape[0])[:, None], experts]


def expert_groups(result, competent: float) -> tuple[np.ndarray, np.ndarray]:
    """The groups M_k of Theorem 4.2 (3), as measured on the test set.

    Expert m belongs to M_k when most of the test points the router sends it come from cluster k
    and m alone classifies cluster k with accuracy >= ``competent``. Returns (member (S, M, K) bool,
    routed fraction (S, K): the share of cluster k's test points sent into M_k).
    """
    counts = np.asarray(result.summary["test_dispatch_counts"], dtype=np.float64)  # (S, K, M)
    acc = final_snapshot(result, "expert_cluster_accuracy")  # (S, M, K)
    S, K, M = counts.shape
    load = counts.sum(1)  # (S, M)
    main = counts.argmax(1)  # (S, M) cluster sending most points to m
    member = np.zeros((S, M, K), dtype=bool)
    s_idx, m_idx = np.nonzero(load > 0)
    k_idx = main[s_idx, m_idx]
    member[s_idx, m_idx, k_idx] = acc[s_idx, m_idx, k_idx] >= competent
    routed = (counts * member.transpose(0, 2, 1)).sum(-1) / counts.sum(-1).clip(min=1)  # (S, K)
    return member, routed


@register(
    "thm4.2", "Theorem 4.2 (1), (2)",
    "With noisy top-1 routing and normalized GD (Algorithm 1), the nonlinear MoE reaches zero training "
    "error and o(1) test error.",
    "Per seed, setting 1. Paper semantics (Algorithm 1, the theorem's algorithm): training accuracy "
    "100 % and test accuracy >= 98 %. Official code's semantics (double-softmax loss, noisy-logit gate, "
    "early stopping at the loss floor, noisy evaluation): training and test accuracy >= 98 %; the seeds "
    "with exactly zero training error are counted in the table.",
    "100 % from 'zero training error'; 98 % is SPEC 6.2 T2a's suggested assertion (measured 99.36-100 % "
    "at n = 2000-4000; paper-semantics T2c 100 %). The official code is not Algorithm 1 (SPEC 3.3) and "
    "its runs do not all reach zero training error (paper's Table 1: 99.46 +- 0.55 % test accuracy; "
    "the table counts the seeds that do), so zero training error is asserted for Algorithm 1 only.",
)
def thm42(ctx: Context):
    checks = []
    for sem in SEMANTICS:
        res = moe_run(ctx, sem)
        tr = np.asarray(res.summary["train_accuracy"], dtype=np.float64)
        te = np.asarray(res.summary["test_accuracy"], dtype=np.float64)
        if sem == "paper":
            checks.append(per_seed_check(f"{sem}: zero training error", tr >= 100.0, ctx.scale, values=tr,
                                         fmt="{:.2f}", per_seed_label="train % "))
        else:
            check = per_seed_check(f"{sem}: training accuracy >= 98 %", tr >= 98.0, ctx.scale, values=tr,
                                   fmt="{:.2f}", per_seed_label="train % ")
            check.measured += f"; zero training error in {int((tr >= 100.0).sum())}/{tr.size} seeds"
            check.values["zero_training_error_seeds"] = int((tr >= 100.0).sum())
            checks.append(check)
        checks.append(per_seed_check(f"{sem}: test accuracy >= 98 %", te >= 98.0, ctx.scale, values=te,
                                     fmt="{:.2f}", per_seed_label="test % "))
    return checks


@register(
    "no-collapse", "Theorem 4.2 (3), (4)",
    "The experts split into K non-empty groups M_k; every m in M_k is good on cluster k; the router "
    "sends cluster k to M_k with probability 1 - o(1).",
    "Per seed: the K majority experts m*(k) are distinct; m*(k) alone classifies cluster k at >= 97 % "
    "and is <= 75 % on some other cluster; all K groups M_k (competent experts whose routed points "
    "come mostly from cluster k) are non-empty and receive >= 90 % of their cluster.",
    "97 % / 75 % / distinct: SPEC 6.2 T2b (measured 100 %, 25-52 %, 4/4 distinct). 90 %: the "
    "theorem's 1 - o(1) with a 10-point margin (SPEC 5.1: the official run routes each cluster one-hot).",
)
def no_collapse(ctx: Context):
    checks = []
    for sem in SEMANTICS:
        res = moe_run(ctx, sem)
        K = res.config.n_clusters
        mstar = majority_experts(res)  # (S, K)
        sel = rows_of(final_snapshot(res, "expert_cluster_accuracy"), mstar)  # (S, K, K): m*(k) on cluster k'
        diag = np.eye(K, dtype=bool)
        own = sel[:, diag]  # (S, K) m*(k) on its own cluster
        other = np.where(diag, np.inf, sel).min(-1)  # (S, K) m*(k) on its worst other cluster
        n_distinct = (np.sort(mstar, 1)[:, 1:] != np.sort(mstar, 1)[:, :-1]).sum(1) + 1
        distinct = n_distinct == K
        member, routed = expert_groups(res, competent=0.97)
        nonempty = member.any(1).all(-1)
        checks += [
            per_seed_check(f"{sem}: majority experts m*(k) distinct", distinct, ctx.scale,
                           values=n_distinct, fmt="{:.0f}", per_seed_label="distinct "),
            per_seed_check(f"{sem}: m*(k) alone >= 97 % on cluster k (all k)", (own >= 0.97).all(1), ctx.scale,
                           values=100 * own.min(1), fmt="{:.1f}", per_seed_label="min % "),
            per_seed_check(f"{sem}: m*(k) alone <= 75 % on another cluster (all k)", (other <= 0.75).all(1),
                           ctx.scale, values=100 * other.max(1), fmt="{:.1f}", per_seed_label="max % "),
            per_seed_check(f"{sem}: K non-empty groups, router sends >= 90 % of cluster k to M_k",
                           nonempty & (routed.min(1) >= 0.9), ctx.scale, values=100 * routed.min(1),
                           fmt="{:.1f}", per_seed_label="min routed % "),
        ]
    return checks


@register(
    "router-centers", "Section 5, router-learning stage",
    "After exploration the router's gradient is dominated by the cluster-center direction: theta_m of "
    "an expert in M_k aligns with c_k, not with the features v_j.",
    "Per seed, for every k and m = m*(k): argmax_k' <theta_m, c_k'> = k; <theta_m, c_k> >= 1.25 "
    "max_j |<theta_m, v_j>|; <theta_m, c_k> > 0.1 (unit c_k).",
    "SPEC 6.5 T5's suggested assertions (measured 16/16, ratios 1.4-73, <theta, c_k> = 0.43-0.45).",
)
def router_centers(ctx: Context):
    checks = []
    res = moe_run(ctx, "official")
    mstar = majority_experts(res)  # (S, K)
    rc = final_snapshot(res, "router_center")  # (S, M, K)
    rf = final_snapshot(res, "router_feature")
    K = mstar.shape[1]
    sel_c, sel_f = rows_of(rc, mstar), rows_of(rf, mstar)  # (S, K k, K k')
    own = sel_c[:, np.arange(K), np.arange(K)]  # (S, K) <theta_{m*(k)}, c_k>
    argmax_ok = (sel_c.argmax(-1) == np.arange(K)).all(1)
    ratio = own / np.abs(sel_f).max(-1).clip(min=1e-12)
    checks += [
        per_seed_check("argmax_k' <theta_m*(k), c_k'> = k for all k", argmax_ok, ctx.scale,
                       values=(sel_c.argmax(-1) == np.arange(K)).sum(1), fmt="{:.0f}", per_seed_label="k right "),
        per_seed_check("<theta_m*(k), c_k> >= 1.25 max_j |<theta_m*(k), v_j>| for all k", (ratio >= 1.25).all(1),
                       ctx.scale, values=ratio.min(1), fmt="{:.2f}", per_seed_label="min ratio "),
        per_seed_check("<theta_m*(k), c_k> > 0.1 for all k", (own > 0.1).all(1), ctx.scale, values=own.min(1),
                       fmt="{:.3f}", per_seed_label="min "),
    ]
    return checks


@register(
    "exploration", "Section 5, exploration stage; Lemma 5.2",
    "While the router is still near zero, routing is near uniform (loads ~ n/M), and the experts "
    "already specialise: each becomes good on one cluster and stays poor on another.",
    f"Per seed (official semantics): max_m ||theta_m|| at step {EXPLORATION_ROUTER_STEP} <= 0.01 x its "
    f"final value; dispatch entropy >= 0.97 ln K and every load within n/M +- 25 % for steps < "
    f"{EXPLORATION_ROUTER_STEP}; at step {EXPLORATION_EXPERT_STEP}, >= M - 1 experts have best-cluster "
    "accuracy >= 0.9 and worst-cluster accuracy <= 0.75.",
    "SPEC 6.4 T4's suggested assertions (measured ||theta|| 1.1e-3 at step 20 vs ~0.45 final; entropy "
    ">= 0.98 ln 4 to step 30; loads 451-535 of 500; 6/6 seeds specialised at step 30).",
)
def exploration(ctx: Context):
    final = moe_run(ctx, "official")
    early = moe_run(ctx, "official", n_steps=EXPLORATION_ROUTER_STEP)
    later = moe_run(ctx, "official", n_steps=EXPLORATION_EXPERT_STEP)
    K, M, n = early.config.n_clusters, early.config.n_experts, early.config.n_train
    theta_early = early.params.theta.norm(dim=1).amax(-1).numpy()  # (S,)
    theta_final = final.params.theta.norm(dim=1).amax(-1).numpy()
    ratio = theta_early / np.clip(theta_final, 1e-30, None)
    T = EXPLORATION_ROUTER_STEP
    ent = np.asarray(early.history["dispatch_entropy"][:T])  # (T, S)
    load = np.asarray(early.history["load"][:T], dtype=np.float64)  # (T, S, M)
    load_dev = np.abs(load / (n / M) - 1).max(axis=(0, 2))  # (S,)
    acc = final_snapshot(later, "expert_cluster_accuracy")  # (S, M, K)
    specialised = ((acc.max(-1) >= 0.9) & (acc.min(-1) <= 0.75)).sum(-1)  # (S,)
    took = np.asarray(later.summary["updates"])
    return [
        per_seed_check(f"max ||theta_m|| at step {T} <= 0.01 x final", ratio <= 0.01, ctx.scale, values=ratio,
                       per_seed_label="ratio "),
        per_seed_check(f"dispatch entropy >= 0.97 ln K for steps < {T}", ent.min(0) >= 0.97 * math.log(K),
                       ctx.scale, values=ent.min(0) / math.log(K), fmt="{:.3f}", per_seed_label="min / ln K "),
        per_seed_check(f"every load within n/M +- 25 % for steps < {T}", load_dev <= 0.25, ctx.scale,
                       values=100 * load_dev, fmt="{:.1f}", per_seed_label="max deviation % "),
        per_seed_check(f">= M-1 experts specialised at step {EXPLORATION_EXPERT_STEP}",
                       (specialised >= M - 1) & (took == EXPLORATION_EXPERT_STEP), ctx.scale, values=specialised,
                       fmt="{:.0f}", per_seed_label="experts "),
    ]
