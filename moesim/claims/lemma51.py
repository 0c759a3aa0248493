"""Lemma 5.1: noisy top-1 routing probabilities are Lipschitz in the router outputs (pure math).

The lemma states ||p(h) - p(h_hat)||_inf <= M^2 ||h - h_hat||_inf. The sharp constant is 2 for
every M >= 2 (``SHARP_DERIVATION``), attained as h_hat -> h = 0; the claim checks both, and
searches for the supremum of the local constant by gradient ascent. Every check takes the routing
probabilities ``p`` as an argument (``lemma51_checks``) so that a wrong ``p`` can be shown to fail.
"""

from __future__ import annotations

import math
import typing

import torch

from ..routing import routing_probabilities, routing_probabilities_mc
from .base import Check, Context, exact_check, register

#: Numbers of experts M of the random pairs.
EXPERT_COUNTS = (2, 3, 4, 8, 16)
#: Monte-Carlo draws per routing vector, and how many vectors are compared with Monte Carlo.
MC_SAMPLES, MC_VECTORS = 200_000, 6
#: Floating-point tolerance of the identities (sum = 1, p(0) = 1/M, shift invariance).
EXACT_TOL = 1e-10

SHARP_DERIVATION = (
    "p is shift invariant (p(h + c 1) = p(h)), p_m is nondecreasing in h_m and nonincreasing in every "
    "h_j, j != m. So row m of the Jacobian J = dp/dh has J_mm >= 0, J_mj <= 0 and J_mm = -sum_{j != m} J_mj: "
    "its absolute row sum is 2 J_mm, and ||J||_{inf->inf} = 2 max_m J_mm. Write p_m(h) = P(Z < h_m) with "
    "Z = A - r_m, A = max_{j != m}(h_j + r_j) independent of r_m ~ U[0,1]: J_mm is the density of Z at h_m, "
    "f_Z(z) = P(A in [z, z + 1]) <= 1. Hence ||J(h)||_{inf->inf} <= 2 everywhere, and along the segment "
    "from h to h_hat (p is Lipschitz, so this holds for almost every segment, then for all by continuity) "
    "||p(h) - p(h_hat)||_inf <= 2 ||h - h_hat||_inf. At h = 0, A is the maximum of M - 1 uniforms on [0, 1], "
    "f_Z(0) = 1, and by symmetry J(0) = M/(M-1) I - 1/(M-1) 1 1^T (diagonal 1, off-diagonal -1/(M-1)); the "
    "direction v = 2 e_m - 1 gives (J v)_m = 2 = 2 ||v||_inf. So L = 2 is sharp for every M >= 2 "
    "(M = 1: p = 1, L = 0); 2 <= M^2, and the lemma's bound holds with room.")

