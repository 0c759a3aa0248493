"""Theorem 4.2's orders as falsifiable scaling predictions (the ``scaling`` tier).

Theorem 4.2 fixes orders, not numbers: M = Theta(K log K log log d) experts, J = Theta(log M log log d)
filters, sigma_0 in [d^-1/3, d^-0.01], eta = O~(sigma_0), eta_r = Theta(M^2) eta, n = Omega(d), and an
exploration stage of T1 = floor(eta^-1 sigma_0^1/2) steps with router outputs O(sigma_0^1.5) (Section 5).
Each claim below turns one of these orders into a statistical test on a grid of runs:

* ``scaling-exploration``: the end of exploration in eta and sigma_0, and max|h| at T1 against sigma_0;
* ``scaling-experts``: the number of experts at which success reaches 90 %, against K;
* ``scaling-router-n``: the router's feature/center alignment ratio against n;
* ``scaling-dimension``: success and test accuracy against d inside the theorem's conditions;
* ``scaling-noise``: the 50 %-success noise levels sigma_p* and gamma* against d.

For each claim the grid, the fitted quantity (with a bootstrap or likelihood interval), the theory's
value and the decision rule are fixed here, before any run. Every grid is a ``moesim.sweeps.SweepSpec``
trained on Dask into the SQLite run store (``moesim.store``); the per-run quantities a claim fits are
read back from the store, so a second check of the same grid trains nothing. ``configure(ctx, grid=...)``
selects the grid size: ``"full"`` (the tier), ``"book"`` (minutes, built live by the book) or
``"smoke"`` (seconds: the machinery only, no meaningful verdict).

Modules (one job each): ``rules`` (success, decision-rule constants), ``grids`` (grid sizes,
``configure``, the sweeps of each prediction), ``runner`` (Dask and the run store, per-run tables,
export), ``fits`` (power, logistic and threshold fits, trend tests), one module per claim
(``exploration``, ``experts``, ``router_n``, ``dimension``, ``noise``; importing them registers the
claims, in this order), and ``tier`` (the whole tier: recorded verdicts, YAML sweeps, ``run_tier``; its command line is ``benchmarks/small_runs.py tier``).
Every public name of these modules is importable from ``moesim.claims.scaling``.

Run the whole tier and export its results for the book::

    python benchmarks/small_runs.py tier --grid full --store runs/scaling.sqlite --export book/results
"""

from __future__ import annotations

# import order of the claim modules = registration order = the order of the verify table
from .rules import (ALPHA, BOOTSTRAP, BOOTSTRAP_SEED, COMPETENT, EXPERTS_LEVEL, EXPLORATION_ENTROPY, EXPONENT_MARGIN,
                    LEVEL, LIKELIHOOD_RATIO, PERMUTATIONS, ROUTED, SUCCESS_TEST_ACCURACY, routed_share, success)
from .grids import (GRID_SIZES, GRIDS, THEORY_FIELDS, WORKING_PRESET, YAML_SWEEPS, Grid, Options, alignment_spec,
                    all_specs, claim_specs, configure, dimension_specs, experts_spec, exploration_specs, noise_specs,
                    options, theory_filters, with_overrides)
from .runner import close_client, export_table, run_spec, store_timing, success_of, train_batch_router
from .fits import (PowerFit, exponent_check, logistic_fit, logistic_fits, power_fit, stratified_indices, threshold_fit,
                   trend_test)
from .exploration import analyse_exploration, exploration_end, exploration_table, scaling_exploration
from .experts import (SHAPES, analyse_experts, coupon_experts, coverage_probability, coverage_table, experts_table,
                      fit_shapes, init_favoured_clusters, m_star, scaling_experts)
from .router_n import alignment_ratio, alignment_table, analyse_alignment, scaling_router_n
from .dimension import analyse_dimension, dimension_table, scaling_dimension
from .noise import analyse_noise, noise_table, scaling_noise, thresholds
from .tier import EXPECTED, SCALING_CLAIMS, run_tier, write_yaml, yaml_specs, yaml_text

__all__ = [
    "ALPHA", "BOOTSTRAP", "BOOTSTRAP_SEED", "COMPETENT", "EXPERTS_LEVEL", "EXPLORATION_ENTROPY", "EXPONENT_MARGIN",
    "LEVEL", "LIKELIHOOD_RATIO", "PERMUTATIONS", "ROUTED", "SUCCESS_TEST_ACCURACY", "routed_share", "success",
    "GRID_SIZES", "GRIDS", "THEORY_FIELDS", "WORKING_PRESET", "YAML_SWEEPS", "Grid", "Options", "alignment_spec",
    "all_specs", "claim_specs", "configure", "dimension_specs", "experts_spec", "exploration_specs", "noise_specs",
    "options", "theory_filters", "with_overrides",
    "close_client", "export_table", "run_spec", "store_timing", "success_of", "train_batch_router",
    "PowerFit", "exponent_check", "logistic_fit", "logistic_fits", "power_fit", "stratified_indices", "threshold_fit",
    "trend_test",
    "analyse_exploration", "exploration_end", "exploration_table", "scaling_exploration",
    "SHAPES", "analyse_experts", "coupon_experts", "coverage_probability", "coverage_table", "experts_table",
    "fit_shapes", "init_favoured_clusters", "m_star", "scaling_experts",
    "alignment_ratio", "alignment_table", "analyse_alignment", "scaling_router_n",
    "analyse_dimension", "dimension_table", "scaling_dimension",
    "analyse_noise", "noise_table", "scaling_noise", "thresholds",
    "EXPECTED", "SCALING_CLAIMS", "run_tier", "write_yaml", "yaml_specs", "yaml_text",
]
