"""Peak resident memory of one training run beside ``moesim.memory.estimate`` (one JSON line).

    PYTHONPATH=. python benchmarks/memory_calibration.py PRESET MODEL SEEDS ENGINE [field=int ...]

Runs ``moesim.train`` once in this process (one torch thread, no snapshots but the last) and
prints the estimate, its parts and the peak RSS (``getrusage``) in MiB, with their ratio. The
results are recorded in ``benchmarks/results/calibration/memory.md``.
"""

from __future__ import annotations

import json
import resource
import sys

import torch

from moesim.config import preset
from moesim.memory import estimate, total
from moesim.training import train


def main(argv: list[str]) -> dict:
    if len(argv) < 4 or argv[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    name, model, seeds, engine, *over = argv
    fields = {k: int(v) for k, v in (o.split("=", 1) for o in over)}
    cfg = preset(name, model, record_every=10**6, **fields)
    parts = estimate(cfg, int(seeds), engine)
    train(cfg, int(seeds), engine=engine, keep_params=False)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return dict(config=" ".join(argv), estimate_MiB=round(total(parts) / 2**20),
                parts_MiB={k: round(v / 2**20) for k, v in parts.items()}, peak_rss_MiB=round(rss / 2**20),
                ratio=round(total(parts) / rss, 2))


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(main(sys.argv[1:])))
