"""The ``autograd`` engine: the loss of Algorithm 1 from the model's forward pass, gradients by ``torch.autograd``.

The reference the other engines are tested against, and the only engine that trains the
load-balancing loss (``cfg.load_balancing > 0``).
"""

from __future__ import annotations

import torch

from ..config import Config
from ..model import Params, expert_outputs_dense, expert_outputs_routed, load_balancing_loss, route
from ..nonlinearities import loss_from_margin, loss_of
from .base import Engine, StepOutput, Workspace


def forward_train(cfg: Config, params: Params, x: torch.Tensor, x_sum: torch.Tensor, y: torch.Tensor,
                  noise: torch.Tensor | None, a: torch.Tensor, workspace: Workspace | None = None):
    """Loss of Algorithm 1 at the current parameters: (loss per run (S,), margins (S, n), expert (S, n))."""
    if cfg.architecture == "single":
        f = expert_outputs_dense(cfg, params, x, a)[:, 0]
        margin = y * f
        expert = torch.zeros_like(margin, dtype=torch.long)
        return loss_of(cfg, single=True).value(margin).mean(1), margin, expert
    h, _, expert, gate, _ = route(cfg, params, x_sum, noise)
    f = expert_outputs_routed(cfg, params, x, a, expert, workspace=workspace)
    margin = y * gate * f
    loss = loss_from_margin(cfg, margin).mean(1)
    if cfg.load_balancing > 0:
        loss = loss + cfg.load_balancing * load_balancing_loss(h, expert, cfg.n_experts)
    return loss, margin, expert


class AutogradEngine(Engine):
    """``forward_train`` differentiated by autograd: any config, the slowest."""

    name = "autograd"
    load_balancing = "native"

    def step(self, cfg, params, x, x_sum, y, noise, a, workspace=None) -> StepOutput:
        # fresh leaves on the parameters' storage: autograd's graph never holds the parameters
        leaves = [t.detach().requires_grad_() for t in params.tensors()]
        p = Params(leaves[0], leaves[1] if params.b is not None else None, leaves[-1])
        with torch.enable_grad():
            loss, margin, expert = forward_train(cfg, p, x, x_sum, y, noise, a, workspace)
            grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
        # a tensor outside the graph (the router of a single model; the router under gate='unit')
        # has gradient zero, as the eager step gives it
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]
        return StepOutput(loss.detach(), margin.detach(), expert, grads)

    def moe_step(self, cfg, params, x, x_sum, y, noise, a, workspace=None) -> StepOutput:
        return self.step(cfg, params, x, x_sum, y, noise, a, workspace)

    def single_step(self, cfg, params, x, y, a, workspace=None) -> StepOutput:
        return self.step(cfg, params, x, None, y, None, a, workspace)


ENGINE = AutogradEngine()
