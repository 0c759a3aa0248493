"""The scaling tier (``moesim.claims.scaling``): Theorem 4.2's orders as statistical tests.

Default tier (seconds): the one definition of success, each claim's fit and decision rule on
synthetic per-run tables drawn from a model that obeys the theory and from a broken one that does not
(the rule must pass the first and fail the second), the coupon-collector check on real
initializations (correct and with every expert sharing expert 0's init), the YAML files against the
specs, and the whole machinery (Dask, run store, read-back, export) on the ``smoke`` grid.

Slow tier (``pytest -m slow``): every scaling claim on its full grid, the same objects
``moesim verify --scaling`` runs; the runs come from the run store ``runs/scaling.sqlite`` when the
tier has been run (``python benchmarks/small_runs.py tier``), otherwise they are trained (about an hour
on 2 cores).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moesim.claims import QUICK, Context, get, names
from moesim.claims import scaling as sc
from moesim.config import preset

ROOT = Path(__file__).resolve().parents[2]


# --- the shared definition of success -----------------------------------------------------------

def _run(counts, acc, train=100.0, test=100.0):
    return sc.success([train], [test], np.asarray(counts)[None], np.asarray(acc)[None])[0]


def test_success_needs_every_conclusion_of_theorem_42():
    K, M = 2, 3
    counts = np.array([[500, 0, 0], [0, 500, 0]])  # (K, M): cluster k -> expert k
    good = np.array([[1.0, 0.5], [0.5, 1.0], [0.5, 0.5]])  # (M, K): expert m alone on cluster k
    assert _run(counts, good)
    assert not _run(counts, good, train=99.9)  # (1) zero training error
    assert not _run(counts, good, test=97.9)  # (2) test accuracy
    collapsed = np.array([[500, 0, 0], [500, 0, 0]])  # both clusters on expert 0
    assert not _run(collapsed, good)  # (3)-(4): cluster 1 has no group
    split = np.array([[300, 0, 200], [0, 500, 0]])  # cluster 0 on experts 0 and 2, both competent on it
    assert _run(split, np.array([[1.0, 0.5], [0.5, 1.0], [0.98, 0.5]]))
    # expert 2 receives 40 % of cluster 0 but is not competent on all of cluster 0: only 60 % is routed to M_0
    assert not _run(split, np.array([[1.0, 0.5], [0.5, 1.0], [0.9, 0.5]]))
    share = sc.routed_share(split[None], np.array([[1.0, 0.5], [0.5, 1.0], [0.9, 0.5]])[None])
    assert np.allclose(share, [[0.6, 1.0]])
    assert not sc.success([math.nan], [math.nan], counts[None], good[None])[0]  # a failed run
    with pytest.raises(ValueError, match="expert_cluster_accuracy"):
        sc.routed_share(counts[None], good.T[None])
    assert (K, M) == counts.shape


# --- each claim's fit and rule on synthetic tables: the theory passes, a broken model fails ----------

def _exploration_table(b_sigma=0.5, b_eta=-1.0, h_slope=2.0, rng=None, end_scale=0.8):
    rng = rng or np.random.default_rng(0)
    rows = []
    for s0 in (1e-3, 1e-2, 0.1):
        for eta in (2.5e-4, 5e-4, 1e-3):
            T1 = math.floor(s0**0.5 / eta)
            for seed in range(6):
                end = end_scale * 10 * s0**b_sigma * eta**b_eta * math.exp(0.05 * rng.normal())
                rows.append(dict(init_sigma=s0, lr_expert=eta, seed=seed, T1=T1, exploration_end=end,
                                 router_output_max_T1=0.1 * s0**h_slope * math.exp(0.1 * rng.normal())))
    return pd.DataFrame(rows)


def test_exploration_rules_pass_the_theory_and_fail_a_wrong_exponent():
    ok = sc.analyse_exploration(_exploration_table())
    assert [c.passed for c in ok] == [True, True, True, True], [c.measured for c in ok]
    assert abs(ok[1].values["fitted"] - 0.5) < 0.05
    # broken: the stage ends at eta^-1 sigma0^1 (a sigma0 exponent off by 1/2) and h ~ sigma0^1 at T1
    bad = sc.analyse_exploration(_exploration_table(b_sigma=1.0, h_slope=1.0))
    assert bad[0].passed and not bad[1].passed and not bad[2].passed
    # broken: the router leaves uniform routing before T1 (end = T1 / 4)
    early = sc.analyse_exploration(_exploration_table(end_scale=0.025))
    assert not early[3].passed


def _experts_table(shape="K log K", rng=None, seeds=12):
    rng = rng or np.random.default_rng(1)
    g = sc.SHAPES[shape]
    rows = []
    for K in (2, 3, 4, 6, 8):
        for M in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48):
            p = 1 / (1 + math.exp(-(-6 + 5 * math.log(M / float(g(np.array([K]))[0])))))
            for seed in range(seeds):
                rows.append(dict(n_clusters=K, n_experts=M, seed=seed, success=bool(rng.random() < p)))
    return pd.DataFrame(rows)


def _coverage(draws=400, rng=None, broken=False):
    rng = rng or np.random.default_rng(2)
    rows = []
    for K in (2, 4, 8):
        for M in (2, 4, 8, 16):
            p = sc.coverage_probability(K, M)
            x = int(rng.binomial(draws, 0.5 * p if broken else p))
            rows.append(dict(n_clusters=K, n_experts=M, draws=draws, covered=x, formula=p))
    return pd.DataFrame(rows)


def test_experts_rule_prefers_the_true_shape():
    ok = sc.analyse_experts(_experts_table("K log K"), _coverage())
    assert ok[0].passed and ok[1].passed, [c.measured for c in ok]
    assert ok[0].values["fit"]["power_interval"][0] <= ok[0].values["fit"]["klogk_power"]
    # broken: the threshold grows as K (a model that needs far fewer experts at large K)
    bad = sc.analyse_experts(_experts_table("K"), _coverage())
    assert not bad[0].passed and bad[0].values["best_alternative"] == "K"
    # broken: initializations cover the clusters half as often as the coupon collector says
    assert not sc.analyse_experts(_experts_table("K log K"), _coverage(broken=True))[1].passed
    # broken: a model that never succeeds makes every shape equally likely: no verdict for K log K
    never = _experts_table("K log K").assign(success=False)
    assert not sc.analyse_experts(never, _coverage())[0].passed


def test_coverage_at_initialization_is_the_coupon_collector_and_a_shared_init_breaks_it():
    grid = sc.Grid(**{**sc.GRID_SIZES["book"].__dict__, "clusters": (2, 4), "experts": (4, 8), "coverage_draws": 300})
    cov = sc.coverage_table(grid)
    check = sc.analyse_experts(_experts_table("K log K"), cov)[1]
    assert check.passed, check.measured
    # broken model: every expert starts from expert 0's W^(0): all favour one cluster, nothing is covered
    cfg = preset(sc.WORKING_PRESET, "moe-nonlinear", n_clusters=4, n_experts=8, n_filters=3, shared_init=True)
    fav = sc.init_favoured_clusters(cfg, range(50))
    assert all(len(set(f.tolist())) == 1 for f in fav)
    broken = cov.assign(covered=0)
    assert not sc.analyse_experts(_experts_table("K log K"), broken)[1].passed
    assert sc.coupon_experts(4) == 13 and abs(sc.coverage_probability(4, 8) - 0.6231) < 1e-3


def _alignment_table(b=-0.5, rng=None):
    rng = rng or np.random.default_rng(3)
    rows = [dict(n_train=n, seed=s, feature_center_ratio=3 * n**b * math.exp(0.1 * rng.normal()))
            for n in (2000, 4000, 8000, 16000) for s in range(8)]
    return pd.DataFrame(rows)


def test_alignment_rule():
    assert sc.analyse_alignment(_alignment_table(-0.5))[0].passed
    # broken: feature terms that do not average out (ratio flat in n)
    assert not sc.analyse_alignment(_alignment_table(0.0))[0].passed


def _dimension_table(p_of_d, rng=None, seeds=20):
    rng = rng or np.random.default_rng(4)
    rows = []
    for d in (32, 64, 128, 256):
        for s in range(seeds):
            p = p_of_d(d)
            rows.append(dict(patch_dim=d, seed=s, sigma_exponent=round(1 / 3, 4), success=bool(rng.random() < p),
                             test_accuracy=100 * p + rng.normal()))
    return pd.DataFrame(rows)


def test_dimension_trend_rules():
    ok = sc.analyse_dimension(_dimension_table(lambda d: {32: 0.2, 64: 0.4, 128: 0.7, 256: 0.95}[d]))
    assert ok[0].passed and ok[1].passed, [c.measured for c in ok]
    # broken: success does not depend on d
    flat = sc.analyse_dimension(_dimension_table(lambda d: 0.5))
    assert not flat[0].passed and not flat[1].passed


def _noise_table(threshold_of_d, rng=None, seeds=8):
    rng = rng or np.random.default_rng(5)
    rows = []
    for d in (32, 64, 128):
        for level in (1.0, 1.5, 2.2, 3.3, 5.0, 7.5, 11.0):
            p = 1 / (1 + (level / threshold_of_d(d)) ** 6)
            rows += [dict(patch_dim=d, level=level, seed=s, success=bool(rng.random() < p)) for s in range(seeds)]
    return pd.DataFrame(rows)


def test_noise_threshold_rules():
    growing = _noise_table(lambda d: 0.5 * d**0.5)
    checks = sc.analyse_noise(growing, growing)
    assert all(c.passed for c in checks), [c.measured for c in checks]
    assert 0.2 < checks[0].values["slope"] < 0.8
    # broken: a threshold that shrinks like d^-1/2 (noise allowance falling with d)
    shrinking = _noise_table(lambda d: 30 * d**-0.5)
    assert not any(c.passed for c in sc.analyse_noise(shrinking, shrinking))


def test_trend_test_and_power_fit_units():
    rho, p = sc.trend_test([0, 0, 0, 0, 1, 1, 1, 1], [1, 2, 3, 4, 5, 6, 7, 8])
    assert rho > 0.8 and abs(p - 1 / 70) < 0.005  # exact: 1 of the C(8, 4) = 70 arrangements
    rho, p = sc.trend_test([0, 0, 0, 1, 1, 1], [1, 1, 2, 2, 3, 3])
    assert abs(p - 2 / 20) < 0.01  # ties in the dose: 2 of 20 arrangements reach rho
    rho, p = sc.trend_test([1, 1, 1, 0, 0, 0], [1, 1, 2, 2, 3, 3])
    assert p > 0.9
    fit = sc.power_fit([8.0, 8.0, 27.0, 27.0, -1.0], {"x": [2, 2, 3, 3, 4]}, [0, 0, 1, 1, 2], reps=50)
    assert abs(fit.coef["x"] - 3) < 1e-9 and fit.dropped == 1


# --- specs, YAML and the machinery end to end -----------------------------------------------------

def test_yaml_files_are_the_full_grid_specs():
    from moesim.sweeps import SweepSpec

    specs = sc.yaml_specs("full")
    assert sorted(specs) == sorted(n.replace("-", "_") for n in sc.YAML_SWEEPS)
    for stem, spec in specs.items():
        path = ROOT / "sweeps" / f"{stem}.yaml"
        assert path.is_file(), f"{path} is missing: run python benchmarks/small_runs.py tier --write-yaml"
        assert SweepSpec.from_yaml(path).to_dict() == spec.to_dict(), f"{path} differs from its spec"


def test_full_grid_is_inside_what_each_prediction_states():
    g = sc.GRID_SIZES["full"]
    main, probe = sc.exploration_specs(g)
    assert all(c.lr_expert <= c.init_sigma for c in main.points())  # eta = O~(sigma_0)
    assert all(math.isclose(c.lr_router, c.n_experts**2 * c.lr_expert) for c in main.points())
    assert math.isclose(max(g.sigma0), g.d_explore ** (-1 / 3))  # the top of the grid is the theorem's range
    assert [c.n_steps for c in probe.points()] == [math.floor(c.init_sigma**0.5 / c.lr_expert) for c in probe.points()]
    dim, regime = sc.dimension_specs(g)
    for c in dim.points():
        ref = preset(f"theory-d{c.patch_dim}", "moe-nonlinear")
        assert c == ref.replace(record_every=c.record_every)  # exactly the theory preset at that d
    experts = sc.experts_spec(g).points()
    assert all(math.isclose(c.lr_router, 0.1 * (c.n_experts / 8) ** 2) for c in experts)
    assert all(c.n_train == 500 * c.n_clusters for c in experts)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """Every claim on the smoke grid, through Dask (an in-process cluster: the machinery is the same,
    without the seconds of starting and importing into worker processes) into a fresh run store."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None)
    client = Client(cluster)
    folder = tmp_path_factory.mktemp("scaling")
    try:
        ctx = sc.configure(Context(QUICK), grid="smoke", store=folder / "runs.sqlite", export=folder / "out",
                           client=client)
        first = [get(n).check(ctx) for n in names("scaling")]
        again_ctx = sc.configure(Context(QUICK), grid="smoke", store=folder / "runs.sqlite", client=client)
        again = get("scaling-router-n").check(again_ctx)
        yield first, again, again_ctx, folder
    finally:
        client.close()
        cluster.close()


