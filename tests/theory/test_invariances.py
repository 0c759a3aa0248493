"""Exact symmetries of whole training trajectories of Algorithm 1 (hypothesis-driven).

Each invariance holds in exact arithmetic for every configuration of Section 3 / Algorithm 1, so it
is checked on configurations drawn by hypothesis (paper and official semantics, small sizes,
float64), with the run's initial parameters and router noise given explicitly
(``moesim.trajectory.run_trajectory``): the transformed run gets transformed copies of the same
W^(0), Theta^(0) and r^(t).

Tolerance. The two runs compute the same real numbers with float64 sums taken in another order (or
through Q^T Q = I up to rounding), so each of the T <= 30 steps injects a relative error of at most
~ n eps <= 256 * 1.1e-16 = 3e-14 (sums of <= 256 terms; P d <= 120 for a rotation). What the dynamics
then does with it is measured, per drawn example, by a *control*: the same run restarted from W^(0)
perturbed by 1e-15 relative. Only trajectories that amplify it at most AMPLIFICATION_MAX = 1e3-fold
are checked (``hypothesis.assume``); elsewhere float64 cannot resolve the trajectory at all (large
router logits saturate the softmax gate, and rounding then grows ~10x per step; hypothesis found such
runs, kept as @example below). On the checked ones the two runs may differ by at most
30 * 3e-14 * 1e3 = 1e-9 = RTOL, relative to the largest entry of each compared tensor; routing must be
*identical* (continuous noise makes a top-1 near-tie within the deviation improbable: with a gap
density <= M per decision, about n T S M RTOL <= 1e-4 per example even at RTOL, 1e-9 at the typical 1e-14).

Each invariance has a broken variant below (``test_broken_*``) that the same comparison rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import assume, currently_in_test_context, event, example, given
from hypothesis import strategies as st

from moesim import generate, preset
from moesim.config import Config
from moesim.metrics import dispatch_counts, dispatch_entropy
from moesim.model import Params, init_params
from moesim.trajectory import draw_noises, run_trajectory

torch.set_num_threads(1)

RTOL = 1e-9  # see the module docstring
SEEDS = [0, 1]  # two runs at once: the batched (S = 2) code path


@dataclass
class Setup:
    cfg: Config
    theta_scale: float  # std of the entries of a random Theta^(0) (0: Algorithm 1's zero init)
    seed: int  # seed of the transformation and of Theta^(0)


@st.composite
def setups(draw, semantics=("paper", "official")) -> Setup:
    """Small float64 configs of a semantics preset (setting 1) with drawn sizes and step sizes."""
    sem = draw(st.sampled_from(semantics))
    K = draw(st.integers(2, 4))
    J = draw(st.integers(1, 4)) if sem == "paper" else draw(st.sampled_from([2, 4]))  # two heads: J even
    scale = draw(st.sampled_from([1e-3, 1e-2, 1e-1]))
    cfg = preset(
        f"{sem}-s1", "moe-nonlinear", dtype="float64", data_rng="torch", stopping="fixed",
        n_clusters=K, patch_dim=draw(st.integers(max(8, 2 * K), 24)), n_patches=draw(st.integers(3, 5)),
        n_experts=draw(st.integers(2, 6)), n_filters=J, n_train=draw(st.integers(64, 256)), n_test=1,
        n_steps=draw(st.integers(10, 30)), activation=draw(st.sampled_from(["cubic", "linear", "relu"])),
        init_sigma=scale, init_uniform_scale=scale, lr_expert=10 ** draw(st.floats(-3, -1.5)),
        lr_router=10 ** draw(st.floats(-2, 0)), data_seed=draw(st.integers(0, 2**20)),
    )
    return Setup(cfg, draw(st.sampled_from([0.0, 0.01, 0.1])), draw(st.integers(0, 2**20)))


def _small(sem: str, **overrides) -> Config:
    return preset(f"{sem}-s1", "moe-nonlinear", dtype="float64", data_rng="torch", stopping="fixed", n_test=1,
                  **overrides)


# Counterexamples hypothesis found (ci profile) when every drawn trajectory was checked. Each failed by
# a relative deviation of 1e-9 to 1e-7 appearing in the last steps, with identical routing; the control
# run (W^(0) perturbed by 1e-15) deviates from the base run as much (rotation case: 1.6e-8 in W after
# 26 steps, growing ~10x per step from step 10 on). Verdict: not a broken symmetry but rounding
# amplified by the dynamics; regime narrowed to reproducible trajectories (``require_reproducible``),
# which skips both (``test_counterexamples_are_not_reproducible`` checks that).
CHAOTIC_OFFICIAL = Setup(_small("official", n_clusters=3, n_patches=3, patch_dim=15, n_train=122, data_seed=187,
                                n_experts=2, n_filters=4, activation="cubic", init_sigma=1e-3, init_uniform_scale=1e-3,
                                lr_expert=0.029996464795662512, lr_router=0.02319088030562166, n_steps=26),
                         theta_scale=0.0, seed=150347)
CHAOTIC_PAPER = Setup(_small("paper", n_clusters=4, n_patches=3, patch_dim=19, n_train=139, data_seed=451403,
                             n_experts=6, n_filters=2, activation="linear", init_sigma=0.1, init_uniform_scale=0.1,
                             lr_expert=0.001, lr_router=0.26940334223585066, n_steps=29),
                      theta_scale=0.0, seed=293680)


def _start(setup: Setup):
    """Data, W^(0), Theta^(0) and the router noise of every step for the runs SEEDS."""
    cfg = setup.cfg
    train, _ = generate(cfg)
    params = init_params(cfg, SEEDS, dtype=torch.float64)
    g = torch.Generator().manual_seed(setup.seed)
    params.theta = setup.theta_scale * torch.randn(params.theta.shape, generator=g, dtype=torch.float64)
    return train, params, draw_noises(cfg, SEEDS, train.n)


def _run(cfg, params, x, y, noises):
    return run_trajectory(cfg, params, x, y, noises)


def deviations(got: dict, want: dict) -> dict[str, float]:
    """max |got - want| / max |want| of losses, margins and final parameters; routing mismatches."""
    out = {"routing": float((got["expert"] != want["expert"]).sum())}
    pairs = [(k, got[k], want[k]) for k in ("loss", "margin")]
    pairs += [(k, getattr(got["params"], k), getattr(want["params"], k)) for k in ("W", "b", "theta")]
    for key, g, w in pairs:
        if w is not None:
            out[key] = float((g - w).abs().max() / w.abs().max().clamp(min=1e-300))
    return out


def assert_same_trajectory(got: dict, want: dict) -> None:
    """Routing identical at every step; losses, margins and final parameters equal to RTOL."""
    dev = deviations(got, want)
    assert dev.pop("routing") == 0, f"routing differs at some (step, run, sample); deviations {dev}"
    bad = {k: v for k, v in dev.items() if not v <= RTOL}
    assert not bad, f"relative deviations {bad} exceed RTOL = {RTOL:g}"


CONTROL_PERTURBATION = 1e-15  # relative size of the control's perturbation of W^(0): a few ulps
AMPLIFICATION_MAX = 1e3  # trajectories amplifying it more are outside what float64 can check


def rounding_amplification(cfg, params, x, y, noises, base: dict) -> float:
    """How much the run ``base`` amplifies a rounding-size change of W^(0): the largest deviation of a
    control run from W^(0) (1 + 1e-15 z), z ~ N(0, 1) per entry, over CONTROL_PERTURBATION (inf if
    the control routes differently)."""
    g = torch.Generator().manual_seed(0)
    W = params.W * (1 + CONTROL_PERTURBATION * torch.randn(params.W.shape, generator=g, dtype=params.W.dtype))
    dev = deviations(_run(cfg, Params(W, params.b, params.theta), x, y, noises), base)
    return float("inf") if dev.pop("routing") else max(dev.values()) / CONTROL_PERTURBATION


def require_reproducible(cfg, params, x, y, noises, base: dict) -> None:
    """Check only trajectories that float64 can reproduce (see the module docstring); outside a
    hypothesis test (the broken-variant tests) an irreproducible setup is an error, not a skip."""
    ok = rounding_amplification(cfg, params, x, y, noises, base) <= AMPLIFICATION_MAX
    if not currently_in_test_context():
        if not ok:
            raise RuntimeError("this fixed setup is not reproducible in float64; choose a smaller step")
        return
    event("checked" if ok else f"skipped: rounding amplified > {AMPLIFICATION_MAX:g}x")
    assume(ok)


# --- (a) relabelling the experts ------------------------------------------------------------

def _permute_experts(params: Params, pi: torch.Tensor) -> Params:
    """Expert m of the new layer is expert pi[m] of the old one (W, b and Theta's columns)."""
    return Params(params.W[:, pi], None if params.b is None else params.b[:, pi], params.theta[:, :, pi])


def _check_expert_permutation(setup: Setup, pi: list[int], permute_noise: bool = True) -> None:
    cfg, pi = setup.cfg, torch.tensor(pi)
    train, params, noises = _start(setup)
    base = _run(cfg, params, train.x, train.y, noises)
    require_reproducible(cfg, params, train.x, train.y, noises, base)
    got = _run(cfg, _permute_experts(params, pi), train.x, train.y, noises[..., pi] if permute_noise else noises)
    inverse = torch.argsort(pi)  # old expert m is new expert inverse[m]
    assert_same_trajectory(got, dict(base, expert=inverse[base["expert"]],
                                     params=_permute_experts(base["params"], pi)))


@given(setups(), st.data())
def test_expert_permutation(setup, data):
    """Relabelling the experts by pi (W, b, Theta's columns and the noise's last axis) permutes the
    trajectory: equal losses, routed expert mapped by pi at every step, final parameters permuted.

    Why: the noisy top-1 argmax, the gate (softmax or noisy logit) and the per-expert normalized-GD step are
    all equivariant under a relabelling of the experts, and Algorithm 1 treats the experts alike.
    """
    _check_expert_permutation(setup, data.draw(st.permutations(range(setup.cfg.n_experts)), label="pi"))


# --- (b) rotating R^d -----------------------------------------------------------------------

def _rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))  # Haar-distributed orthogonal Q


