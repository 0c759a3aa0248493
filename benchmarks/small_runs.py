"""Scaling tier: run it (``tier``) or measure the cost of its single runs (``costs``).

    python benchmarks/small_runs.py tier --grid full --store runs/scaling.sqlite --export book/results
    python benchmarks/small_runs.py costs          # seconds per run of each sweep's most expensive point

``tier`` checks every claim of the ``scaling`` tier (``moesim.claims.scaling``) on Dask into the
run store, prints each verdict and, with ``--export``, writes the per-run tables and
``scaling_verdicts.json`` that the book reads. ``costs`` trains one seed of the largest point of each
full-grid sweep in this process (1 thread) and prints its wall and CPU seconds.
"""

from __future__ import annotations

import sys
import time


def costs(argv: list[str]) -> int:
    import argparse

    import torch

    from moesim import train
    from moesim.claims.scaling import all_specs

    p = argparse.ArgumentParser(prog="small_runs.py costs")
    p.add_argument("--grid", default="full")
    p.add_argument("--seeds", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for claim, specs in all_specs(args.grid).items():
        for spec in specs:
            points = spec.points()
            cfg = max(points, key=lambda c: c.n_train * c.n_steps * c.patch_dim)
            w0, c0 = time.perf_counter(), time.process_time()
            train(cfg, list(range(args.seeds)), keep_params=False)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            print(f"{spec.name:38s} largest point d={cfg.patch_dim} n={cfg.n_train} T={cfg.n_steps} "
                  f"M={cfg.n_experts} J={cfg.n_filters}: {wall:6.1f} s wall, {cpu:6.1f} s CPU for "
                  f"{args.seeds} seed(s); grid {len(points)} points x {len(spec.seeds)} seeds", flush=True)
    return 0


def tier(argv: list[str]) -> int:
    """The scaling tier (``moesim.claims.scaling.run_tier``): run it, print the verdicts, export."""
    import argparse

    import torch

    import moesim.claims.scaling as scaling
    from moesim.claims.scaling import GRIDS, close_client, run_tier, write_yaml
    from moesim.config import parse_override

    summary = scaling.__doc__.split("\n")[0]  # the package's one-line summary
    p = argparse.ArgumentParser(prog="small_runs.py tier", description=summary)
    p.add_argument("--grid", default="full", choices=GRIDS)
    p.add_argument("--store", default="runs/scaling.sqlite")
    p.add_argument("--export", default=None, help="folder for the per-run tables and scaling_verdicts.json")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--claims", default=None, help="comma-separated scaling claims (default: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="change every run (a broken model on purpose), e.g. --set shuffle_labels=true")
    p.add_argument("--write-yaml", action="store_true", help="write sweeps/scaling_*.yaml and exit")
    args = p.parse_args(argv)
    if args.write_yaml:
        for path in write_yaml():
            print(path)
        return 0
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    def log(text):
        print(f"[scaling {time.perf_counter() - t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    claims = [c.strip() for c in args.claims.split(",")] if args.claims else None
    overrides = dict(parse_override(item) for item in args.overrides)
    results, header = run_tier(args.grid, args.store, args.export, args.workers, claims, log, overrides)
    for r in results:
        print(r.describe())
    print(f"{header['claims_passed']}/{header['claims_total']} scaling claims passed; wall time "
          f"{header['wall_time_s']:.0f} s")
    close_client()
    return 0 if header["passed"] else 1


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("tier", "costs"):
        print(__doc__)
        return 2
    if argv[0] == "costs":
        return costs(argv[1:])
    return tier(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
