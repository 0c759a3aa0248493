"""The benchmark script's measuring path runs (a smoke test; timings are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def _measure(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH), "--measure", json.dumps(spec)], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_measures_a_tiny_moe_and_the_official_style_step():
    out = _measure(dict(kind="moesim", model="moe-nonlinear", n=400, M=4, S=2, threads=1, warmup=1, steps=2))
    assert out["step_ms"] > 0 and out["peak_rss_mb"] > 0
    out = _measure(dict(kind="official", n=200, M=4, threads=1, warmup=1, steps=1))
    assert out["step_ms"] > 0
