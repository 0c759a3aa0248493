"""The ``moesim`` command line.

Subcommands live in their own modules, imported only when used; each module exposes
``configure_parser(parser)`` and ``main(args) -> int``:

    moesim run        train models (this module)
    moesim verify     check every claim of the paper      (moesim.verify)
    moesim reproduce  the paper's Table 1 protocol        (moesim.reproduce)
    moesim book       re-run a book chapter               (moesim.bookrun)
    moesim sweep      parameter sweeps on Dask            (moesim.sweeps)
    moesim config     list the config fields              (moesim.fields)
    moesim replay     the official notebooks' own runs    (moesim.replay)

Bad input (unknown preset, model, field, wrong value type, impossible sizes) ends with one
message naming the parameter and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

SUBCOMMANDS = {
    "run": ("moesim.cli", "train models on the paper's data and write their results"),
    "verify": ("moesim.verify", "check every claim of the paper and print a verdict table"),
    "reproduce": ("moesim.reproduce", "run the paper's Table 1 protocol"),
    "book": ("moesim.bookrun", "re-execute a book chapter with other parameters"),
    "sweep": ("moesim.sweeps", "run a parameter grid on Dask into a run store"),
    "config": ("moesim.fields", "list every config field: type, default (or a preset's value) and meaning"),
    "replay": ("moesim.replay", "replay an official demo notebook's runs and compare them with its printed output"),
}


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


#: Most seeds one command takes: a batched run holds every seed's model, noise and history at
#: once, so a list this long is refused before it is built (the memory check sizes the rest).
MAX_SEEDS = 100_000


def parse_seeds(text: str) -> list[int]:
    """``"10"`` -> 0..9; ``"3,5,8"`` -> [3, 5, 8]; ``"4-7"`` -> 4..7 (at most ``MAX_SEEDS``)."""

    def check_count(count: int) -> None:
        if count > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r} asks for {count} seeds; at most {MAX_SEEDS} in one command")

    try:
        if "," in text:
            check_count(text.count(",") + 1)
            seeds = [int(s) for s in text.split(",") if s.strip()]
        elif "-" in text.strip("-"):
            lo, hi = text.split("-", 1)
            check_count(int(hi) - int(lo) + 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            k = int(text)
            if k < 1:
                raise UsageError(f"--seeds {text!r}: the number of seeds must be >= 1")
            check_count(k)
            seeds = list(range(k))
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not allowed; give a count (10), a list (0,3,5) or a range (0-9)") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r} is an empty range")
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


def add_config_arguments(p: argparse.ArgumentParser, default_preset: str | None = "official-s1") -> None:
    """--preset, --model, --set, --device, --dtype: shared by run, sweep and config."""
    p.add_argument("--preset", default=default_preset,
                   help="{paper|official}-{s1|s2|s3|s4|verify}[-quick] or theory-d<d> (default %(default)s; "
                        "'moesim run --help' lists them)")
    p.add_argument("--model", default=None,
                   help="moe-nonlinear, moe-linear, single-nonlinear, single-linear, single-relu, ...")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one config field (repeatable), e.g. --set n_experts=16")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:<i> (default: the preset's, cpu)")
    p.add_argument("--dtype", default=None, choices=("float32", "float64"))


def add_threads_argument(p: argparse.ArgumentParser, what: str = "torch CPU threads") -> None:
    """--threads: shared by every command that trains (run, verify, reproduce, sweep)."""
    p.add_argument("--threads", type=int, default=None,
                   help=f"{what} (default: torch's choice; 1 is faster on a busy shared machine)")


def apply_threads(args: argparse.Namespace) -> int | None:
    """Validate ``--threads`` and set torch's CPU threads; return the number (None: unchanged)."""
    threads = getattr(args, "threads", None)
    if threads is None:
        return None
    if threads < 1:
        raise UsageError(f"--threads {threads} is not allowed; give an integer >= 1")
    import torch

    torch.set_num_threads(threads)
    return threads


