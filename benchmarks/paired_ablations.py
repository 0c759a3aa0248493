"""Paired ablations (common random numbers) of the official code's quirks on a replayed cell.

Usage (the command that produced benchmarks/results/paired_ablations.json and .md):

    python benchmarks/paired_ablations.py --notebook synthetic_demo_s1 --cell 18

For each quirk of ``moesim.paired.QUIRKS``: the cell's ten replayed runs again from their own
stream states with the quirk switched to the paper's choice (paired differences, t interval), and
ten runs of each version on independent moesim seeds (difference of means, Welch interval).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from moesim import paired

OUT = Path(__file__).resolve().parent / "results"


def markdown(rec: dict) -> str:
    lines = ["# Paired ablations of the official code's quirks", "",
             f"Written by `python benchmarks/paired_ablations.py --notebook {rec['notebook']} --cell {rec['cell']}` "
             f"(moesim.paired); torch {rec['torch']}, {rec['machine']}, {rec['seconds']} s.", "",
             f"Each quirk switched to the paper's choice on the {rec['n']} replayed runs of cell {rec['cell']} "
             "(same initialization draws and noise matrices: paired difference, 95 % t interval) and on "
             f"{rec['n']} + {rec['n']} independent seeds (difference of means, 95 % Welch interval).", "",
             "| quirk | metric | paired difference | unpaired difference | unpaired / paired width |",
             "|---|---|---|---|---|"]
    for e in rec["effects"]:
        ratio = e["unpaired_half_width"] / e["paired_half_width"] if e["paired_half_width"] > 0 else float("inf")
        lines.append(f"| {e['quirk']} | {e['metric']} | {e['paired_mean']:+.3f} ± {e['paired_half_width']:.3f} "
                     f"| {e['unpaired_mean']:+.3f} ± {e['unpaired_half_width']:.3f} | {ratio:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebook", default="synthetic_demo_s1")
    ap.add_argument("--cell", type=int, default=18)
    ap.add_argument("--quirks", default=None, help="comma-separated subset of: " + ", ".join(paired.QUIRKS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    quirks = None if args.quirks is None else [q.strip() for q in args.quirks.split(",")]
    values, effects = paired.paired_ablation(args.notebook, args.cell, quirks,
                                             progress=lambda q: print(f"  {q} done at {time.perf_counter() - t0:.0f} s",
                                                                      flush=True))
    rec = dict(notebook=args.notebook, cell=args.cell, n=effects[0].n, torch=torch.__version__,
               machine=f"{platform.machine()} CPU, 1 thread", seconds=round(time.perf_counter() - t0),
               effects=[dict(vars(e)) for e in effects],
               values={k: {m: v.tolist() for m, v in d.items()} for k, d in values.items()})
    (OUT / "paired_ablations.json").write_text(json.dumps(rec, indent=1) + "\n")
    (OUT / "paired_ablations.md").write_text(markdown(rec))
    print(markdown(rec))


if __name__ == "__main__":
    main()
