"""``moesim run``: train models on the paper's data and write their results (``moesim.results``).

Bad input (unknown preset, model, field, wrong value type, impossible sizes) ends with one
message naming the parameter and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..arguments import (
    add_config_arguments, add_out_argument, add_overwrite_argument, add_progress_argument, add_seeds_argument,
    add_threads_argument, presets_epilog,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..config import ENGINES

    add_config_arguments(p)
    add_seeds_argument(p, "10", default_text=None)
    add_out_argument(p, "a new runs/run-<preset>-<model>-<time>")
    add_overwrite_argument(p)
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="how gradients are computed: fused C kernel, eager torch, autograd, official-ops "
                        "(the official code's operations in its order; slow) (default: auto)")
    p.add_argument("--no-memory-check", action="store_true",
                   help="train even when the memory estimate exceeds the available memory")
    add_threads_argument(p)
    add_progress_argument(p)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = presets_epilog()


def summary_table(result, setting: str | None, model: str | None) -> str:
    """Markdown table: metric | ours (mean ± std over seeds) | paper (mean ± std)."""
    from ..paper import reported
    from ..results import summary_stats

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


def main(args: argparse.Namespace) -> int:
    from .. import memory
    from ..arguments import apply_threads, config_from_args, parse_seeds
    from ..interrupts import InterruptGuard
    from ..outputs import default_out, prepare_out
    from ..progress import progress_bar
    from ..results import save_run
    from ..training import DivergenceError, TrainingInterrupted, check_device, train

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
