"""The grids of the scaling tier and the sweep of each prediction (``moesim.sweeps.SweepSpec``).

``GRID_SIZES`` holds the three grid sizes (``full``, ``book``, ``smoke``); ``configure`` attaches
the chosen one (with the run store and Dask options) to a ``Context``; ``all_specs`` and
``claim_specs`` build each claim's sweeps from Theorem 4.2's orders (``moesim.config.theory_values``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from ...config import THEORY_CONSTANTS, THEORY_DIMS, theory_values
from ..base import Context


# --- grids ---------------------------------------------------------------------------------------

GRIDS = ("full", "book", "smoke")

#: The paper's working point: Algorithm 1 (``paper-s1``: data x10, sigma_0 = eta = 1e-3, eta_r = 0.1,
#: T = 500) where the core tier's Theorem 4.2 claims pass; in unit-scale terms sigma_0 = eta = 0.01
#: and eta_r = 1000 eta. J follows its order J = ceil(log M log log d) (3 at M = 8, d = 50).
WORKING_PRESET = "paper-s1-quick"


def theory_filters(M: int, d: int) -> int:
    """J = ceil(c_J log M log log d) (Theorem 4.2's order, ``THEORY_CONSTANTS['c_J']``), at least 1."""
    return max(1, math.ceil(THEORY_CONSTANTS["c_J"] * math.log(M) * math.log(math.log(d))))


@dataclass(frozen=True)
class Grid:
    """The sizes of one grid of the tier (see ``GRID_SIZES``)."""

    # 1. exploration (theory preset at d_explore, unit-scale data)
    d_explore: int
    sigma0: tuple[float, ...]
    eta: tuple[float, ...]
    explore_seeds: int
    horizon: float  # T = ceil(horizon / eta): the router leaves uniform routing by eta t ~ 0.9 (measured)
    explore_n: int | None  # n_train = n_test (None: the preset's 20 d)
    # 2. experts needed (working point)
    clusters: tuple[int, ...]
    experts: tuple[int, ...]
    experts_seeds: int
    per_cluster: int  # n = per_cluster * K
    coverage_draws: int  # initializations per (K, M) for the coupon-collector check (no training)
    # 3. router alignment vs n (working point, K = 4, M = 8)
    n_values: tuple[int, ...]
    align_seeds: int
    align_test: int
    # 4. success vs d (theory preset) and the sigma_0 x d map
    dims: tuple[int, ...]
    dim_seeds: int
    map_dims: tuple[int, ...]
    map_exponents: tuple[float, ...]  # sigma_0 = d^-a for these a (a = 1/3 is the theorem's end)
    map_seeds: int
    # 5. noise thresholds vs d (working point, n = 40 d)
    noise_dims: tuple[int, ...]
    sigma_p: tuple[float, ...]
    gamma_max: tuple[float, ...]
    noise_seeds: int
    noise_per_dim: float = 40.0  # n = noise_per_dim * d (40: n = 2000 at the paper's d = 50)
    # shared
    steps: int | None = None  # T of the working-point runs (None: Algorithm 1's 500)
    theory_steps: float | None = None  # c_T of the theory runs (None: THEORY_CONSTANTS)
    batch_size: int = 5  # seeds per Dask task


GRID_SIZES: dict[str, Grid] = {
    "full": Grid(
        d_explore=64, sigma0=(1e-3, 3e-3, 1e-2, 3e-2, 0.1, 64 ** (-1 / 3)), eta=(2.5e-4, 5e-4, 1e-3),
        explore_seeds=10, horizon=1.5, explore_n=None,
        clusters=(2, 3, 4, 6, 8), experts=(2, 3, 4, 6, 8, 12, 16, 24, 32), experts_seeds=8, per_cluster=500,
        coverage_draws=400,
        n_values=(2000, 4000, 8000, 16000), align_seeds=8, align_test=2000,
        dims=(32, 64, 128, 256), dim_seeds=20, map_dims=(32, 64, 128), map_exponents=(1 / 3, 1 / 2, 2 / 3),
        map_seeds=8,
        noise_dims=(32, 64, 128), sigma_p=(1.0, 1.5, 2.2, 3.3, 5.0, 7.5, 11.0),
        gamma_max=(2.0, 3.0, 4.0, 5.0, 6.5, 8.5), noise_seeds=6,
    ),
    "book": Grid(
        d_explore=32, sigma0=(1e-3, 1e-2, 0.1), eta=(5e-4, 1e-3), explore_seeds=3, horizon=1.5, explore_n=None,
        clusters=(2, 4), experts=(2, 4, 8), experts_seeds=3, per_cluster=250, coverage_draws=200,
        n_values=(1000, 2000, 4000), align_seeds=3, align_test=1000,
        dims=(32, 64), dim_seeds=4, map_dims=(32, 64), map_exponents=(1 / 3, 2 / 3), map_seeds=4,
        noise_dims=(32, 64), sigma_p=(1.0, 3.0, 9.0), gamma_max=(2.0, 5.0, 8.0), noise_seeds=3,
        steps=300,
    ),
    "smoke": Grid(
        d_explore=32, sigma0=(1e-2, 0.1), eta=(5e-3, 1e-2), explore_seeds=2, horizon=0.2, explore_n=100,
        clusters=(2, 3), experts=(2, 4), experts_seeds=2, per_cluster=50, coverage_draws=20,
        n_values=(100, 200), align_seeds=2, align_test=100,
        dims=(16, 20), dim_seeds=2, map_dims=(16,), map_exponents=(1 / 3,), map_seeds=2,
        noise_dims=(16, 20), sigma_p=(1.0, 8.0), gamma_max=(2.0, 8.0), noise_seeds=2,
        noise_per_dim=5.0, steps=20, theory_steps=0.3, batch_size=2,
    ),
}


@dataclass
class Options:
    """Where and how the scaling claims run (``configure``)."""

    grid: str = "full"
    store: str = "runs/scaling.sqlite"
    workers: int | None = None  # Dask LocalCluster workers (default: the cores)
    export: str | None = None  # folder for the per-run tables (CSV + JSON sidecar); None: no export
    client: typing.Any = None  # an existing dask.distributed.Client
    progress: bool = False
    log: typing.Callable[[str], None] | None = None
    sweep_seconds: dict = field(default_factory=dict)  # wall time of each sweep of this process

    @property
    def sizes(self) -> Grid:
        return GRID_SIZES[self.grid]


def configure(ctx: Context, grid: str = "full", store: str | os.PathLike = "runs/scaling.sqlite",
              workers: int | None = None, export: str | os.PathLike | None = None, client=None,
              progress: bool = False) -> Context:
    """Attach the scaling tier's options to ``ctx`` (``ctx.scaling``) and return ``ctx``.

    ``grid``: ``"full"``, ``"book"`` or ``"smoke"`` (``GRID_SIZES``); ``store``: the SQLite run store;
    ``workers``: Dask workers of the LocalCluster started when no ``client`` is given; ``export``: a
    folder to write each claim's per-run table to (``scaling_<claim>.csv`` and ``.json``).
    """
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r} is not allowed; choose one of: {', '.join(GRIDS)}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers={workers!r} is not allowed; give an integer >= 1")
    ctx.scaling = Options(grid=grid, store=str(store), workers=workers, export=None if export is None else str(export),
                          client=client, progress=progress, log=ctx.log)
    return ctx


