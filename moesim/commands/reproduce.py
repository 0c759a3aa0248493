"""``moesim reproduce table1``: the paper's Table 1 protocol (``moesim.reproduce``).

There is no ``--preset``: the protocol's presets are ``{semantics}-{setting}[-quick]``, one per data
setting, chosen by ``--semantics``, ``--settings`` and ``--quick``. ``--set``, ``--device`` and
``--dtype`` change every model of the table (each row's preset, then the override).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..arguments import (
    add_device_argument, add_dtype_argument, add_out_argument, add_overwrite_argument, add_progress_argument,
    add_seeds_argument, add_set_argument, add_threads_argument,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..reproduce import TABLE1_MODELS, TABLE1_SETTINGS

    p.add_argument("what", choices=("table1",), help="what to reproduce")
    p.add_argument("--settings", default=",".join(TABLE1_SETTINGS), help="comma list (default %(default)s)")
    p.add_argument("--models", default=",".join(TABLE1_MODELS), help="comma list (default %(default)s)")
    add_seeds_argument(p, "10")
    p.add_argument("--semantics", default="official", choices=("official", "paper"))
    p.add_argument("--quick", action="store_true", help="n = 4,000 instead of the paper's 16,000")
    add_set_argument(p, "applied to every model of the table (no --preset: --semantics, --settings and "
                        "--quick choose each row's preset)")
    add_device_argument(p)
    add_dtype_argument(p)
    add_out_argument(p, "a new runs/reproduce-table1-<time>", holds="table1.md and table1.json")
    add_overwrite_argument(p)
    add_threads_argument(p)
    add_progress_argument(p, "no progress bar per model")


def main(args: argparse.Namespace) -> int:
    from .. import reproduce
    from ..arguments import UsageError, apply_threads, overrides_from_args, parse_seeds
    from ..config import preset

    apply_threads(args)
    settings = [s for s in args.settings.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    if not settings or not models:
        raise UsageError("--settings and --models must name at least one entry each")
    bad = [s for s in settings if s not in reproduce.TABLE1_SETTINGS] + [
        m for m in models if m not in reproduce.TABLE1_MODELS]
    if bad:
        raise UsageError(f"--settings/--models: {', '.join(map(repr, bad))} not allowed; settings: "
                         f"{', '.join(reproduce.TABLE1_SETTINGS)}; models: {', '.join(reproduce.TABLE1_MODELS)}")
    overrides = overrides_from_args(args)
    if args.device:
        from ..training import check_device

        check_device(args.device)
    for setting in settings:  # every row's config validated (--set, --dtype) before any output or training
        for model in models:
            preset(f"{args.semantics}-{setting}" + ("-quick" if args.quick else ""), model, **overrides)
    seeds = parse_seeds(args.seeds)
    from ..outputs import default_out, prepare_out, write_atomic

    out = prepare_out(args.out or default_out("reproduce", args.what), args.overwrite)  # before any training
    tab = reproduce.table1(settings, models, seeds, semantics=args.semantics, quick=args.quick,
                           overrides=overrides, progress=not args.no_progress,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    md = tab.markdown()

    def write(folder: Path) -> None:
        (folder / "table1.md").write_text(md + "\n")
        (folder / "table1.json").write_text(json.dumps(tab.to_dict(), indent=2) + "\n")

    write_atomic(out, write, overwrite=args.overwrite)
    print(md)
    print(f"\nTable 1 ({args.semantics} semantics, n = {tab.n_train}) in {tab.wall_time_s:.0f} s wall time; "
          f"written to {out}/table1.md and table1.json")
    return 0
