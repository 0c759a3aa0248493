"""The engine interface: how one training step, its update and the evaluation forward passes are computed.

An engine computes Algorithm 1's loss and gradients for S runs at once (``moe_step`` for the MoE,
``single_step`` for the single CNNs), applies the update (``update``: normalized GD for the experts,
GD for the router, or the single models' optimizer; ``moesim.optim``), and runs the trained layer
forward for evaluation (``routed_outputs``, ``expert_outputs``, ``evaluate``). ``unavailable``
says why it cannot run a config (None: it can); ``refusal`` is the error ``train`` raises then.
This base class holds the torch reference of the forward passes (``moesim.model``) and the
standard update, so an engine overrides only what it computes differently.

``Workspace`` is an engine's scratch pool, reused from step to step; ``StepOutput`` what a step returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Config
from ..model import Params, expert_outputs_dense, expert_outputs_routed, route


@dataclass
class StepOutput:
    """What an engine's step returns, for S runs."""

    loss: torch.Tensor  # (S,) mean loss of each run
    margin: torch.Tensor  # (S, n) y * gate * f
    expert: torch.Tensor  # (S, n) routed expert
    grads: list[torch.Tensor]  # gradients, in the order of Params.tensors()


class Workspace:
    """Named buffers reused from step to step (a fresh large buffer costs page faults every step):
    the routed kernels' gathered sample rows (``"rows"``; padding rows hold a copy of sample 0,
    never read, with gradient weight exactly zero) and the fused kernel's per-chunk gradient sums.
    Only internal buffers live here: what a step returns is always newly allocated.
    """

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, like: torch.Tensor) -> torch.Tensor:
        shape = tuple(shape)
        t = self.buffers.get(name)
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            t = self.buffers[name] = like.new_zeros(shape)
        return t


class Engine:
    """One way of computing a training step (see the module docstring); subclasses set ``name``.

    Attributes:
        name: the ``engine=`` value that selects it (``moesim.config.ENGINES``).
        load_balancing: what ``moesim.engines.resolve`` does when ``cfg.load_balancing > 0``:
            ``"native"`` (this engine trains the auxiliary loss), ``"refuse"`` (an error) or
            ``"autograd"`` (the autograd engine trains the run instead).
        refusal_format: the error where it is unavailable (``refusal``).
    """

    name: str = ""
    load_balancing: str = "refuse"
    refusal_format: str = "engine={name!r} cannot run here: {reason}"

    # --- availability ----------------------------------------------------------------------
    def unavailable(self, cfg: Config, x: torch.Tensor) -> str | None:
        """Why this engine cannot run ``cfg`` on samples ``x`` (device, dtype), or None if it can."""
        return None

    def refusal(self, reason: str) -> str:
        """The message of the ``ValueError`` that ``engine=<name>`` raises where it is unavailable
        (``refusal_format`` with ``name`` and ``reason``)."""
        return self.refusal_format.format(name=self.name, reason=reason)

    def step_bytes_per_sample(self, cfg: Config) -> int:
        """Values a step holds per (run, sample) for the expert activations (``moesim.memory``)."""
        P, d, J = cfg.n_patches, cfg.patch_dim, cfg.filters
        return 2 * P * (d + 3 * J)

    # --- one training step ------------------------------------------------------------------
    def workspace(self) -> Workspace:
        """A fresh scratch pool for this engine's steps (``train`` makes one per call, reused every step)."""
        return Workspace()

    def moe_step(self, cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
                 noise: torch.Tensor, a: torch.Tensor, workspace: Workspace | None = None) -> StepOutput:
        """Loss of Algorithm 1 and its gradients for S runs: x (n, P, d), x_sum (n, d), y (n,) +-1,
        noise (S, n, M) the router noise r, a (J,) the second layer."""
        raise NotImplementedError(f"engine {self.name!r} has no MoE step")

    def single_step(self, cfg: Config, params: Params, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                    workspace: Workspace | None = None) -> StepOutput:
        """Logistic loss of S single CNNs (``params`` with M = 1) and its gradients."""
        raise NotImplementedError(f"engine {self.name!r} has no single-model step")

    def step(self, cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
             noise: torch.Tensor | None, a: torch.Tensor, workspace: Workspace | None = None) -> StepOutput:
        """``moe_step`` or ``single_step``, by ``cfg.architecture``."""
        if cfg.architecture == "moe":
            return self.moe_step(cfg, params, x, x_sum, y, noise, a, workspace)
        return self.single_step(cfg, params, x, y, a, workspace)

    @torch.no_grad()
    def update(self, cfg: Config, params: Params, grads: list[torch.Tensor], active: torch.Tensor,
               adam=None) -> None:
        """Apply one step's ``grads`` to ``params`` in place, for the ``active`` runs only."""
        from ..optim import apply_update

        apply_update(cfg, params, grads, active, adam)

    # --- evaluation forward passes ----------------------------------------------------------
    def routed_outputs(self, cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor,
                       noise: torch.Tensor | None, a: torch.Tensor):
        """The MoE layer's forward pass: (f of the routed expert, gate, expert), each (S, n);
        routing by the clean logits plus ``noise`` (or none). Torch reference (``moesim.model``)."""
        r = route(cfg, params, x_sum, noise)
        return expert_outputs_routed(cfg, params, x, a, r.expert), r.gate, r.expert

    def expert_outputs(self, cfg: Config, params: Params, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """f_m(x_i) for every run, expert and sample: (S, M, n) (``moesim.model.expert_outputs_dense``)."""
        return expert_outputs_dense(cfg, params, x, a)

    def chunk_rows(self, cfg: Config, x: torch.Tensor, values_per_row: int, chunk_elements: int) -> int:
        """Samples per evaluation chunk: the largest temporary stays near ``chunk_elements`` values."""
        return max(1, chunk_elements // values_per_row)

    @torch.no_grad()
    def evaluate(self, cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
                 noise: torch.Tensor | None, a: torch.Tensor, chunk_elements: int = 2**23):
        """Predictions of the trained layer: (correct (S, n) bool, routed expert (S, n)), in chunks of
        samples whose largest temporary (S x samples x P x max(d, J) values) stays near ``chunk_elements``."""
        S, _, J, d = params.W.shape
        n, P, _ = x.shape
        step = self.chunk_rows(cfg, x, S * P * max(d, J), chunk_elements)
        parts = []
        for i in range(0, n, step):
            xc, yc = x[i:i + step], y[i:i + step]
            if cfg.architecture == "single":
                f = self.expert_outputs(cfg, params, xc, a)[:, 0]
                parts.append((yc * f > 0, torch.zeros(S, xc.shape[0], dtype=torch.long, device=x.device)))
            else:
                f, gate, expert = self.routed_outputs(cfg, params, xc, x_sum[i:i + step],
                                                      None if noise is None else noise[:, i:i + step], a)
                parts.append((yc * gate * f > 0, expert))
        if not parts:
            return (torch.zeros(S, 0, dtype=torch.bool, device=x.device),
                    torch.zeros(S, 0, dtype=torch.long, device=x.device))
        return torch.cat([c for c, _ in parts], 1), torch.cat([e for _, e in parts], 1)
