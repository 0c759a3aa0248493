"""Memory estimate of a training run, checked before anything is allocated.

``estimate(cfg, n_seeds, engine)`` adds up, in bytes, what ``moesim.train`` holds at its peak:

* ``runtime``: the Python, torch and moesim process itself (measured, see
  ``benchmarks/results/calibration/memory.md``);
* ``data_generation``: generating the n + n_test samples of Definition 3.1 (float64: the
  Gaussian patches, the stacked patches, their permutation and scaling, about four
  (n + n_test) x P x d arrays at once; freed before training);
* ``data``: the samples on the device in ``cfg.dtype`` with their patch sums;
* ``step``: one training step of S runs: router noise (two prefetch buffers and the evaluation
  noise, S x n x M each), margins and routing (a few S x n arrays), and the expert activations
  (each engine's ``step_bytes_per_sample``): the fused kernel keeps none, the eager step about
  two S x n x P x J arrays (pre-activations and their derivative), autograd (and any other
  engine) the routed patches and three activations per filter (2 S x n x P x (d + 3 J)); J is
  ``single_filters`` for a single model;
* ``history``: the per-step loss, accuracy and dispatch counts (T x S x K x M integers) and their
  copies in the result.

``check(cfg, n_seeds, engine)`` raises ``MemoryCheckError`` (a ``ConfigError``) naming the
parameters that make the estimate large when it exceeds the available memory
(``MemAvailable`` of ``/proc/meminfo`` on the CPU, ``torch.cuda.mem_get_info`` on a GPU).
"""

from __future__ import annotations

import os

from . import engines
from .config import Config, ConfigError

#: Resident memory of a process that imported torch and moesim and trained a tiny run, bytes
#: (measured; see ``benchmarks/results/calibration/memory.md``).
RUNTIME_BYTES = 250 * 2**20


class MemoryCheckError(ConfigError):
    """A run needs more memory than is available; the message names the parameters and numbers."""


def estimate(cfg: Config, n_seeds: int, engine: str = "auto", generate: bool = True) -> dict[str, int]:
    """Bytes of ``moesim.train(cfg, n_seeds seeds, engine=engine)`` by part (see the module doc).

    The parts do not all live at once: ``total`` adds them as the run does (generation first,
    then the samples on the device and the steps). ``generate=False``: the data are given.
    """
    b = 4 if cfg.dtype == "float32" else 8
    S, n, nt = int(n_seeds), cfg.n_train, cfg.n_test
    P, d, K, M, T = cfg.n_patches, cfg.patch_dim, cfg.n_clusters, cfg.experts, cfg.steps
    N = n + nt
    try:  # the engine train() will pick, by the registry's own rule
        eng = engines.resolve(cfg, engine, _probe(cfg))
    except ValueError:  # a named engine that cannot run this config: train() raises its refusal next;
        # estimated as that engine, or as autograd, which the load-balancing refusal names
        eng = engines.get("autograd" if cfg.load_balancing > 0 else engine)
    per_sample = eng.step_bytes_per_sample(cfg)
    return dict(
        runtime=RUNTIME_BYTES,
        data_generation=4 * N * P * d * 8 if generate else 0,
        data=N * (P + 1) * d * b,
        step=S * n * (3 * M + 8 + per_sample) * b,
        history=3 * T * S * (K * M * 8 + 2 * b),
    )


def _probe(cfg: Config):
    """An empty tensor with the run's device and dtype: what engine availability reads of the samples
    (on the ``meta`` device where ``cfg.device`` is not present here: only the CPU engines notice)."""
    import torch

    dtype = torch.float32 if cfg.dtype == "float32" else torch.float64
    try:
        return torch.empty(0, dtype=dtype, device=cfg.device)
    except (RuntimeError, AssertionError):
        return torch.empty(0, dtype=dtype, device="meta")


def total(parts: dict[str, int]) -> int:
    """Peak bytes: the runtime, then the larger of data generation and training, plus the history."""
    return (parts["runtime"] + max(parts["data_generation"], parts["data"] + parts["step"])
            + parts["history"])


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can use now on ``device`` (None where it cannot be told)."""
    if device.startswith("cuda"):
        try:
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
            return int(free)
        except Exception:  # noqa: BLE001 -- no GPU: check_device reports that
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(v: int) -> str:
    return f"{v / 2**30:.2f} GiB"


def check(cfg: Config, n_seeds: int, engine: str = "auto", available: int | None = None,
          option: str = "--no-memory-check", generate: bool = True) -> int:
    """Raise ``MemoryCheckError`` when ``estimate`` exceeds the available memory; return the estimate.

    ``option`` names the override in the message (``check_memory=False`` for the Python API).
    """
    parts = estimate(cfg, n_seeds, engine, generate)
    need = total(parts)
    avail = available_bytes(cfg.device) if available is None else available
    if avail is None or need <= avail:
        return need
    big = max(("data_generation", "data", "step", "history"), key=parts.get)
    sizes = "n_train, n_test, n_patches, patch_dim"
    culprits = {"data_generation": sizes, "data": sizes,
                "step": "seeds, n_train, n_experts, n_filters/single_filters, n_patches, patch_dim (and the engine)",
                "history": "seeds, n_steps/n_steps_single, n_clusters, n_experts"}[big]
    raise MemoryCheckError(
        f"the run needs about {_gib(need)} but {_gib(avail)} is available on {cfg.device}; the largest part is "
        f"{big} ({_gib(parts[big])}), set by {culprits} (n_train={cfg.n_train}, n_test={cfg.n_test}, "
        f"seeds={n_seeds}); reduce them, or give {option} to try anyway")
