"""Behaviour fingerprint of the training code: record it before a refactor, compare it after.

    PYTHONPATH=. python benchmarks/behaviour_fingerprint.py record before.json   # on the old code
    PYTHONPATH=. python benchmarks/behaviour_fingerprint.py record after.json    # on the new code
    python benchmarks/behaviour_fingerprint.py compare before.json after.json     # exit 1 if any differ

``record`` trains every engine on a grid of small configurations (3 presets x 4 models x every
engine, every activation on the fused, eager and autograd engines, the official loss, load
balancing; 40 steps, n = 600, seeds 0-1, one thread) and writes, per configuration, a sha256 of
every history, snapshot, summary and parameter array, or the error it raised (a refusal is
behaviour too). Equal fingerprints mean bit-identical numbers; they depend on the machine (the
fused kernel is built with ``-march=native``) and the torch version, so compare two records made
on the same machine. Issue 15's refactor was checked this way (ARCHITECTURE.md, "Refactoring").
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

PRESETS = ("official-s1-quick", "paper-s1-quick", "official-s2-quick")
MODELS = ("moe-nonlinear", "moe-linear", "single-nonlinear", "single-linear")
SMALL = dict(n_steps=40, n_steps_single=40, n_train=600, n_test=600)


def cases() -> list[tuple[str, str, str, dict]]:
    """(preset, model, engine, overrides) of every configuration fingerprinted."""
    from moesim.config import ACTIVATIONS, ENGINES

    out = [(p, m, e, {}) for p in PRESETS for m in MODELS for e in ENGINES]
    out.append(("paper-s1-quick", "moe-nonlinear", "autograd", {"load_balancing": 0.1}))
    out += [("paper-s1-quick", "moe-nonlinear", e, {"activation": act})
            for act in ACTIVATIONS if act not in ("linear", "cubic") for e in ("fused", "eager", "autograd")]
    out += [("paper-s1-quick", "moe-nonlinear", e, {"loss": "double_softmax_ce"}) for e in ("fused", "eager", "autograd")]
    return out


def _hash(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    return f"{hashlib.sha256(a.tobytes()).hexdigest()[:16]}:{a.dtype}:{a.shape}"


def fingerprint(result) -> dict[str, str]:
    """Hashes of every array of a ``RunResult`` (history, snapshots, summary, parameters)."""
    out = {f"{group}.{k}": _hash(v) for group in ("history", "snapshots", "summary")
           for k, v in sorted(getattr(result, group).items())}
    for name in ("W", "b", "theta"):
        t = getattr(result.params, name, None)
        if t is not None:
            out[f"params.{name}"] = _hash(t.detach().cpu().numpy())
    out["engine"] = result.info.get("engine")
    return out


def record(path: str, selected: list[tuple[str, str, str, dict]] | None = None) -> dict:
    import torch

    from moesim.config import preset
    from moesim.training import train

    torch.set_num_threads(1)
    results = {}
    for name, model, engine, overrides in cases() if selected is None else selected:
        key = f"{name}|{model}|{engine}|{json.dumps(overrides, sort_keys=True)}"
        try:
            cfg = preset(name, model, **SMALL, **overrides)
            res = train(cfg, [0] if engine == "official-ops" else [0, 1], engine=engine)
            results[key] = fingerprint(res)
        except Exception as err:  # noqa: BLE001 -- a refusal or crash is recorded as behaviour
            results[key] = {"error": f"{type(err).__name__}: {err}"}
        print(key, "error" if "error" in results[key] else "ok", file=sys.stderr, flush=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    return results


def compare(before: dict, after: dict) -> list[str]:
    """The configurations whose fingerprints differ (or that only one record has)."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "record":
        record(argv[1])
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        with open(argv[1]) as a, open(argv[2]) as b:
            before, after = json.load(a), json.load(b)
        differ = compare(before, after)
        for key in differ:
            print(f"differs: {key}\n  before: {before.get(key)}\n  after:  {after.get(key)}")
        print(f"{len(before) - len([k for k in differ if k in before])}/{len(before)} configurations identical")
        return 1 if differ else 0
    print(__doc__)
    return 0 if argv[:1] in (["-h"], ["--help"]) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
