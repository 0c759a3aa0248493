"""``moesim verify``: check every claim of the paper and print a verdict table.

    moesim verify                 # --quick: n = 4000, seeds 0-2 (a few minutes on 2 CPU cores)
    moesim verify --full          # the paper's n = 16000, 10 seeds, one-sided 95 % bounds
    moesim verify --claims thm4.2,lemma5.1 --set lr_router=0    # break the model under test

The claims are ``moesim.claims`` (the same objects ``tests/theory`` asserts on). The table has one
row per check: claim | prediction | measured (with its spread or bound) | verdict. It is printed
and written as ``verify.md`` and ``verify.json`` to ``--out`` (default ``runs/verify-<scale>-<time>``).
Exit code: 0 when every claim passes, 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="scale", action="store_const", const="quick",
                      help="reduced size: n = 4000, seeds 0-2, median rules (default)")
    size.add_argument("--full", dest="scale", action="store_const", const="full",
                      help="the paper's size: n = 16000, 10 seeds, one-sided 95 %% confidence bounds")
    p.set_defaults(scale="quick")
    p.add_argument("--claims", default=None, help="comma-separated claim names (default: all; see --list)")
    p.add_argument("--seeds", default=None, help="model seeds: a count (10), a list (0,3,5) or a range (0-9)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="change the model under test (every MoE run), e.g. --set activation=linear or "
                        "--set lr_router=0 to break it on purpose (repeatable)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i> (default %(default)s)")
    p.add_argument("--out", default=None, help="output folder (default runs/verify-<scale>-<time>)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy shared machine)")
    p.add_argument("--list", action="store_true", help="list the claims and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    from . import claims
    from .cli import UsageError, parse_seeds, progress_bar
    from .config import parse_override
    from .training import check_device

    if args.list:
        for name in claims.names():
            c = claims.get(name)
            print(f"{name:20s} {c.reference}\n{'':20s} {c.prediction}")
        return 0
    selected = None
    if args.claims:
        selected = [s.strip() for s in args.claims.split(",") if s.strip()]
        unknown = [s for s in selected if s not in claims.names()]
        if unknown or not selected:
            raise UsageError(f"--claims {args.claims!r}: unknown claim(s) {unknown}; "
                             f"allowed: {', '.join(claims.names())}")
    scale = claims.SCALES[args.scale]
    if args.seeds is not None:
        scale = scale.with_seeds(parse_seeds(args.seeds))
    overrides = dict(parse_override(item) for item in args.overrides)
    check_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads} is not allowed; give an integer >= 1")
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/verify-{scale.name}-{time.strftime('%Y%m%d-%H%M%S')}")

    def log(text: str) -> None:
        print(f"[verify {time.perf_counter() - t0:7.1f} s] {text}", file=sys.stderr, flush=True)

    def progress(desc: str, total: int):
        return progress_bar(total, desc, not args.no_progress)

    t0 = time.perf_counter()
    ctx = claims.Context(scale, overrides, device=args.device, progress=progress, log=log)
    log(f"scale {scale.name}: n = {scale.n}, seeds {list(scale.seeds)}"
        + (f", model under test changed by {overrides}" if overrides else ""))

    def done(res) -> None:
        log(f"{res.verdict} {res.name} ({res.wall_time_s:.1f} s)")

    results = claims.run_claims(ctx, selected, on_result=done)
    wall = time.perf_counter() - t0
    header = dict(scale=scale.name, n=scale.n, seeds=list(scale.seeds), statistics=scale.statistics,
                  overrides=overrides, device=args.device, wall_time_s=round(wall, 1),
                  train_time_s=round(ctx.train_seconds, 1), passed=all(r.passed for r in results),
                  claims_passed=sum(r.passed for r in results), claims_total=len(results), **environment())
    table = markdown(results, header)
    print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verify.md").write_text(table + "\n")
    (out / "verify.json").write_text(json.dumps(dict(header, claims=[r.to_dict() for r in results]), indent=2) + "\n")
    print(f"{header['claims_passed']}/{len(results)} claims passed in {wall:.0f} s; written to {out}/verify.md and "
          f"{out}/verify.json")
    return 0 if header["passed"] else 1


def environment() -> dict:
    """Versions that produced the numbers."""
    import torch

    from . import __version__

    return dict(moesim=__version__, torch=torch.__version__, python=platform.python_version(),
                machine=platform.machine(), threads=torch.get_num_threads())


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results, header: dict) -> str:
    """The verdict table: one row per check (claim | prediction | measured | verdict)."""
    over = f"; model under test changed by `{header['overrides']}`" if header["overrides"] else ""
    rule = ("a per-seed property must hold for a majority of seeds; a quantity is compared through its median"
            if header["statistics"] == "median" else
            "a per-seed property needs a one-sided 95 % Clopper-Pearson lower bound >= 0.5 on its success "
            "probability; a quantity is compared through a one-sided 95 % t bound on its mean")
    lines = [
        f"# moesim verify ({header['scale']}): {header['claims_passed']}/{header['claims_total']} claims pass",
        "",
        f"n = {header['n']} training and test points, seeds {header['seeds']}, device {header['device']}{over}. "
        f"Rule: {rule}. Wall time {header['wall_time_s']} s (training {header['train_time_s']} s); "
        f"moesim {header['moesim']}, torch {header['torch']}.",
        "",
        "| claim | prediction | measured | verdict |",
        "|---|---|---|---|",
    ]
    for r in results:
        for i, c in enumerate(r.checks):
            name = f"**{r.name}** ({r.reference}): {r.verdict}" if i == 0 else ""
            lines.append(f"| {_cell(name)} | {_cell(c.prediction)} | {_cell(c.measured)} | "
                         f"{'pass' if c.passed else '**FAIL**'} |")
    lines += ["", "Threshold sources:", ""]
    lines += [f"- **{r.name}**: {_cell(r.source)}" for r in results]
    return "\n".join(lines)