def options(ctx: Context) -> Options:
    """``ctx.scaling``, or the defaults (full grid, ``runs/scaling.sqlite``) when not configured."""
    if getattr(ctx, "scaling", None) is None:
        configure(ctx)
    return ctx.scaling


# --- the sweeps of each prediction ---------------------------------------------------------------

def _theory_point(d: int, a: float | None = None, grid: Grid | None = None) -> dict:
    """The fields of ``theory_values(d)`` that depend on d (and on sigma_0 = d^-a)."""
    constants = {} if a is None else {"a_sigma": a}
    if grid is not None and grid.theory_steps is not None:
        constants["c_T"] = grid.theory_steps
    v = theory_values(d, **constants)
    return {k: v[k] for k in THEORY_FIELDS}


#: The fields ``theory_values`` sets from d (a linked grid axis of the d sweeps).
THEORY_FIELDS = ("patch_dim", "n_experts", "n_filters", "init_sigma", "lr_expert", "lr_router", "n_train", "n_test",
                 "n_steps")


def exploration_specs(grid: Grid, name: str = "full"):
    """Prediction 1: (main sweep to T = horizon / eta, probe sweep to T1) on the theory preset at d.

    Main: sigma_0 x (eta, eta_r = M^2 eta, T) for the end of exploration (training dispatch entropy,
    every step). Probe: the same cells stopped at their own T1 = floor(eta^-1 sigma_0^1/2), for max|h|
    at T1 (trained with ``train_batch_router``, which records it).
    """
    from ...sweeps import SweepSpec

    point = _theory_point(grid.d_explore)
    M = point["n_experts"]
    fixed = {k: v for k, v in point.items() if k not in ("init_sigma", "lr_expert", "lr_router", "n_steps")}
    fixed["record_every"] = 10**6
    if grid.explore_n is not None:
        fixed.update(n_train=grid.explore_n, n_test=grid.explore_n)
    steps = [(eta, M**2 * eta, math.ceil(grid.horizon / eta)) for eta in grid.eta]
    main = SweepSpec(name=f"scaling-exploration-{name}", preset=f"theory-d{_preset_dim(grid.d_explore)}",
                     model="moe-nonlinear", fixed=fixed,
                     axes={"init_sigma": list(grid.sigma0), "lr_expert,lr_router,n_steps": steps},
                     seeds=list(range(grid.explore_seeds)))
    cells = []
    for s0 in grid.sigma0:
        for eta in grid.eta:
            T1 = max(1, int(math.floor(s0**0.5 / eta)))
            cells.append((s0, eta, M**2 * eta, T1))
    probe = SweepSpec(name=f"scaling-exploration-t1-{name}", preset=main.preset, model="moe-nonlinear",
                      fixed=dict(fixed), axes={"init_sigma,lr_expert,lr_router,n_steps": cells},
                      seeds=list(range(grid.explore_seeds)))
    return main, probe


