"""Run the paper's Table 1 protocol and write the result into benchmarks/README.md.

    python benchmarks/table1.py [--update-readme] [--quick] [--seeds 10]

Calls ``moesim.reproduce.table1`` (the same function as ``moesim reproduce table1`` and the book's
Table 1 chapter), prints the table with its wall time, writes ``benchmarks/results/table1.md`` and
``table1.json``, and with ``--update-readme`` replaces the table1 section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> int:
    from moesim.reproduce import table1

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args()
    t0 = time.time()
    tab = table1(seeds=args.seeds, quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    wall = time.time() - t0
    md = (f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, official semantics, n = {tab.n_train}, {args.seeds} seeds per model: "
          f"**{wall / 60:.1f} minutes** wall time for the whole table.\n\n" + tab.markdown())
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "table1.md").write_text(md + "\n")
    (out / "table1.json").write_text(json.dumps({**tab.to_dict(), "wall_time_total_s": wall}, indent=2) + "\n")
    print(md)
    if args.update_readme:
        readme = HERE / "README.md"
        text = readme.read_text()
        head, rest = text.split("<!-- table1:start -->", 1)
        _, tail = rest.split("<!-- table1:end -->", 1)
        readme.write_text(f"{head}<!-- table1:start -->\n{md}\n<!-- table1:end -->{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
