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


def test_behaviour_fingerprint_records_and_catches_a_changed_number(tmp_path):
    """benchmarks/behaviour_fingerprint.py (ARCHITECTURE.md, 'Refactoring'): equal code gives equal
    records; one different array, or a configuration one record lacks, is reported."""
    import importlib.util

    path = BENCH.with_name("behaviour_fingerprint.py")
    spec = importlib.util.spec_from_file_location("behaviour_fingerprint", path)
    fp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fp)
    assert len(fp.cases()) == 79
    chosen = [("official-s1-quick", "moe-nonlinear", "eager", {}), ("official-s1-quick", "single-linear", "fused", {})]
    a = fp.record(str(tmp_path / "a.json"), chosen)
    b = fp.record(str(tmp_path / "b.json"), chosen)
    assert fp.compare(a, b) == [] and json.loads((tmp_path / "a.json").read_text()) == a
    key = "official-s1-quick|single-linear|fused|{}"
    assert a[key]["error"].startswith("ValueError: engine='fused' cannot run here")  # a refusal is recorded
    moe = "official-s1-quick|moe-nonlinear|eager|{}"
    changed = dict(b, **{moe: dict(b[moe], **{"params.W": "0" * 16})})
    assert fp.compare(a, changed) == [moe]
    assert fp.compare(a, {moe: a[moe]}) == [key]
