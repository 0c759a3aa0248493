"""The paper's Table 1 protocol: four models, ten seeds each, in each data setting.

Protocol (the official notebooks; book/official_code.md, 'The protocol behind Table 1'): per setting,
one fixed data set (the official generator and seed); single linear and single nonlinear CNNs
(80 filters, Adam, up to 801 epochs with the code's stopping rule), linear and nonlinear MoE (8 experts of 16 filters, normalized GD
and router GD, up to 501 epochs with the code's early stopping); 10 consecutive model seeds on the
same data; mean and population std (ddof = 0) of the test accuracy and of the final training
dispatch entropy. ``moesim reproduce table1`` and the book's Table 1 chapter call ``table1``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .config import MODELS, SETTINGS, preset
from .paper import CONFIDENCE, reported

TABLE1_MODELS = ("single-linear", "single-nonlinear", "moe-linear", "moe-nonlinear")
TABLE1_SETTINGS = ("s1", "s2", "s3", "s4")


@dataclass
class Table1Row:
    """One cell group of Table 1: our mean and std over seeds beside the paper's."""

    setting: str
    model: str
    seeds: int
    test_accuracy: tuple[float, float]  # mean, std (%)
    dispatch_entropy: tuple[float, float] | None  # mean, std (nats); None for single models
    updates: float  # mean number of training steps taken
    wall_time_s: float
    paper_test_accuracy: tuple[float, float | None] | None
    paper_dispatch_entropy: tuple[float, float | None] | None
    paper_confidence: str | None
    per_seed_test_accuracy: list[float] = field(default_factory=list)
    per_seed_dispatch_entropy: list[float] = field(default_factory=list)