def _rotate(params: Params, Q: torch.Tensor, router: bool = True) -> Params:
    """w_mj -> Q w_mj (W -> W Q^T) and theta_m -> Q theta_m; biases unchanged."""
    return Params(params.W @ Q.T, params.b, Q @ params.theta if router else params.theta)


def _check_rotation(setup: Setup, rotate_weights: bool = True, rotate_router: bool = True) -> None:
    cfg = setup.cfg
    train, params, noises = _start(setup)
    Q = _rotation(cfg.patch_dim, setup.seed)
    base = _run(cfg, params, train.x, train.y, noises)
    require_reproducible(cfg, params, train.x, train.y, noises, base)
    start = _rotate(params, Q, rotate_router) if rotate_weights else params
    got = _run(cfg, start, train.x @ Q.T, train.y, noises)
    assert_same_trajectory(got, dict(base, params=_rotate(base["params"], Q)))


@example(CHAOTIC_OFFICIAL)
@given(setups())
def test_rotation(setup):
    """An orthogonal Q of R^d applied to every patch and to the initialization (W -> W Q^T,
    Theta -> Q Theta) leaves losses and routing unchanged at every step; final parameters rotated.

    Why: every pre-activation <w, x^(p)> and router logit <theta_m, sum_p x^(p)> is unchanged, the
    gradients rotate with the parameters, and the Frobenius norm of normalized GD is rotation-invariant.
    """
    _check_rotation(setup)


