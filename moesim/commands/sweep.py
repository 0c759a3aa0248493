"""``moesim sweep``: run a parameter grid on Dask into a run store (``moesim.sweeps``).

    moesim sweep sweeps/experts_needed.yaml --store runs/sweeps.sqlite
    moesim sweep --preset paper-s1-quick --grid n_clusters=2,4,8 --grid n_experts=4,8,16 --seeds 10
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from ..arguments import (
    add_device_argument, add_dtype_argument, add_model_argument, add_overwrite_argument, add_preset_argument,
    add_progress_argument, add_seeds_argument, add_set_argument, add_threads_argument,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``moesim sweep``."""
    from ..sweeps.runner import DEFAULT_STORE, default_workers
    from ..sweeps.spec import DEFAULT_PRESET, DEFAULT_SEEDS

    p.add_argument("spec", nargs="?", default=None,
                   help="YAML sweep spec (keys: name, preset, model, set, grid, seeds); optional with --grid")
    add_preset_argument(p, None, f"the spec's, else {DEFAULT_PRESET}")  # the spec's preset/model apply unless given
    add_model_argument(p)
    add_set_argument(p, "fixes the field in every point (replaces the spec's grid axis of that name)")
    add_device_argument(p)
    add_dtype_argument(p)
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a grid axis (repeatable; replaces the spec's axis of that name); range fields "
                        "separate values by ';', e.g. --grid 'gamma_range=0.5,1;0.5,3'")
    add_seeds_argument(p, None, f"the spec's, else {DEFAULT_SEEDS}")
    p.add_argument("--name", default=None, help="the sweep's name in the store (default: the spec's, else derived)")
    p.add_argument("--store", default=DEFAULT_STORE, help="SQLite run store (default %(default)s; created if absent)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster)")
    p.add_argument("--workers", type=int, default=None,
                   help=f"workers of the LocalCluster (default: the cores available, {default_workers()} here)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="seeds per task (default: all missing seeds of a point in one task)")
    p.add_argument("--retry-failed", action="store_true", help="compute stored failed runs again")
    p.add_argument("--retry-stale", action="store_true",
                   help="recompute the grid's runs the store holds from other code (otherwise such a store is refused)")
    p.add_argument("--export", default=None, metavar="CSV",
                   help="afterwards write the sweep's runs to this CSV (+ .json with its spec and log)")
    add_overwrite_argument(p, "an existing --export CSV")
    add_threads_argument(p, "torch CPU threads of each task")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    add_progress_argument(p)


def spec_from_args(args: argparse.Namespace):
    """The sweep the command line describes: the spec file, then the flags on top."""
    from ..arguments import UsageError, seed_list
    from ..config import ConfigError
    from ..sweeps.spec import SweepSpec, axis_fields, coerce_value, parse_grid_item

    spec = SweepSpec.from_yaml(args.spec) if args.spec else SweepSpec(name="")
    if args.preset:
        spec.preset = args.preset
    if args.model:
        spec.model = args.model
    linked = {n: axis for axis in spec.axes if "," in axis for n in axis_fields(axis)}
    for item in args.overrides:  # --set fixes a field: it replaces the spec's axis of that name
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like name=value")
        name, raw = (s.strip() for s in item.split("=", 1))
        if name in linked:
            raise ConfigError(f"--set {name}: {name!r} is part of the linked grid axis {linked[name]!r} of the spec")
        spec.fixed[name] = coerce_value(name, raw)
        spec.axes.pop(name, None)
    for key, value in (("device", args.device), ("dtype", args.dtype)):
        if value is not None:
            spec.fixed[key] = value
            spec.axes.pop(key, None)
    cli_axes = [parse_grid_item(item) for item in args.grid]
    for name, values in cli_axes:  # --grid sweeps a field: it replaces the spec's value or axis
        if name in linked:
            raise ConfigError(f"--grid {name}: {name!r} is part of the linked grid axis {linked[name]!r} of the spec")
        if name in spec.fixed and any(f"{name}=" in o.replace(" ", "") for o in args.overrides):
            raise ConfigError(f"{name!r} is given both to --grid and to --set; keep one")
        spec.fixed.pop(name, None)
        spec.axes[name] = values
    if args.seeds is not None:
        spec.seeds = seed_list(args.seeds)
    if args.name:
        spec.name = args.name
    elif not spec.name:
        axes = [a.replace(",", "+") for a in spec.axes]
        spec.name = "-".join([spec.preset] + ([spec.model] if spec.model else []) + axes)
    if args.workers is not None and args.scheduler:
        raise UsageError("--workers sizes the LocalCluster; with --scheduler the cluster's own workers are used")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers} is not allowed; it must be >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size} is not allowed; it must be >= 1")
    spec.points()  # every point validated before any work
    return spec


def main(args: argparse.Namespace) -> int:
    """``moesim sweep``: run the grid, print what was done, optionally export a CSV."""
    from ..store import StoreError

    def stop(signum, frame):  # SIGTERM (kill, a batch system's time limit) ends the sweep like Ctrl-C
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        return _main(args)
    except StoreError as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    from ..arguments import check_threads
    from ..store import RunStore
    from ..sweeps.export import export_csv
    from ..sweeps.runner import plan, run_sweep, stale_runs

    spec = spec_from_args(args)
    check_threads(args.threads)
    if args.export:
        _check_export(Path(args.export), args.overwrite)
    if args.dry_run:
        existing = Path(args.store).exists()  # a dry run creates and changes no store
        with RunStore(args.store if existing else ":memory:", readonly=existing) as store:
            jobs, stored, total = plan(spec, store, args.batch_size, args.retry_failed)
            stale = stale_runs(spec, store)
        axes = " x ".join(f"{k} ({len(v)})" for k, v in spec.axes.items())
        print(f"sweep {spec.name}: grid {axes} x {len(spec.seeds)} seeds = {total} runs; "
              f"{len(stored)} stored; {total - len(stored)} to compute in {len(jobs)} tasks"
              + (f"; {len(stale)} stale (computed by other code: --retry-stale recomputes them)" if stale else ""))
        return 0
    report = run_sweep(spec, args.store, scheduler=args.scheduler, workers=args.workers,
                       batch_size=args.batch_size, retry_failed=args.retry_failed, threads=args.threads,
                       progress=not args.no_progress, retry_stale=args.retry_stale)
    print(report.line())
    if args.export:
        path = export_csv(args.store, spec.name, args.export)
        print(f"exported {path} and {path.with_suffix('.json')}")
    return 1 if report.n_failed and report.n_failed == report.n_computed else 0


def _check_export(path: Path, overwrite: bool) -> None:
    """``--export`` can be written (checked before any run): a new file, or an old one with --overwrite."""
    from ..outputs import OutputError, os_error_text

    for target in (path, path.with_suffix(".json")):
        if target.is_dir():
            raise OutputError(f"--export {str(path)!r} is not allowed: {str(target)!r} is a folder")
        if target.exists() and not overwrite:
            raise OutputError(f"--export {str(path)!r}: {str(target)!r} exists; give --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--export {str(path)!r} cannot be written: {os_error_text(path.parent, err)}") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise OutputError(f"--export {str(path)!r} cannot be written: its folder is not writable")