#: The sharp Lipschitz constant of p in the inf-norm, M >= 2 (``SHARP_DERIVATION``).
SHARP_CONSTANT = 2.0
#: Bound on the float64 rounding error of one computed probability. Each p_m is a sum of at most
#: (2M + 1) ceil(M/2 + 1) quadrature terms, each a product of M factors in [0, 1]: the error is at
#: most about (M + (2M + 1)(M/2 + 1)) u <= 200 u ~ 4e-14 for M <= 16 (u = 1.1e-16), plus the
#: breakpoints' rounding (|h| u per breakpoint times the integrand's slope <= M - 1). 1e-12 leaves a
#: factor > 10 (measured proxies in benchmarks/results/calibration/lemma51.md).
PROB_ROUNDING = 1e-12
#: Bound on the rounding error of an autograd Jacobian row sum (same analysis, M derivative
#: terms per row: a few 1e-13); 1e-9 is far below any broken p's excess (>= 0.5, measured).
JAC_ROUNDING = 1e-9
#: Central-difference step of the finite-difference Jacobian.
FD_STEP = 1e-6
#: Gradient ascent of the local constant: steps, and the geometric schedule of the step size
#: (inf-norm of the move of h) from the first to the last step.
SEARCH_STEPS, SEARCH_LR = 60, (0.1, 1e-6)
#: How far below 2 the found supremum may stay. The local constant of the true p is 2 J_mm, a
#: function of h whose partial derivatives sum (in absolute value) to at most 4 (M - 1) (J_mm =
#: F_A(h_m + 1) - F_A(h_m): its slope along h_m is a difference of two densities of A, each <= M - 1;
#: along each other h_j at most 1), and the ascent ends with moves of 1e-6: near the maximiser
#: (a tie h_m = max_{j != m} h_j) it stays within 4 (M - 1) x (a few last steps) ~ 1e-4 of 2 for
#: M <= 16. 1e-3 is that with room;
#: a broken p misses by >= 0.5 (softmax: sup 1/2; noise U[0, 2]: sup 1).
SEARCH_GAP = 1e-3
#: Expert counts and random starts of the supremum search per scale.
SEARCH_COUNTS = {"quick": (2, 3, 4, 8), "full": (2, 3, 4, 8, 16)}
SEARCH_STARTS = {"quick": 2, "full": 6}
#: Starting points are drawn in [-START_SPREAD, START_SPREAD]^M: all gaps h_i - h_j < 1, so every
#: p_m is strictly inside (0, 1) and the ascent never starts on a flat piece (J = 0).
START_SPREAD = 0.45

ProbFn = typing.Callable[[torch.Tensor], torch.Tensor]


def lipschitz_ratio(h: torch.Tensor, h_hat: torch.Tensor, p: ProbFn = routing_probabilities) -> torch.Tensor:
    """||p(h) - p(h_hat)||_inf / ||h - h_hat||_inf for each row of h, h_hat (..., M)."""
    h, h_hat = torch.as_tensor(h, dtype=torch.float64), torch.as_tensor(h_hat, dtype=torch.float64)
    dp = (p(h) - p(h_hat)).abs().amax(-1)
    dh = (h - h_hat).abs().amax(-1)
    return dp / dh


def zero_jacobian(M: int) -> torch.Tensor:
    """Closed form of dp/dh at h = 0: M/(M-1) I - 1/(M-1) 1 1^T (diagonal 1, off-diagonal -1/(M-1))."""
    if M < 2:
        raise ValueError(f"M={M} must be >= 2 (for M = 1, p = 1 and its Jacobian is 0)")
    return (M / (M - 1)) * torch.eye(M, dtype=torch.float64) - torch.full((M, M), 1 / (M - 1), dtype=torch.float64)


def jacobian(h: torch.Tensor, p: ProbFn = routing_probabilities) -> torch.Tensor:
    """Autograd Jacobian J[..., m, j] = dp_m/dh_j of each row of h (..., M), float64."""
    h = torch.as_tensor(h, dtype=torch.float64).detach().requires_grad_(True)
    out = p(h)
    M = h.shape[-1]
    if not out.requires_grad:  # p does not depend on h
        return torch.zeros(*h.shape, M, dtype=torch.float64)
    eye = torch.eye(M, dtype=out.dtype).reshape(M, *([1] * (out.dim() - 1)), M).expand(M, *out.shape)
    (J,) = torch.autograd.grad(out, h, grad_outputs=eye, is_grads_batched=True)
    return J.movedim(0, -2)


