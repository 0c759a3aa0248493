"""Replay chosen MoE runs of an official demo notebook with engine="official-ops", each from its stream state.

Usage (the command that produced benchmarks/results/calibration/replay_official_ops.json):

    python benchmarks/replay_official_ops.py synthetic_demo_s1 --cells 20,22 --workers 2

The official-ops engine takes minutes a run, so a whole notebook takes an hour on one core. This
script first replays the notebook with the fast engine (about a minute) to get the stream state at
the start of every run, then replays the chosen cells' runs from those states with official-ops, in
parallel processes. That equals the sequential replay exactly when every run's number of forward
passes (which fixes how far the stream advances) is the same under both engines: the record lists
both, and compares every printed value of the chosen cells.
"""

from __future__ import annotations

import argparse
import json
import time
from multiprocessing import Pool
from pathlib import Path

import torch

from moesim import replay as R

OUT = Path(__file__).resolve().parent / "results" / "calibration" / "replay_official_ops.json"


def _one(job):
    name, cell_no, run, state = job
    torch.set_num_threads(1)
    nb = R.load_notebook(name)
    cell = next(c for c in nb["cells"] if c["cell"] == cell_no)
    stream = R.NotebookStream(nb["seed"])
    stream.set_state(state)
    t0 = time.perf_counter()
    r = R.replay_run(stream, nb, cell, run, engine="official-ops")
    r.state = None
    print(f"  cell {cell_no} run {run + 1}: {r.forwards} forwards, test {r.accuracy('test'):.4f} %, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return r, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebook", choices=R.notebooks())
    ap.add_argument("--cells", required=True, help="comma-separated MoE cells")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT, help=f"the record to write (default {OUT.name})")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing record")
    args = ap.parse_args()
    if args.out.exists() and not args.overwrite:
        ap.error(f"--out {args.out} exists; give --overwrite to replace it, or another --out")
    torch.set_num_threads(1)
    cells = [int(c) for c in args.cells.split(",")]
    t0 = time.perf_counter()
    fast = R.replay(args.notebook, cells, engine="auto")
    print(f"fast replay: {time.perf_counter() - t0:.0f} s", flush=True)
    jobs = [(args.notebook, r.cell, r.run, r.state) for r in fast]
    with Pool(args.workers) as pool:
        done = pool.map(_one, jobs)
    ops = [r for r, _ in done]
    checks = R.compare(args.notebook, ops)
    record = dict(
        notebook=args.notebook, cells=cells, torch=torch.__version__,
        runs=[dict(cell=o.cell, run=o.run + 1, forwards_official_ops=o.forwards, forwards_fast=f.forwards,
                   test_accuracy=o.accuracy("test"), seconds=round(s, 1)) for (o, s), f in zip(done, fast)],
        checks=[dict(cell=c.cell, what=c.what, printed=c.printed, replayed=c.replayed, ok=c.ok) for c in checks],
        matched=sum(c.ok for c in checks), total=len(checks))
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    same = all(o.forwards == f.forwards for o, f in zip(ops, fast))
    print(f"{record['matched']} of {record['total']} printed values exact; forwards equal under both engines: {same}")


if __name__ == "__main__":
    main()
