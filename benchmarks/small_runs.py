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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("tier", "costs"):
        print(__doc__)
        return 2
    if argv[0] == "costs":
        return costs(argv[1:])
    from moesim.claims.scaling import main as tier

    return tier(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