@dataclass
class Table1:
    """The reproduced table, with its protocol."""

    rows: list[Table1Row]
    semantics: str
    n_train: int
    wall_time_s: float

    def row(self, setting: str, model: str) -> Table1Row:
        for r in self.rows:
            if r.setting == setting and r.model == model:
                return r
        raise KeyError(f"no row for setting={setting!r}, model={model!r}")

    def markdown(self) -> str:
        """Table 1 as Markdown: ours beside the paper's for accuracy and dispatch entropy."""

        def ms(v, fmt):
            if v is None:
                return "—"
            return fmt.format(v[0]) + ("" if v[1] is None else " ± " + fmt.format(v[1]))

        lines = ["| setting | model | test accuracy (%) ours | paper | dispatch entropy ours | paper | steps | time (s) |",
                 "|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            conf = f" ({r.paper_confidence})" if r.paper_confidence == "L" else ""
            lines.append(f"| {r.setting} | {r.model} | {ms(r.test_accuracy, '{:.2f}')} | "
                         f"{ms(r.paper_test_accuracy, '{:.2f}')}{conf} | {ms(r.dispatch_entropy, '{:.3f}')} | "
                         f"{ms(r.paper_dispatch_entropy, '{:.3f}')} | {r.updates:.0f} | {r.wall_time_s:.1f} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dict(semantics=self.semantics, n_train=self.n_train, wall_time_s=self.wall_time_s,
                    rows=[asdict(r) for r in self.rows])


def table1(settings=TABLE1_SETTINGS, models=TABLE1_MODELS, seeds: int | list[int] = 10, *,
           semantics: str = "official", quick: bool = False, overrides: dict | None = None,
           progress: bool = False, log=None) -> Table1:
    """Run the Table 1 protocol and return our numbers beside the paper's.

    Args:
        settings: data settings (``s1``..``s4``).
        models: among ``single-linear``, ``single-nonlinear``, ``moe-linear``, ``moe-nonlinear``.
        seeds: model seeds (an int ``S`` means 0..S-1), trained as one batched program per model.
        semantics: ``"official"`` (the protocol that produced Table 1) or ``"paper"``.
        quick: use the laptop size (n = 4,000) instead of the paper's (n = 16,000).
        overrides: config fields to change in every run (e.g. ``{"device": "cuda"}``).
        progress: show a progress bar per model. log: a callable taking one line per finished model.
    """
    from .cli import progress_bar
    from .training import make_problem, train

    for s in settings:
        if s not in SETTINGS or s == "verify":
            raise ValueError(f"setting={s!r} is not allowed; choose from {', '.join(TABLE1_SETTINGS)}")
    for m in models:
        if m not in MODELS:
            raise ValueError(f"model={m!r} is not allowed; choose from {', '.join(TABLE1_MODELS)}")
    if semantics not in ("official", "paper"):
        raise ValueError(f"semantics={semantics!r} is not allowed; choose 'official' or 'paper'")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    t0 = time.perf_counter()
    rows = []
    n_train = 0
    for setting in settings:
        name = f"{semantics}-{setting}" + ("-quick" if quick else "")
        base = preset(name, **(overrides or {}))
        problem = make_problem(base)  # one data set per setting, shared by the four models
        n_train = base.n_train
        for model in models:
            cfg = preset(name, model, **{"record_every": 10**6, **(overrides or {})})
            update, close = progress_bar(cfg.steps, f"{setting} {model} x{len(seed_list)}", progress)
            res = train(cfg, seed_list, problem=problem, progress=update, keep_params=False)
            close()
            acc = res.summary["test_accuracy"]
            ent = res.summary["dispatch_entropy"]
            is_moe = cfg.architecture == "moe"
            rows.append(Table1Row(
                setting=setting, model=model, seeds=len(seed_list),
                test_accuracy=(float(np.mean(acc)), float(np.std(acc))),
                dispatch_entropy=(float(np.mean(ent)), float(np.std(ent))) if is_moe else None,
                updates=float(np.mean(res.summary["updates"])), wall_time_s=res.wall_time,
                paper_test_accuracy=reported(setting, model, "test_accuracy"),
                paper_dispatch_entropy=reported(setting, model, "dispatch_entropy"),
                paper_confidence=CONFIDENCE.get((setting, model)),
                per_seed_test_accuracy=[float(v) for v in acc],
                per_seed_dispatch_entropy=[float(v) for v in ent] if is_moe else [],
            ))
            if log is not None:
                r = rows[-1]
                log(f"{setting} {model}: test accuracy {r.test_accuracy[0]:.2f} ± {r.test_accuracy[1]:.2f} "
                    f"in {r.wall_time_s:.1f} s")
    return Table1(rows, semantics, n_train, time.perf_counter() - t0)


# --- command line ----------------------------------------------------------------------------

def configure_parser(p: argparse.ArgumentParser) -> None:
    from .cli import add_threads_argument

    p.add_argument("what", choices=("table1",), help="what to reproduce")
    p.add_argument("--settings", default=",".join(TABLE1_SETTINGS), help="comma list (default %(default)s)")
    p.add_argument("--models", default=",".join(TABLE1_MODELS), help="comma list (default %(default)s)")
    p.add_argument("--seeds", default="10", help="count (10), list (0,3,5) or range (0-9)")
    p.add_argument("--semantics", default="official", choices=("official", "paper"))
    p.add_argument("--quick", action="store_true", help="n = 4,000 instead of the paper's 16,000")
    p.add_argument("--device", default=None, help="cpu or cuda")
    p.add_argument("--out", default=None,
                   help="folder for table1.md and table1.json (default: a new runs/reproduce-table1-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder whole")
    add_threads_argument(p)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from .cli import UsageError, apply_threads, parse_seeds

    apply_threads(args)
    settings = [s for s in args.settings.split(",") if s]
    models = [m for m in args.models.split(",") if m]
    if not settings or not models:
        raise UsageError("--settings and --models must name at least one entry each")
    bad = [s for s in settings if s not in TABLE1_SETTINGS] + [m for m in models if m not in TABLE1_MODELS]
    if bad:
        raise UsageError(f"--settings/--models: {', '.join(map(repr, bad))} not allowed; settings: "
                         f"{', '.join(TABLE1_SETTINGS)}; models: {', '.join(TABLE1_MODELS)}")
    overrides = {"device": args.device} if args.device else {}
    if args.device:
        from .training import check_device

        check_device(args.device)
    seeds = parse_seeds(args.seeds)
    from .outputs import default_out, prepare_out, write_atomic

    out = prepare_out(args.out or default_out("reproduce", args.what), args.overwrite)  # before any training
    tab = table1(settings, models, seeds, semantics=args.semantics, quick=args.quick,
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
