"""Replay every MoE run of the official demo notebooks and record what matched (moesim.replay).

Usage (the command that produced benchmarks/results/replay.json and replay.md):

    python benchmarks/replay_notebooks.py synthetic_demo_s1 synthetic_demo_s2 synthetic_demo_s3 synthetic_demo_s4

Each notebook's runs are appended to the JSON record (a notebook given again replaces its entry),
and the Markdown table is rewritten from the whole record.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from moesim import replay as R

OUT = Path(__file__).resolve().parent / "results"


def run(name: str) -> dict:
    t0 = time.perf_counter()
    runs = R.replay(name, progress=lambda r: print(f"  {name} cell {r.cell} run {r.run + 1}: {r.forwards} forwards, "
                                                   f"test {r.accuracy('test'):.4f} %", flush=True))
    checks = R.compare(name, runs)
    return dict(
        runs=[dict(cell=r.cell, run=r.run + 1, forwards=r.forwards, stopped_early=r.stopped_early,
                   test_accuracy=r.accuracy("test"), dispatch_entropy=r.dispatch_entropy) for r in runs],
        checks=[dict(cell=c.cell, what=c.what, printed=c.printed, replayed=c.replayed, ok=c.ok) for c in checks],
        matched=sum(c.ok for c in checks), total=len(checks), seconds=round(time.perf_counter() - t0, 1))


def markdown(record: dict) -> str:
    lines = ["# Replaying the official demo notebooks", "",
             "Written by `python benchmarks/replay_notebooks.py <notebooks>` (moesim.replay); "
             f"torch {record['torch']}, {record['machine']}.", "",
             "| notebook | printed values replayed exactly | mismatches | wall time (s) |", "|---|---|---|---|"]
    for name, r in sorted(record["notebooks"].items()):
        bad = [f"cell {c['cell']} {c['what']}: printed {c['printed']}, replayed {c['replayed']}"
               for c in r["checks"] if not c["ok"]]
        lines.append(f"| {name} | {r['matched']} of {r['total']} | {'; '.join(bad) or 'none'} | {r['seconds']} |")
    lines += ["", "Forwards (training forward passes, the stopping one included) of each replayed run:", ""]
    for name, r in sorted(record["notebooks"].items()):
        by_cell: dict[int, list[int]] = {}
        for x in r["runs"]:
            by_cell.setdefault(x["cell"], []).append(x["forwards"])
        lines.append(f"- {name}: " + "; ".join(f"cell {c}: {' '.join(map(str, f))}" for c, f in by_cell.items()))
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", choices=R.notebooks())
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = OUT / "replay.json"
    record = json.loads(path.read_text()) if path.exists() else dict(notebooks={})
    record.update(torch=torch.__version__, machine=f"{platform.machine()} CPU, 1 thread")
    for name in args.notebooks:
        record["notebooks"][name] = run(name)
        path.write_text(json.dumps(record, indent=1) + "\n")
        (OUT / "replay.md").write_text(markdown(record))
        print(f"{name}: {record['notebooks'][name]['matched']} of {record['notebooks'][name]['total']} exact")


if __name__ == "__main__":
    main()