# --- (c) relabelling the clusters -----------------------------------------------------------

def assert_relabelled(counts, counts_relabelled, sigma: torch.Tensor) -> None:
    """Row sigma[k] of the relabelled dispatch matrix is row k of the original; same entropy."""
    assert torch.equal(counts_relabelled[:, sigma, :], counts), "dispatch rows are not permuted by sigma"
    torch.testing.assert_close(dispatch_entropy(counts_relabelled), dispatch_entropy(counts), rtol=1e-12, atol=1e-12)


def _check_cluster_relabelling(setup: Setup, sigma: list[int], counts_fn=dispatch_counts) -> None:
    cfg, sigma = setup.cfg, torch.tensor(sigma)
    train, params, noises = _start(setup)
    expert = _run(cfg, params, train.x, train.y, noises)["expert"].flatten(0, 1)  # every step and run
    K, M = cfg.n_clusters, cfg.n_experts
    assert_relabelled(counts_fn(expert, train.cluster, K, M), counts_fn(expert, sigma[train.cluster], K, M), sigma)


@given(setups(), st.data())
def test_cluster_relabelling(setup, data):
    """Relabelling the clusters by sigma (cluster k -> sigma[k] for every sample) permutes the rows
    of the dispatch matrix n_{k,m} (at every step) and leaves the dispatch entropy (Eq. 6.1) unchanged.

    Why: n_{sigma(k),m} counts the same samples as n_{k,m}, and H(cluster | expert) sums over k.
    (The trajectory itself never sees the cluster ids.) Entropy tolerance 1e-12: a K-term sum reordered.
    """
    _check_cluster_relabelling(setup, data.draw(st.permutations(range(setup.cfg.n_clusters)), label="sigma"))