def test_every_scaling_claim_runs_on_the_smoke_grid(smoke_results):
    first, again, again_ctx, folder = smoke_results
    assert [r.name for r in first] == ["scaling-exploration", "scaling-experts", "scaling-router-n",
                                       "scaling-dimension", "scaling-noise"]
    assert names("scaling") == [r.name for r in first] and not set(names("scaling")) & set(names())
    for r in first:
        assert r.checks and all(isinstance(c.passed, bool) for c in r.checks), r.describe()
        r.to_dict()  # JSON-able
    # the second check of the same grid reads the store and trains nothing
    assert [c.measured for c in again.checks] == [c.measured for c in first[2].checks]
    for stem in ("scaling_exploration", "scaling_experts", "scaling_router_n", "scaling_dimension",
                 "scaling_regime_map", "scaling_noise"):
        assert (folder / "out" / f"{stem}.csv").is_file() and (folder / "out" / f"{stem}.json").is_file()
    table = pd.read_csv(folder / "out" / "scaling_exploration.csv")
    assert {"exploration_end", "router_output_max_T1", "T1", "success"} <= set(table.columns)
    assert (table["router_output_max_T1"] > 0).all()


def test_overrides_change_every_run_but_not_a_grid_axis():
    ctx = sc.configure(Context(QUICK, overrides={"activation": "linear"}), grid="smoke")
    specs = sc.claim_specs(ctx, "scaling-dimension")
    assert all(c.activation == "linear" for s in specs for c in s.points())
    assert all("+activation=linear" in s.name for s in specs)
    with pytest.raises(ValueError, match="lr_router"):
        sc.claim_specs(sc.configure(Context(QUICK, overrides={"lr_router": 0.0}), grid="smoke"), "scaling-experts")


def test_configure_refuses_bad_input():
    with pytest.raises(ValueError, match="grid='huge'"):
        sc.configure(Context(QUICK), grid="huge")
    with pytest.raises(ValueError, match="workers=0"):
        sc.configure(Context(QUICK), workers=0)


# --- the real claims on their full grids (pytest -m slow) ----------------------------------------

@pytest.fixture(scope="module")
def full_ctx_scaling():
    ctx = sc.configure(Context(QUICK), grid="full", store=ROOT / "runs" / "scaling.sqlite")
    yield ctx
    sc.close_client()


@pytest.mark.slow
@pytest.mark.parametrize("name", sc.SCALING_CLAIMS)
def test_scaling_claim_full_grid(full_ctx_scaling, name):
    """Each check's verdict on the full grid equals the recorded one (``EXPECTED``); a prediction
    that the runs refute is recorded as failing, with its evidence in the book and the README."""
    res = get(name).check(full_ctx_scaling)
    expected = sc.EXPECTED[name]
    got = [c.passed for c in res.checks]
    assert got == expected, res.describe()
