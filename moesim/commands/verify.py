"""``moesim verify``: check every claim of the paper and print a verdict table (``moesim.verify``).

There is no ``--preset``: each claim trains in the regimes it is stated for (``--regime``: the
official code's setting 1, Algorithm 1 at the official operating point, Theorem 4.2's own regime),
each with its own preset, so one preset has no clear meaning here. ``--set`` and ``--dtype`` change
the model under test in every regime (every MoE run).
"""

from __future__ import annotations

import argparse

from ..arguments import (
    add_device_argument, add_dtype_argument, add_out_argument, add_overwrite_argument, add_progress_argument,
    add_seeds_argument, add_set_argument, add_threads_argument,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (p.description or "") + (
        ". No --preset: each claim trains in the regimes it is stated for (--regime), each with its own preset; "
        "--set and --dtype change the model under test in all of them.")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="scale", action="store_const", const="quick",
                      help="reduced size: n = 4000, seeds 0-2, median rules (default)")
    size.add_argument("--full", dest="scale", action="store_const", const="full",
                      help="the paper's size: n = 16000, 10 seeds, one-sided 95 %% confidence bounds")
    p.set_defaults(scale="quick")
    p.add_argument("--regime", action="append", default=None, choices=("official", "paper", "theory"),
                   help="where the dynamics claims run (repeatable): the official code on setting 1, Algorithm 1 "
                        "at the official operating point, or Theorem 4.2's own regime (default: official and paper)")
    p.add_argument("--theory-dim", type=int, default=None,
                   help="patch dimension d of --regime theory (default: the tested d, see moesim.claims.base)")
    p.add_argument("--mutants", nargs="?", const="all", default=None, metavar="NAMES",
                   help="check the claims on each broken model (comma-separated names, default all) and print the "
                        "claims x mutants matrix")
    p.add_argument("--scaling", action="store_true", help="run the scaling-law tier instead of the core claims")
    p.add_argument("--grid", default="full", choices=("full", "book", "smoke"),
                   help="--scaling: grid size (full: the tier, ~30-60 min on 2 cores; book: the book's live part)")
    p.add_argument("--store", default="runs/scaling.sqlite",
                   help="--scaling: SQLite run store (runs already there are reused; default %(default)s)")
    p.add_argument("--export", default=None, help="--scaling: folder for each prediction's per-run table (CSV, JSON)")
    p.add_argument("--workers", type=int, default=None, help="--scaling: Dask workers (default: one per core)")
    p.add_argument("--claims", default=None, help="comma-separated claim names (default: all; see --list)")
    add_seeds_argument(p, None, default_text="the scale's: 0-2 with --quick, 0-9 with --full")
    add_set_argument(p, "changes the model under test (every MoE run), e.g. --set activation=linear or "
                        "--set lr_router=0 to break it on purpose")
    add_device_argument(p, "cpu")
    add_dtype_argument(p)
    add_out_argument(p, "a new runs/verify-<scale>-<time>")
    add_overwrite_argument(p)
    add_threads_argument(p)
    p.add_argument("--list", action="store_true", help="list the claims and exit")
    add_progress_argument(p, "no progress bars")


def main(args: argparse.Namespace) -> int:
    from .. import claims, verify
    from ..arguments import UsageError, apply_threads, parse_seeds
    from ..config import parse_override
    from ..training import check_device

    tier = "scaling" if args.scaling else "core"
    if args.list:
        for name in claims.names(tier):
            c = claims.get(name)
            print(f"{name:20s} {c.reference}\n{'':20s} {c.prediction}")
            if c.detects:
                print(f"{'':20s} detects: {', '.join(c.detects)}")
        return 0
    selected = claims.names(tier)
    if args.claims is not None:
        selected = [s.strip() for s in args.claims.split(",") if s.strip()]
        unknown = [s for s in selected if s not in claims.names(tier)]
        if unknown or not selected:
            raise UsageError(f"--claims {args.claims!r}: unknown or empty claim list {unknown}; "
                             f"allowed: {', '.join(claims.names(tier))}")
    mutant_names = None
    if args.mutants is not None:
        from ..claims import mutants

        mutant_names = list(mutants.MUTANTS) if args.mutants == "all" else [
            m.strip() for m in args.mutants.split(",") if m.strip()]
        unknown = [m for m in mutant_names if m not in mutants.MUTANTS]
        if unknown or not mutant_names:
            raise UsageError(f"--mutants {args.mutants!r}: unknown or empty mutant list {unknown}; "
                             f"allowed: {', '.join(mutants.MUTANTS)}")
        if args.overrides:
            raise UsageError("--mutants and --set cannot be combined: each mutant is its own set of overrides")
        if args.dtype is not None:
            raise UsageError("--mutants and --dtype cannot be combined: each mutant is its own set of overrides")
    regimes = tuple(dict.fromkeys(args.regime)) if args.regime else claims.DEFAULT_REGIMES
    if args.theory_dim is not None and args.theory_dim < 16:
        raise UsageError(f"--theory-dim {args.theory_dim} is not allowed; give an integer >= 16")
    scale = claims.SCALES[args.scale]
    if args.seeds is not None:
        scale = scale.with_seeds(parse_seeds(args.seeds))
    overrides = dict(parse_override(item) for item in args.overrides)
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    check_device(args.device)
    apply_threads(args)
    kind = "mutants" if mutant_names is not None else ("scaling" if args.scaling else "verify")
    from ..outputs import default_out, prepare_out

    out = prepare_out(args.out or default_out(kind, scale.name), args.overwrite)  # before any claim runs
    scaling = None
    if args.scaling:  # the store and the export folder too
        from ..store import RunStore, StoreError

        try:
            RunStore(args.store).close()
        except StoreError as err:
            raise UsageError(f"--store: {err}") from None
        if args.export:
            prepare_out(args.export, overwrite=True, option="--export")
        scaling = dict(grid=args.grid, store=args.store, workers=args.workers, export=args.export)
    return verify.run(scale, selected, overrides, out, device=args.device, regimes=regimes,
                      theory_dim=args.theory_dim, mutant_names=mutant_names, scaling=scaling,
                      progress=not args.no_progress, overwrite=args.overwrite)
