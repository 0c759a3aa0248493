"""``moesim replay NOTEBOOK``: replay an official demo notebook's runs and compare them with its
printed output (``moesim.replay``); exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse

from ..arguments import add_threads_argument


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..replay import notebooks

    p.add_argument("notebook", help=f"the official notebook to replay ({', '.join(notebooks())})")
    p.add_argument("--cells", default=None, help="comma-separated MoE cells to replay (default: all)")
    p.add_argument("--runs", type=int, default=None, help="replay only the first RUNS runs of the last cell")
    p.add_argument("--engine", default="official-ops",
                   help="moesim's step engine (default official-ops: the official code's operations in its "
                        "order, bit-level replay, about 3 minutes a run; auto: the fused kernel, seconds a run, "
                        "edge samples can round the other way)")
    add_threads_argument(p, default=1, default_text="1, the threads the exact replays were measured with; "
                                                    "more threads can change float32 summation order")


def _fmt(v) -> str:
    if isinstance(v, list) and v and isinstance(v[0], list):
        return "; ".join(" ".join(str(x) for x in row) for row in v)
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    return str(v)


def main(args: argparse.Namespace) -> int:
    from .. import replay as R
    from ..arguments import UsageError, apply_threads
    from ..config import ENGINES

    apply_threads(args)
    if args.notebook not in R.notebooks():
        raise UsageError(f"notebook {args.notebook!r} is not stored; choose one of: {', '.join(R.notebooks())}")
    nb = R.load_notebook(args.notebook)
    moe_cells = [c["cell"] for c in nb["cells"] if c["model"] == "moe"]
    try:
        cells = moe_cells if args.cells is None else [int(v) for v in args.cells.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--cells {args.cells!r} is not allowed; give MoE cell numbers such as 16,18") from None
    if not cells or set(cells) - set(moe_cells):
        raise UsageError(f"--cells {args.cells!r} is not allowed; {args.notebook} has MoE cells {moe_cells}")
    if args.engine not in ENGINES:
        raise UsageError(f"--engine {args.engine!r} is not allowed; choose one of {', '.join(ENGINES)}")
    if args.runs is not None and args.runs < 1:
        raise UsageError(f"--runs {args.runs}: give at least 1")
    runs = {max(cells): args.runs} if args.runs else None
    src = nb["source"]
    print(f"replaying {src['notebook']} of {src['repository']} @ {src['commit'][:7]} "
          f"(seed {nb['seed']}, setting {nb['setting']}), cells {cells}")

    def progress(r: R.RunReplay) -> None:
        if r.cell in cells:
            accs = ", ".join(f"{s} {r.accuracy(s):.4f} %" for s in ("train", "test") if s in _evals(nb, r.cell))
            print(f"  cell {r.cell} run {r.run + 1}: {r.forwards} forwards"
                  f"{' (early stop)' if r.stopped_early else ''}, entropy {r.dispatch_entropy:.3f}, {accs}", flush=True)

    replays = R.replay(args.notebook, cells, runs, engine=args.engine, progress=progress)
    checks = R.compare(args.notebook, replays)
    bad = [c for c in checks if not c.ok]
    print(f"\n{'cell':>4}  {'printed by the notebook':<44} {'replayed by moesim':<44} what")
    for c in checks:
        note = "" if c.ok else "   <-- MISMATCH"
        if not c.ok and c.samples_off is not None:
            note += f" ({c.samples_off} sample(s))"
        print(f"{c.cell:>4}  {_fmt(c.printed):<44} {_fmt(c.replayed):<44} {c.what}{note}")
    print(f"\n{len(checks) - len(bad)} of {len(checks)} printed values replayed exactly")
    off = [c.samples_off for c in bad if c.samples_off is not None]
    if off:
        print(f"{len(off)} run accuracies differ, by at most {max(off)} sample(s) of {nb['data_num']}")
    return 1 if bad else 0


def _evals(nb: dict, cell: int) -> list[str]:
    return next(c["evals"] for c in nb["cells"] if c["cell"] == cell)