def _preset_dim(d: int) -> int:
    """A named theory preset (any; the d-dependent fields are set explicitly)."""
    return d if d in THEORY_DIMS else 64


def experts_spec(grid: Grid, name: str = "full"):
    """Prediction 2: K (with n = per_cluster K) x M (with eta_r = 0.1 (M/8)^2, J from its order), d = 50."""
    from ...sweeps import SweepSpec

    d = 50
    fixed = dict(record_every=10**6)
    if grid.steps is not None:
        fixed["n_steps"] = grid.steps
    return SweepSpec(
        name=f"scaling-experts-{name}", preset=WORKING_PRESET, model="moe-nonlinear", fixed=fixed,
        axes={"n_clusters,n_train,n_test": [(K, grid.per_cluster * K, grid.per_cluster * K) for K in grid.clusters],
              "n_experts,lr_router,n_filters": [(M, 0.1 * (M / 8) ** 2, theory_filters(M, d)) for M in grid.experts]},
        seeds=list(range(grid.experts_seeds)))


def alignment_spec(grid: Grid, name: str = "full"):
    """Prediction 3: n_train on the working point (K = 4, M = 8, J = 3, d = 50)."""
    from ...sweeps import SweepSpec

    fixed = dict(record_every=10**6, n_test=grid.align_test, n_filters=theory_filters(8, 50))
    if grid.steps is not None:
        fixed["n_steps"] = grid.steps
    return SweepSpec(name=f"scaling-router-n-{name}", preset=WORKING_PRESET, model="moe-nonlinear", fixed=fixed,
                     axes={"n_train": list(grid.n_values)}, seeds=list(range(grid.align_seeds)))