def presets_epilog() -> str:
    """The preset and model names, for ``--help``."""
    from .config import MODELS, preset_names

    names = [n for n in preset_names() if not n.startswith("theory-")]
    return ("presets: " + ", ".join(names) + ", theory-d<d> (any d >= 16)\n"
            "models: " + ", ".join(MODELS) + "\n"
            "config fields (for --set NAME=VALUE): moesim config [--preset P]")


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
    p.add_argument("--out", default=None, help="output folder (default: a new runs/run-<preset>-<model>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder whole")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how gradients are computed: fused C kernel, eager torch, autograd, official-ops "
                        "(the official code's operations in its order; slow) (default: auto)")
    p.add_argument("--no-memory-check", action="store_true",
                   help="train even when the memory estimate exceeds the available memory")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = presets_epilog()


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


class InterruptGuard:
    """Within this block SIGINT and SIGTERM stop training at the end of the current step.

    The first signal sets ``received`` (``"SIGINT"``/``"SIGTERM"``) and ``check()`` (called after
    each step) raises ``KeyboardInterrupt`` there, so the parameters are those of a completed step;
    a second signal raises at once. ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM).
    """

    def __init__(self):
        self.received: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        import signal

        first = self.received is None
        self.received = signal.Signals(signum).name
        if not first:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.received is not None:
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        return 143 if self.received == "SIGTERM" else 130

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def main_run(args: argparse.Namespace) -> int:
    from . import memory
    from .outputs import default_out, prepare_out
    from .results import save_run
    from .training import DivergenceError, TrainingInterrupted, check_device, train

    cfg = config_from_args(args)
    check_device(cfg.device)
    apply_threads(args)
    seeds = parse_seeds(args.seeds)
    if not args.no_memory_check:
        memory.check(cfg, len(seeds), args.engine)
    model = args.model or ("moe-nonlinear" if cfg.architecture == "moe" else "single-nonlinear")
    setting = args.preset.replace("-quick", "").split("-", 1)[1] if "-" in args.preset else None
    out = Path(args.out or default_out("run", f"{args.preset}-{model}"))
    created = not out.exists()
    prepare_out(out, args.overwrite)
    about = {"preset": args.preset, "model": model}
    update, close = progress_bar(cfg.steps, f"{args.preset} {model} x{len(seeds)}", not args.no_progress)
    guard = InterruptGuard()
    try:
        with guard:
            def step_done(step: int, total: int) -> None:
                update(step, total)
                guard.check()

            result = train(cfg, seeds, progress=step_done, engine=args.engine, check_memory=False)
    except DivergenceError as err:
        close()
        save_run(err.result, out, overwrite=args.overwrite, extra=dict(
            about, status="diverged", incomplete=True, error=str(err).split(";")[0], diverged_at_step=err.step))
        print(f"moesim: error: training diverged at step {err.step} (non-finite loss for seed(s) {err.seeds}); "
              f"the trajectory before that step is written to {out}/", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        close()
        how = guard.received or "SIGINT"
        if isinstance(err, TrainingInterrupted):
            save_run(err.result, out, overwrite=args.overwrite, extra=dict(
                about, status="interrupted", incomplete=True, signal=how, steps_done=err.steps_done))
            print(f"moesim: interrupted by {how} after {err.steps_done} of {cfg.steps} steps; what was trained is "
                  f"written to {out}/ (marked incomplete)", file=sys.stderr)
        else:
            if created:
                _remove_if_empty(out)
            print(f"moesim: interrupted by {how} before training started; nothing written", file=sys.stderr)
        return 143 if how == "SIGTERM" else 130
    except BaseException:
        close()
        if created:
            _remove_if_empty(out)
        raise
    close()
    save_run(result, out, overwrite=args.overwrite, extra=dict(about, status="complete", incomplete=False))
    print(f"{args.preset}  {model}  seeds={seeds[0]}..{seeds[-1]} ({len(seeds)})  "
          f"wall time {result.wall_time:.1f} s")
    print(summary_table(result, setting, model))
    print(f"results: {out}/ (config.json, summary.json, trajectory.npz, params.pt)")
    return 0


def _remove_if_empty(path: Path) -> None:
    """Remove the folder ``prepare_out`` made when nothing was written into it."""
    try:
        path.rmdir()  # fails (and keeps it) when it is not empty
    except OSError:
        pass


main = main_run


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="moesim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"moesim {__version__}")
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
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    # run through the imported module so that subcommands raise the same UsageError class
    from moesim.cli import cli as _cli

    sys.exit(_cli())