def jacobian_fd(h: torch.Tensor, p: ProbFn = routing_probabilities, step: float = FD_STEP) -> torch.Tensor:
    """Central-difference Jacobian of p at one h (M,): (p(h + s e_j) - p(h - s e_j)) / 2s.

    For the true p each entry of J is Lipschitz with constant <= 2 (M - 1) in the inf-norm (its
    partial derivatives: <= M - 1 along h_m, <= 1 along each other coordinate), so the error is at
    most (M - 1) s plus rounding PROB_ROUNDING / s.
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    E = step * torch.eye(h.shape[-1], dtype=torch.float64)
    return ((p(h + E) - p(h - E)) / (2 * step)).T


def local_constant(h: torch.Tensor, p: ProbFn = routing_probabilities) -> torch.Tensor:
    """sup_v ||J(h) v||_inf / ||v||_inf = max_m sum_j |J_mj(h)| for each row of h (..., M)."""
    return jacobian(h, p).abs().sum(-1).amax(-1)


def sup_search(starts: torch.Tensor, p: ProbFn = routing_probabilities, steps: int = SEARCH_STEPS,
               lr: tuple[float, float] = SEARCH_LR) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient ascent of the local constant max_m sum_j |J_mj(h)| from each start (S, M).

    Each step differentiates the largest row, with the signs of its entries held fixed, by
    autograd through ``p`` (second derivatives), and moves h by a step of inf-norm ``lr[0]``
    decaying geometrically to ``lr[1]``. Returns the best value seen per start (S,) and its h (S, M).
    """
    if steps < 2:
        raise ValueError(f"steps={steps} must be >= 2")
    h = torch.as_tensor(starts, dtype=torch.float64).clone()
    S = h.shape[0]
    best = torch.full((S,), -math.inf, dtype=torch.float64)
    best_h = h.clone()
    rows = torch.arange(S)
    for i in range(steps):
        J = jacobian(h, p)
        sums = J.abs().sum(-1)  # (S, M)
        value, m = sums.max(-1)
        better = value > best
        best = torch.where(better, value, best)
        best_h[better] = h[better]
        sign = torch.sign(J[rows, m]).detach()  # (S, M)
        hh = h.clone().requires_grad_(True)
        out = p(hh)
        if not out.requires_grad:
            break
        (grad_m,) = torch.autograd.grad(out[rows, m].sum(), hh, create_graph=True)
        if not grad_m.requires_grad:  # J does not depend on h: nothing to climb
            break
        (g,) = torch.autograd.grad((grad_m * sign).sum(), hh)
        size = lr[0] * (lr[1] / lr[0]) ** (i / (steps - 1))
        h = h + size * g / g.abs().amax(-1, keepdim=True).clamp(min=1e-300)
    return best, best_h


