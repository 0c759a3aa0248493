"""Router noise r of Algorithm 1 (Section 3's noisy top-1 routing), one ``torch.Generator`` stream per run.

``SeedNoise`` is ``train``'s default noise source: each run's noise from its own seed's streams,
so a run gives the same numbers alone or batched with others. ``moesim.replay`` supplies another
source (one stream shared by consecutive runs, as the official notebooks draw it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from .config import Config
from .model import generator


class NoiseStream:
    """Router noise r of each run: fresh U[0,1] each step, one fixed draw, or a 1e-5 tie-break.

    With ``prefetch`` (CPU, fresh noise), each draw is written into one of two reused buffers, and
    the next step's draw is filled on a background thread while the current step computes (the
    generators are used in the same order, so the numbers are those of ``torch.rand``); a draw is
    valid until the next one. ``close()`` waits for a pending fill.
    """

    def __init__(self, cfg: Config, seeds: list[int], n: int, M: int, device, dtype, stream: str,
                 prefetch: bool = False):
        self.cfg, self.n, self.M, self.dtype = cfg, n, M, dtype
        self.gens = [generator(s, stream, device) for s in seeds]
        self.device = device
        self.fixed = None
        if cfg.router_noise == "fixed":
            self.fixed = self._fresh()
        elif cfg.router_noise == "none":
            self.fixed = torch.stack([torch.randn(n, M, generator=g, device=device, dtype=dtype)
                                      for g in self.gens]) * 1e-5
        self.pool = self.pending = None
        if prefetch and self.fixed is None and torch.device(device).type == "cpu":
            self.buffers = [torch.empty(len(seeds), n, M, device=device, dtype=dtype) for _ in range(2)]
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moesim-noise")

    def _uniform(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """U[0,1] for each run into ``out`` (default: a new tensor): what torch.rand(n, M,
        generator=g) draws for each run's generator g."""
        out = torch.empty(len(self.gens), self.n, self.M, device=self.device, dtype=self.dtype) if out is None else out
        for row, g in zip(out, self.gens):
            row.uniform_(generator=g)
        return out

    def _fresh(self, out: torch.Tensor | None = None) -> torch.Tensor:
        r = self._uniform(out)
        return r.mul_(self.cfg.noise_scale) if self.cfg.noise_scale != 1 else r

    def draw(self) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed
        if self.pool is None:
            return self._fresh()
        cur = self.pending.result() if self.pending is not None else self._fresh(self.buffers[0])
        nxt = self.buffers[1] if cur is self.buffers[0] else self.buffers[0]
        self.pending = self.pool.submit(self._fresh, nxt)
        return cur

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = self.pending = None


class SeedNoise:
    """The default noise source of ``train``: every run's router noise from its own seed's streams.

    A noise source supplies the router noise r of Algorithm 1 (Section 3's noisy top-1 routing):
    ``draw()`` for each training forward pass, in order, and ``eval(split)`` for an evaluation
    forward pass (``"snapshot"``, then ``"test"`` and ``"train"`` for the final summary; ``None``
    when the config evaluates without noise). ``moesim.replay`` supplies another one (one stream
    shared by consecutive runs, as the official notebooks draw it).
    """

    def __init__(self, cfg: Config, seeds: list[int], n: int, n_test: int, device, dtype):
        M = cfg.experts
        self.cfg, self.seeds, self.n, self.dtype = cfg, seeds, n, dtype
        self.train = NoiseStream(cfg, seeds, n, M, device, dtype, "router-noise", prefetch=True)
        self.test = None
        if cfg.test_noise:
            # the entropy notebooks add their one fixed noise matrix to the test rows too (row by row)
            same_rows = cfg.router_noise == "fixed" and n_test == n
            self.test = self.train if same_rows else NoiseStream(cfg, seeds, n_test, M, device, dtype, "eval-noise")

    def draw(self) -> torch.Tensor:
        return self.train.draw()

    def eval(self, split: str) -> torch.Tensor | None:
        if self.test is None:
            return None
        if split != "train":
            return self.test.draw()
        dev = self.cfg.device
        g = [generator(s, "eval-noise-train", dev) for s in self.seeds]
        return torch.stack([torch.rand(self.n, self.cfg.experts, generator=gi, device=dev, dtype=self.dtype)
                            for gi in g]) * self.cfg.noise_scale

    def close(self) -> None:
        self.train.close()
