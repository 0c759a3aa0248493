"""The scaling tier as a whole: its claims and recorded verdicts, its YAML sweeps, and its runner.

``run_tier`` checks every scaling claim at one grid (``benchmarks/small_runs.py tier`` is its command
line); ``write_yaml`` writes ``sweeps/scaling_*.yaml`` from the full grid's specs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from pathlib import Path

from ...jsonable import jsonable
from .grids import YAML_SWEEPS, all_specs, claim_specs, configure
from .runner import store_timing


#: The claims of this tier, in table order.
SCALING_CLAIMS = ("scaling-exploration", "scaling-experts", "scaling-router-n", "scaling-dimension", "scaling-noise")

#: Each check's verdict on the full grid, as measured by the tier run recorded in
#: ``benchmarks/results/calibration/scaling.md`` (the slow tests assert that a re-run agrees). The
#: False entries are predictions the runs refute: the end of exploration does not scale as
#: sigma_0^1/2 and routing leaves uniform before T1 at sigma_0 = d^-1/3 (``scaling-exploration``),
#: and M* ~ K fits better than K log K by a likelihood ratio above 8 (``scaling-experts``).
EXPECTED: dict[str, list[bool]] = {
    "scaling-exploration": [True, False, True, False],
    "scaling-experts": [False, True],
    "scaling-router-n": [True],
    "scaling-dimension": [True, True],
    "scaling-noise": [True, True],
}


# --- YAML specs and the tier runner ---------------------------------------------------------------

def yaml_text(spec) -> str:
    """The YAML file of a sweep (``moesim sweep`` reads it back to the same spec)."""
    import yaml

    stem = spec.name.rsplit("-", 1)[0].replace("-", "_")
    head = (f"# Scaling tier, sweep {spec.name}: written from its spec in moesim/claims/scaling/grids.py (write_yaml;\n"
            f"# tests/theory/test_scaling.py keeps the two equal). Fill the run store with\n"
            f"#   moesim sweep sweeps/{stem}.yaml --store runs/scaling.sqlite\n"
            f"# and check and export the claims with\n"
            f"#   python benchmarks/small_runs.py tier --grid full --store runs/scaling.sqlite --export book/results\n")
    return head + yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=110)


def yaml_specs(grid_name: str = "full") -> dict[str, typing.Any]:
    """{file stem: spec} of the sweeps ``moesim sweep`` can run (the full grid's)."""
    out = {}
    for specs in all_specs(grid_name).values():
        for s in specs:
            base = s.name.rsplit("-", 1)[0]
            if base in YAML_SWEEPS:
                out[base.replace("-", "_")] = s
    return out


def write_yaml(folder: str | os.PathLike = "sweeps") -> list[Path]:
    """Write ``sweeps/scaling_*.yaml`` for the full grid."""
    paths = []
    for stem, spec in yaml_specs("full").items():
        p = Path(folder) / f"{stem}.yaml"
        p.write_text(yaml_text(spec))
        paths.append(p)
    return paths


def run_tier(grid: str = "full", store: str = "runs/scaling.sqlite", export: str | None = None,
             workers: int | None = None, claims: list[str] | None = None, log=print, overrides: dict | None = None):
    """Check every scaling claim at ``grid``; return (results, header) as ``moesim verify`` prints them.

    ``overrides``: config fields changed in every run (a broken model on purpose, as ``--set``).
    """
    from .. import QUICK, names
    from ..base import Context

    t0 = time.perf_counter()
    scale = dataclasses.replace(QUICK, name=f"scaling-{grid}")
    ctx = configure(Context(scale, overrides=overrides, log=log), grid=grid, store=store, workers=workers,
                    export=export)
    results = []
    for name in claims or names("scaling"):
        from .. import get

        res = get(name).check(ctx)
        log(f"{res.verdict} {name} ({res.wall_time_s:.1f} s)")
        results.append(res)
    wall = time.perf_counter() - t0
    header = dict(grid=grid, store=store, overrides=dict(overrides or {}), wall_time_s=round(wall, 1),
                  sweep_wall_time_s=ctx.scaling.sweep_seconds,
                  workers=workers, passed=all(r.passed for r in results),
                  claims_passed=sum(r.passed for r in results), claims_total=len(results),
                  **store_timing(store, [s.name for c in (claims or names("scaling"))
                                         for s in claim_specs(ctx, c)]))
    if export is not None:
        from ...outputs import environment

        Path(export).mkdir(parents=True, exist_ok=True)
        verdicts = dict(header, **environment(), claims=[r.to_dict() for r in results])
        (Path(export) / "scaling_verdicts.json").write_text(json.dumps(jsonable(verdicts, nonfinite="text"),
                                                                       indent=2) + "\n")
    return results, header
