"""The official code's early-stopping rules (book/official_code.md, 'The official early-stopping rule')."""

from __future__ import annotations

import torch

from .config import Config

#: The official code's MoE early stopping: tolerance and loss floor.
EARLY_STOP_TOLERANCE = 0.02
EARLY_STOP_FLOOR = 0.314
#: Official single models: the tolerance rule applies only after this epoch.
SINGLE_STOP_AFTER = 500


def stop_rule(cfg: Config, step: int, loss: torch.Tensor, best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official early-stopping rules; returns (stop now, new running minimum)."""
    if cfg.architecture == "moe":
        improved = loss <= best
        stop = ~improved & ((loss > best + EARLY_STOP_TOLERANCE) | (loss <= EARLY_STOP_FLOOR))
    else:
        improved = loss < best
        stop = ~improved & (loss > best + EARLY_STOP_TOLERANCE) & (step > SINGLE_STOP_AFTER)
    return stop, torch.where(improved, loss, best)
