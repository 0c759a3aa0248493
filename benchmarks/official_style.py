"""A training step written the way the official code (uclaml/MoE, synthetic notebooks) computes it.

Used only by the benchmark as the baseline measured in the same run: every expert is a
``Conv1d(1, 2J', kernel=d, stride=d)`` module with bias, the router a ``Conv1d(1, M, d, d)``
without bias; the forward pass loops over experts in Python and runs each one on a masked copy of
the whole batch (non-routed rows zeroed), the gate is the raw noisy logit, the loss is
``CrossEntropyLoss`` on ``softmax`` outputs, the experts take a normalized-GD step (gradient over
``||g_W|| + ||g_b||``) and the router an SGD step. This is our re-statement of that computation
pattern for timing, not the official code itself.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvExpert(nn.Module):
    def __init__(self, d: int, half_filters: int, patches: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 2 * half_filters, kernel_size=d, stride=d)
        self.half = half_filters
        with torch.no_grad():
            self.conv.weight.mul_(0.001)
            self.conv.bias.mul_(0.001)

    def forward(self, x):  # x (B, 1, P*d)
        z = self.conv(x) ** 3  # (B, 2J', P)
        z = z.sum(2)
        return torch.stack([z[:, : self.half].sum(1), z[:, self.half:].sum(1)], 1)


class OfficialStyleMoE(nn.Module):
    def __init__(self, d: int = 50, patches: int = 4, experts: int = 8, half_filters: int = 8):
        super().__init__()
        self.router = nn.Conv1d(1, experts, kernel_size=d, stride=d, bias=False)
        nn.init.zeros_(self.router.weight)
        self.experts = nn.ModuleList(ConvExpert(d, half_filters, patches) for _ in range(experts))

    def forward(self, x, noise):
        select = self.router(x).sum(2) + noise  # (B, M)
        gate, index = select.topk(1, dim=1)
        out = torch.zeros(x.shape[0], 2, dtype=x.dtype)
        for m, expert in enumerate(self.experts):  # the official code's loop over experts
            mask = (index[:, 0] == m).to(x.dtype)
            out = out + expert(x * mask[:, None, None]) * mask[:, None]
        return F.softmax(gate * out, dim=1), index[:, 0]


def official_style_step(model: OfficialStyleMoE, x, labels, noise, lr_expert=1e-3, lr_router=0.1):
    """One full-batch step of the official pattern (forward, loss, backward, both updates)."""
    probs, _ = model(x, noise)
    loss = F.cross_entropy(probs, labels)
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for expert in model.experts:
            gw, gb = expert.conv.weight.grad, expert.conv.bias.grad
            norm = gw.norm() + gb.norm()
            if norm > 0:
                expert.conv.weight.sub_(lr_expert * gw / norm)
                expert.conv.bias.sub_(lr_expert * gb / norm)
        model.router.weight.sub_(lr_router * model.router.weight.grad)
    return loss.detach()