def dimension_specs(grid: Grid, name: str = "full"):
    """Prediction 4: the theory preset at each d (sigma_0 = d^-1/3), and the sigma_0 x d map."""
    from ...sweeps import SweepSpec

    axis = ",".join(THEORY_FIELDS)
    fixed = dict(record_every=10**6)
    main = SweepSpec(name=f"scaling-dimension-{name}", preset="theory-d64", model="moe-nonlinear", fixed=fixed,
                     axes={axis: [tuple(_theory_point(d, grid=grid).values()) for d in grid.dims]},
                     seeds=list(range(grid.dim_seeds)))
    cells = [tuple(_theory_point(d, a, grid).values()) for a in grid.map_exponents for d in grid.map_dims]
    regime = SweepSpec(name=f"scaling-regime-map-{name}", preset="theory-d64", model="moe-nonlinear", fixed=dict(fixed),
                       axes={axis: cells}, seeds=list(range(grid.map_seeds)))
    return main, regime


def noise_specs(grid: Grid, name: str = "full"):
    """Prediction 5: d (n = noise_per_dim d) x sigma_p, and d x gamma_max (gamma ~ U(0.5, gamma_max)), working point."""
    from ...sweeps import SweepSpec

    fixed = dict(record_every=10**6, n_filters=theory_filters(8, 50))
    if grid.steps is not None:
        fixed["n_steps"] = grid.steps
    dims = [(d, int(grid.noise_per_dim * d), int(grid.noise_per_dim * d)) for d in grid.noise_dims]
    sig = SweepSpec(name=f"scaling-noise-sigma-{name}", preset=WORKING_PRESET, model="moe-nonlinear", fixed=dict(fixed),
                    axes={"patch_dim,n_train,n_test": dims, "sigma_p": list(grid.sigma_p)},
                    seeds=list(range(grid.noise_seeds)))
    gam = SweepSpec(name=f"scaling-noise-gamma-{name}", preset=WORKING_PRESET, model="moe-nonlinear", fixed=dict(fixed),
                    axes={"patch_dim,n_train,n_test": dims, "gamma_range": [(0.5, g) for g in grid.gamma_max]},
                    seeds=list(range(grid.noise_seeds)))
    return sig, gam


def all_specs(grid_name: str) -> dict[str, list]:
    """Every sweep of the tier at ``grid_name``, by claim (the probe sweep of prediction 1 included)."""
    g = GRID_SIZES[grid_name]
    return {"scaling-exploration": list(exploration_specs(g, grid_name)),
            "scaling-experts": [experts_spec(g, grid_name)],
            "scaling-router-n": [alignment_spec(g, grid_name)],
            "scaling-dimension": list(dimension_specs(g, grid_name)),
            "scaling-noise": list(noise_specs(g, grid_name))}


def with_overrides(spec, overrides: dict):
    """``spec`` with the model-under-test changes of ``Context.overrides`` (``moesim verify --set``)
    applied to every run. A field that is a grid axis of the sweep is refused (the claim varies it)."""
    if not overrides:
        return spec
    from ...sweeps import axis_fields

    axis = {f for a in spec.axes for f in axis_fields(a)}
    clash = sorted(set(overrides) & axis)
    if clash:
        raise ValueError(f"{clash} cannot be changed for sweep {spec.name}: the scaling claim varies it on its grid")
    changed = dataclasses.replace(spec, fixed={**spec.fixed, **overrides})
    changed.name = spec.name + "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    changed.points()  # validated before any work
    return changed


def claim_specs(ctx: Context, claim: str) -> list:
    """The sweeps of ``claim`` at the configured grid, with the context's overrides applied."""
    opts = options(ctx)
    return [with_overrides(s, ctx.overrides) for s in all_specs(opts.grid)[claim]]


#: The sweeps that ``moesim sweep`` can run from a YAML file (``write_yaml``); the exploration
#: probe needs ``train_batch_router`` and is run by its claim.
YAML_SWEEPS = ("scaling-exploration", "scaling-experts", "scaling-router-n", "scaling-dimension", "scaling-regime-map",
               "scaling-noise-sigma", "scaling-noise-gamma")
