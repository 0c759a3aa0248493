"""The ``moesim`` command line.

Subcommands live in their own modules, imported only when used; each module exposes
``configure_parser(parser)`` and ``main(args) -> int``:

    moesim run        train models (this module)
    moesim verify     check every claim of the paper      (moesim.verify)
    moesim reproduce  the paper's Table 1 protocol        (moesim.reproduce)
    moesim book       re-run a book chapter               (moesim.bookrun)
    moesim sweep      parameter sweeps on Dask            (moesim.sweeps)
    moesim replay     the official notebooks' own runs    (moesim.replay)

Bad input (unknown preset, model, field, wrong value type, impossible sizes) ends with one
message naming the parameter and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

SUBCOMMANDS = {
    "run": ("moesim.cli", "train models on the paper's data and write their results"),
    "verify": ("moesim.verify", "check every claim of the paper and print a verdict table"),
    "reproduce": ("moesim.reproduce", "run the paper's Table 1 protocol"),
    "book": ("moesim.bookrun", "re-execute a book chapter with other parameters"),
    "sweep": ("moesim.sweeps", "run a parameter grid on Dask into a run store"),
    "replay": ("moesim.replay", "replay an official demo notebook's runs and compare them with its printed output"),
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def parse_seeds(text: str) -> list[int]:
    """``"10"`` -> 0..9; ``"3,5,8"`` -> [3, 5, 8]; ``"4-7"`` -> 4..7."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        elif "-" in text.strip("-"):
            lo, hi = text.split("-", 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            k = int(text)
            if k < 1:
                raise UsageError(f"--seeds {text!r}: the number of seeds must be >= 1")
            seeds = list(range(k))
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not allowed; give a count (10), a list (0,3,5) or a range (0-9)") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r} is an empty range")
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


def add_config_arguments(p: argparse.ArgumentParser, default_preset: str = "official-s1") -> None:
    """--preset, --model, --set, --device, --dtype: shared by run, verify, reproduce, sweep."""
    p.add_argument("--preset", default=default_preset,
                   help="{paper|official}-{s1|s2|s3|s4|verify}[-quick] (default %(default)s)")
    p.add_argument("--model", default=None,
                   help="moe-nonlinear, moe-linear, single-nonlinear, single-linear, single-relu, ...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one config field (repeatable), e.g. --set n_experts=16")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:<i> (default: the preset's, cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "float64"))


def config_from_args(args: argparse.Namespace, model: str | None = None):
    """Build and validate the config the arguments describe."""
    from .config import parse_override, preset

    overrides = dict(parse_override(item) for item in args.overrides)
    if args.device is not None:
        overrides["device"] = args.device
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    return preset(args.preset, model or args.model, **overrides)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .config import ENGINES

    add_config_arguments(p)
    p.add_argument("--seeds", default="10", help="number of seeds (10), a list (0,3,5) or a range (0-9)")
    p.add_argument("--out", default=None, help="output folder (default runs/<preset>-<model>-<time>)")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how gradients are computed: fused C kernel, eager torch, autograd, official-ops "
                        "(the official code's operations in its order; slow) (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def progress_bar(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (or a no-op); returns (callback(step, total), close())."""
    if not enabled:
        return (lambda step, tot: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, leave=False, dynamic_ncols=True, disable=None)

    def update(step: int, tot: int) -> None:
        bar.update(step - bar.n)

    return update, bar.close


def summary_table(result, setting: str | None, model: str | None) -> str:
    """Markdown table: metric | ours (mean ± std over seeds) | paper (mean ± std)."""
    from .paper import reported
    from .results import summary_stats

    stats = summary_stats(result)
    lines = [f"| metric | ours (mean ± std, {len(result.seeds)} seeds) | paper |", "|---|---|---|"]
    for key, fmt in (("test_accuracy", "{:.2f}"), ("train_accuracy", "{:.2f}"), ("dispatch_entropy", "{:.3f}"),
                     ("updates", "{:.0f}")):
        if key not in stats or (key == "dispatch_entropy" and result.config.architecture == "single"):
            continue
        s = stats[key]
        ours = f"{fmt.format(s['mean'])} ± {fmt.format(s['std'])}"
        ref = reported(setting, model, key) if setting and model else None
        paper = "—" if ref is None else (fmt.format(ref[0]) + ("" if ref[1] is None else f" ± {fmt.format(ref[1])}"))
        lines.append(f"| {key} | {ours} | {paper} |")
    return "\n".join(lines)


def main_run(args: argparse.Namespace) -> int:
    from .results import save_run
    from .training import DivergenceError, check_device, train

    cfg = config_from_args(args)
    check_device(cfg.device)
    seeds = parse_seeds(args.seeds)
    model = args.model or ("moe-nonlinear" if cfg.architecture == "moe" else "single-nonlinear")
    setting = args.preset.replace("-quick", "").split("-", 1)[1] if "-" in args.preset else None
    out = Path(args.out or f"runs/{args.preset}-{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    update, close = progress_bar(cfg.steps, f"{args.preset} {model} x{len(seeds)}", not args.no_progress)
    try:
        result = train(cfg, seeds, progress=update, engine=args.engine)
    except DivergenceError as err:
        close()
        save_run(err.result, out, extra={"error": str(err), "diverged_at_step": err.step})
        print(f"moesim: error: {err}; trajectory written to {out}", file=sys.stderr)
        return 1
    close()
    save_run(result, out, extra={"preset": args.preset, "model": model})
    print(f"{args.preset}  {model}  seeds={seeds[0]}..{seeds[-1]} ({len(seeds)})  "
          f"wall time {result.wall_time:.1f} s")
    print(summary_table(result, setting, model))
    print(f"results: {out}/ (config.json, summary.json, trajectory.npz, params.pt)")
    return 0


main = main_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moesim", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if len(sys.argv) > 1 and sys.argv[1] not in ("-h", "--help") and sys.argv[1] != name:
            continue  # only the chosen subcommand's module is imported
        try:
            importlib.import_module(module).configure_parser(sp)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            sp.set_defaults(_missing=True)
    return parser


def cli(argv: list[str] | None = None) -> int:
    """Entry point of the ``moesim`` command."""
    from .config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    saved = sys.argv
    sys.argv = [saved[0]] + argv
    try:
        parser = build_parser()
    finally:
        sys.argv = saved
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"moesim: error: the '{args.command}' command is not available in this version", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except (ConfigError, UsageError) as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values found while building the run (device, seeds, ...)
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run through the imported module so that subcommands raise the same UsageError class
    from moesim.cli import cli as _cli

    sys.exit(_cli())