# --- (d) permuting the patches of each sample -----------------------------------------------

def _shuffle_patches(x: torch.Tensor, seed: int) -> torch.Tensor:
    """An independent random permutation of the P patches of each sample."""
    n, P, d = x.shape
    perm = torch.rand(n, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).argsort(1)
    return torch.gather(x, 1, perm[..., None].expand(n, P, d))


def _check_patch_permutation(setup: Setup, position_weights: torch.Tensor | None = None) -> None:
    cfg = setup.cfg
    train, params, noises = _start(setup)
    w = torch.ones(cfg.n_patches, 1, dtype=torch.float64) if position_weights is None else position_weights
    base = _run(cfg, params, train.x * w, train.y, noises)
    require_reproducible(cfg, params, train.x * w, train.y, noises, base)
    got = _run(cfg, params, _shuffle_patches(train.x, setup.seed) * w, train.y, noises)
    assert_same_trajectory(got, base)


@example(CHAOTIC_PAPER)
@given(setups())
def test_patch_permutation(setup):
    """Permuting the patches of each sample (independently per sample) changes nothing: identical
    losses, routing and parameters at every step.

    Why: the router sees sum_p x^(p) and each expert sum_p sigma(<w, x^(p)>): both are sums over patches.
    """
    _check_patch_permutation(setup)


# --- broken variants: each comparison above must reject them --------------------------------

BROKEN = Setup(preset("paper-s1", "moe-nonlinear", dtype="float64", data_rng="torch", n_clusters=3, patch_dim=12,
                      n_experts=4, n_filters=2, n_train=128, n_test=1, n_steps=12, init_sigma=0.1, lr_expert=0.01,
                      lr_router=0.5), theta_scale=0.1, seed=7)


def test_broken_expert_permutation_is_detected():
    """Permuting W, b and Theta but not the router noise is not a relabelling: rejected."""
    _check_expert_permutation(BROKEN, [1, 2, 3, 0])  # the correct relabelling passes
    with pytest.raises(AssertionError, match="routing differs"):
        _check_expert_permutation(BROKEN, [1, 2, 3, 0], permute_noise=False)


@pytest.mark.parametrize("broken", ["router not rotated", "weights not rotated"])
def test_broken_rotation_is_detected(broken):
    """Rotating the data and W but not Theta^(0) (!= 0), or the data only: rejected."""
    _check_rotation(BROKEN)
    with pytest.raises(AssertionError):
        _check_rotation(BROKEN, rotate_weights=broken == "router not rotated", rotate_router=False)