def random_pairs(M: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs (h, h_hat) in R^M: half far apart, half close (the local Lipschitz constant).

    h ~ N(0, s^2) with s log-uniform in [0.01, 3]; h_hat = h + delta, delta ~ N(0, t^2) with t
    log-uniform in [1e-4, 3].
    """
    s = 10 ** (torch.rand(count, 1, generator=generator, dtype=torch.float64) * 2.5 - 2)
    t = 10 ** (torch.rand(count, 1, generator=generator, dtype=torch.float64) * 4.5 - 4)
    h = torch.randn(count, M, generator=generator, dtype=torch.float64) * s
    h_hat = h + torch.randn(count, M, generator=generator, dtype=torch.float64) * t
    return h, h_hat


def search_starts(M: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` starting points of the supremum search, uniform in [-START_SPREAD, START_SPREAD]^M."""
    return (2 * torch.rand(count, M, generator=generator, dtype=torch.float64) - 1) * START_SPREAD


def lemma51_checks(p: ProbFn = routing_probabilities, *, pairs: int = 400,
                   search_counts: typing.Sequence[int] = SEARCH_COUNTS["quick"],
                   search_starts_per_m: int = SEARCH_STARTS["quick"], seed: int = 51) -> list[Check]:
    """Every check of Lemma 5.1 on the routing probabilities ``p`` (the claim uses the exact one).

    ``pairs`` random pairs (h, h_hat) over ``EXPERT_COUNTS``; supremum search for each M in
    ``search_counts`` from ``search_starts_per_m`` random starts; everything drawn from
    ``torch.Generator().manual_seed(seed)``. Each check carries ``values["check"]``: ``lemma``,
    ``sharp``, ``jacobian0``, ``sup``, ``identities``, ``monte_carlo``.
    """
    if pairs < len(EXPERT_COUNTS):
        raise ValueError(f"pairs={pairs} must be >= {len(EXPERT_COUNTS)} (one per M in {EXPERT_COUNTS})")
    if search_starts_per_m < 1 or not search_counts or min(search_counts) < 2:
        raise ValueError(f"search_counts={tuple(search_counts)} (each M >= 2) and search_starts_per_m="
                         f"{search_starts_per_m} (>= 1) must be non-empty")
    g = torch.Generator().manual_seed(seed)
    per_m = pairs // len(EXPERT_COUNTS)
    worst, bad_lemma, bad_sharp, sums, zeros, shifts = {}, 0, 0, 0.0, 0.0, 0.0
    for M in EXPERT_COUNTS:
        h, h_hat = random_pairs(M, per_m, g)
        ratio = lipschitz_ratio(h, h_hat, p)
        dh = (h - h_hat).abs().amax(-1)
        worst[M] = float(ratio.max())
        bad_lemma += int((ratio > M**2).sum())
        bad_sharp += int((ratio > SHARP_CONSTANT + 2 * PROB_ROUNDING / dh).sum())
        ph = p(h)
        sums = max(sums, float((ph.sum(-1) - 1).abs().max()))
        zeros = max(zeros, float((p(torch.zeros(M, dtype=torch.float64)) - 1 / M).abs().max()))
        c = torch.randn(per_m, 1, generator=g, dtype=torch.float64) * 5
        shifts = max(shifts, float((p(h + c) - ph).abs().max()))
    n_pairs = per_m * len(EXPERT_COUNTS)
    shown = ", ".join(f"M={M}: {v:.4f}" for M, v in worst.items())
    checks = [
        exact_check("Lemma 5.1 as stated: ||p(h) - p(h_hat)||_inf <= M^2 ||h - h_hat||_inf on every pair",
                    bad_lemma == 0, f"{bad_lemma}/{n_pairs} violations; max ratio {shown}",
                    check="lemma", max_ratio=worst, pairs=n_pairs),
        exact_check("sharp constant: ratio <= 2 + 2e-12 / ||h - h_hat||_inf (float64 rounding) on every pair",
                    bad_sharp == 0, f"{bad_sharp}/{n_pairs} violations; max ratio {shown}",
                    check="sharp", max_ratio=worst, pairs=n_pairs),
    ]
    # closed-form Jacobian at h = 0 against autograd (exact up to rounding) and central differences
    err_ad, err_fd, ok = {}, {}, True
    for M in EXPERT_COUNTS:
        J0 = zero_jacobian(M)
        zero = torch.zeros(M, dtype=torch.float64)
        err_ad[M] = float((jacobian(zero, p) - J0).abs().max())
        err_fd[M] = float((jacobian_fd(zero, p) - J0).abs().max())
        ok &= err_ad[M] <= JAC_ROUNDING and err_fd[M] <= (M - 1) * FD_STEP + PROB_ROUNDING / FD_STEP
    checks.append(exact_check(
        "dp/dh(0) = M/(M-1) I - 1/(M-1) 1 1^T: autograd within 1e-9, central differences (step 1e-6) within "
        "(M - 1) 1e-6 + 1e-12 / 1e-6", ok,
        "max |error| autograd " + ", ".join(f"M={M}: {v:.1e}" for M, v in err_ad.items())
        + "; differences " + ", ".join(f"M={M}: {v:.1e}" for M, v in err_fd.items()),
        check="jacobian0", autograd_error=err_ad, fd_error=err_fd))
    # supremum of the local constant, by gradient ascent from random starts
    found, at = {}, {}
    for M in search_counts:
        best, best_h = sup_search(search_starts(M, search_starts_per_m, g), p)
        i = int(best.argmax())
        found[M], at[M] = float(best[i]), (best_h[i] - best_h[i].max()).tolist()
    lo, hi = SHARP_CONSTANT - SEARCH_GAP, SHARP_CONSTANT + JAC_ROUNDING
    checks.append(exact_check(
        f"sup_h ||dp/dh||_inf->inf found by gradient ascent is 2 (in [{lo:g}, 2 + {JAC_ROUNDING:g}]) for each M",
        all(lo <= v <= hi for v in found.values()),
        ", ".join(f"M={M}: {v:.9f}" for M, v in found.items())
        + f" ({search_starts_per_m} starts x {SEARCH_STEPS} steps each)",
        check="sup", sup=found, argmax_minus_max=at))
    checks.append(exact_check(
        "sum_m p_m = 1, p(0) = 1/M, p(h + c 1) = p(h) (|error| <= 1e-10)", max(sums, zeros, shifts) <= EXACT_TOL,
        f"max |error| {max(sums, zeros, shifts):.1e}", check="identities", sum_error=sums, zero_error=zeros,
        shift_error=shifts))
    z_max = 0.0
    for i in range(MC_VECTORS):
        M = EXPERT_COUNTS[i % len(EXPERT_COUNTS)]
        h = torch.randn(M, generator=g, dtype=torch.float64) * 0.5
        ph = p(h).detach()
        mc = routing_probabilities_mc(h, MC_SAMPLES, generator=g)
        sd = (ph * (1 - ph) / MC_SAMPLES).sqrt().clamp(min=1e-12)
        z_max = max(z_max, float(((mc - ph).abs() / sd).max()))
    checks.append(exact_check("p within 4 sigma of Monte Carlo of noisy top-1 routing (2e5 draws)", z_max <= 4.0,
                              f"max |z| = {z_max:.2f}", check="monte_carlo", max_z=z_max, vectors=MC_VECTORS))
    return checks


@register(
    "lemma5.1", "Lemma 5.1",
    "For gating outputs h, h_hat in R^M and r_m iid Unif[0,1], p_m(h) = P(argmax_m' (h_m' + r_m') = m) "
    "satisfies ||p(h) - p(h_hat)||_inf <= M^2 ||h - h_hat||_inf. Sharp form: the constant M^2 can be replaced "
    "by 2 for every M >= 2, and 2 is attained as h_hat -> h = 0. Derivation: " + SHARP_DERIVATION,
    "Over random pairs for M in {2, 3, 4, 8, 16}: ratio <= M^2 (the lemma) and <= 2 (sharp); the Jacobian at "
    "h = 0 equals the closed form (autograd and finite differences); gradient ascent of the local constant "
    "||dp/dh||_inf->inf from random starts (M in {2, 3, 4, 8}; full: also 16) finds 2 and nothing above; "
    "sum_m p_m = 1; p(0) = 1/M; p(h + c 1) = p(h); the exact p agrees with Monte Carlo (2e5 draws) within 4 sigma.",
    "M^2 from the lemma; 2 from the derivation in the statement, plus float64 rounding of each probability "
    "(<= 1e-12, error analysis in moesim.claims.lemma51) divided by ||h - h_hat||; closed form exact, autograd "
    "to 1e-9 and central differences to (M - 1) 1e-6 + 1e-6 (the Jacobian's Lipschitz constant <= 2 (M - 1) "
    "times half the step, plus rounding); the ascent's shortfall below 2 <= 1e-3 (its last moves are 1e-6 "
    "and the local constant is 4 (M - 1)-Lipschitz); identities exact to 1e-10; 4 sigma Monte-Carlo band "
    "over 6 vectors x M coordinates (3 sigma widened for the multiple comparisons).",
)
def lemma51(ctx: Context):
    tier = "full" if ctx.scale.name == "full" else "quick"
    return lemma51_checks(routing_probabilities, pairs=ctx.scale.lemma_pairs, search_counts=SEARCH_COUNTS[tier],
                          search_starts_per_m=SEARCH_STARTS[tier])