def _counts_expert_major(expert, cluster, n_clusters, n_experts):
    """A wrong dispatch matrix: the flat index built expert-major but read as (K, M) cluster-major."""
    S = expert.shape[0]
    flat = (torch.arange(S)[:, None] * n_experts + expert) * n_clusters + cluster[None, :]
    return torch.bincount(flat.reshape(-1), minlength=S * n_clusters * n_experts).view(S, n_clusters, n_experts)


def test_broken_cluster_relabelling_is_detected():
    """A dispatch matrix with the (cluster, expert) layout mixed up does not permute its rows."""
    _check_cluster_relabelling(BROKEN, [2, 0, 1])
    with pytest.raises(AssertionError, match="not permuted"):
        _check_cluster_relabelling(BROKEN, [2, 0, 1], counts_fn=_counts_expert_major)


def test_broken_patch_permutation_is_detected():
    """A model that is not patch-symmetric (patch p scaled by 1 + p / P before the router and the
    experts, a positional encoding) changes under a patch permutation: rejected."""
    P = BROKEN.cfg.n_patches
    _check_patch_permutation(BROKEN)
    with pytest.raises(AssertionError):
        _check_patch_permutation(BROKEN, 1 + torch.arange(P, dtype=torch.float64)[:, None] / P)


@pytest.mark.parametrize("setup", [CHAOTIC_OFFICIAL, CHAOTIC_PAPER], ids=["official", "paper"])
def test_counterexamples_are_not_reproducible(setup):
    """The kept counterexamples amplify a 1e-15 change of W^(0) beyond AMPLIFICATION_MAX: the guard
    skips them (float64 cannot check them), while the reproducible default setup passes it."""
    for s, reproducible in ((setup, False), (BROKEN, True)):
        train, params, noises = _start(s)
        base = _run(s.cfg, params, train.x, train.y, noises)
        amplification = rounding_amplification(s.cfg, params, train.x, train.y, noises, base)
        assert (amplification <= AMPLIFICATION_MAX) == reproducible, amplification


# --- run_trajectory itself ------------------------------------------------------------------

def test_run_trajectory_reproduces_train():
    """With init_params and draw_noises of the same seeds, run_trajectory is train(): the same
    loss at every step and the same final parameters, bit for bit (both take the eager engine's step)."""
    from moesim.training import train

    cfg = BROKEN.cfg.replace(record_every=1000)
    data = generate(cfg)
    res = train(cfg, SEEDS, data=data, engine="eager")
    out = run_trajectory(cfg, init_params(cfg, SEEDS, dtype=torch.float64), data[0].x, data[0].y,
                         draw_noises(cfg, SEEDS, data[0].n))
    assert torch.equal(out["loss"], torch.from_numpy(res.history["loss"]))
    assert torch.equal(out["params"].W, res.params.W) and torch.equal(out["params"].theta, res.params.theta)


@pytest.mark.parametrize("bad, match", [
    (dict(noises=torch.zeros(3, 2, 5, 4, dtype=torch.float64)), "noises"),
    (dict(noises=[]), "noises"),
    (dict(y=torch.zeros(128)), "train_y"),
    (dict(x=torch.zeros(128, 4, 12)), "train_x"),
    (dict(engine="autograd"), "engine"),
    (dict(engine="fused"), "fused"),
    (dict(cfg=BROKEN.cfg.replace(n_experts=5)), "params.W"),
    (dict(cfg=BROKEN.cfg.replace(architecture="single")), "architecture"),
])
def test_run_trajectory_rejects_bad_input(bad, match):
    cfg = BROKEN.cfg
    train, params, noises = _start(BROKEN)
    kw = dict(cfg=cfg, params=params, x=train.x, y=train.y, noises=noises[:2], engine="eager") | bad
    with pytest.raises(ValueError, match=match):
        run_trajectory(kw["cfg"], kw["params"], kw["x"], kw["y"], kw["noises"], engine=kw["engine"])
