"""The tables of the expert activations sigma (with sigma') and of the losses l (with l'), one entry each.

Every engine reads these tables: the model's forward pass (``moesim.model.activation_fn``,
``loss_from_margin``: autograd differentiates them), the eager step's closed-form gradients
(``sigma_and_derivative``, ``loss_and_derivative``) and the fused C kernel, which covers the
monomials sigma(z) = z^q only (``degree``; any other entry is reported unavailable there).

Adding an activation is one entry of ``ACTIVATIONS`` (sigma and ``(sigma, sigma')``) plus its test:
``moesim.config`` takes the allowed names from these tables, the engines that cannot compute an entry
(fused: monomials only) report it unavailable, and ``engine="auto"`` then trains with the eager step
(``tests/test_engines.py::test_a_new_activation_is_one_table_entry``). A loss is one entry of
``LOSSES`` in the same way (the fused kernel runs only the losses named in its ``C_NAMES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class Activation:
    """sigma of the expert (Section 3, ``f_m(x) = sum_j a_j sum_p sigma(<w_mj, x^(p)> + b_mj)``).

    A monomial sigma(z) = z^q has ``degree`` (q from the config: ``power`` reads ``cfg.power``);
    its sigma and sigma' follow from q (``monomial``). Any other activation gives ``sigma`` and
    ``with_derivative(z) -> (sigma(z), sigma'(z))``.
    """

    sigma: Callable[[Tensor], Tensor] | None = None
    with_derivative: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
    degree: Callable[[object], int] | None = None


def _tanh(z: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(z)
    return t, 1 - t * t


def _gelu(z: Tensor) -> tuple[Tensor, Tensor]:
    cdf = 0.5 * (1 + torch.erf(z * 0.5**0.5))
    pdf = torch.exp(-0.5 * z * z) * (2 * torch.pi) ** -0.5
    return z * cdf, cdf + z * pdf


def _celu(z: Tensor) -> tuple[Tensor, Tensor]:
    return F.celu(z), torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0)))


#: The activations, in the order of ``moesim.config.ACTIVATIONS``.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(degree=lambda cfg: 1),
    "cubic": Activation(degree=lambda cfg: 3),
    "power": Activation(degree=lambda cfg: cfg.power),
    "relu": Activation(torch.relu, lambda z: (torch.relu(z), (z > 0).to(z.dtype))),
    "tanh": Activation(torch.tanh, _tanh),
    "gelu": Activation(F.gelu, _gelu),
    "celu": Activation(F.celu, _celu),
}


def _entry(cfg) -> Activation:
    try:
        return ACTIVATIONS[cfg.activation]
    except KeyError:
        raise ValueError(f"activation={cfg.activation!r} has no derivative here") from None


def degree(cfg) -> int | None:
    """q when sigma(z) = z^q for ``cfg`` (linear: 1, cubic: 3, power: ``cfg.power``), else None."""
    entry = _entry(cfg)
    return None if entry.degree is None else entry.degree(cfg)


def monomials() -> list[str]:
    """The names of the monomial activations (what the fused kernel covers)."""
    return [name for name, entry in ACTIVATIONS.items() if entry.degree is not None]


def is_linear(cfg) -> bool:
    """sigma is the identity (z^1): the expert collapses to one inner product with sum_p x^(p)."""
    return degree(cfg) == 1


def activation_fn(cfg) -> Callable[[Tensor], Tensor]:
    """sigma of ``cfg`` (Section 3): linear, cubic, z**q, relu, tanh, gelu, celu."""
    q = degree(cfg)
    if q == 1:
        return lambda z: z
    if q == 3:
        return lambda z: z * z * z
    if q is not None:
        return lambda z: z**q
    return _entry(cfg).sigma


def sigma_and_derivative(cfg, z: Tensor) -> tuple[Tensor, Tensor, float]:
    """sigma(z), and sigma'(z) as ``ds * scale``: for sigma(z) = z^q, ``ds = z^(q-1)`` and
    ``scale = q`` (a caller can fold q into a smaller factor); otherwise ``scale = 1``."""
    q = degree(cfg)
    if q == 1:
        return z, torch.ones_like(z), 1.0
    if q is not None:
        zq1 = z * z if q == 3 else z ** (q - 1)
        return zq1 * z, zq1, float(q)
    s, ds = _entry(cfg).with_derivative(z)
    return s, ds, 1.0


@dataclass(frozen=True)
class Loss:
    """A per-sample loss l of the margin y * gate * f, and ``with_derivative(m) -> (l(m), l'(m))``."""

    value: Callable[[Tensor], Tensor]
    with_derivative: Callable[[Tensor], tuple[Tensor, Tensor]]


def _double_softmax(margin: Tensor) -> tuple[Tensor, Tensor]:
    t = torch.tanh(margin / 2)
    return F.softplus(-t), -torch.sigmoid(-t) * (1 - t * t) / 2


#: The losses, in the order of ``moesim.config.LOSSES``. ``logistic``: log(1 + exp(-margin))
#: (paper). ``double_softmax_ce``: the official code applies CrossEntropyLoss to softmax
#: probabilities of the two logits, which equals log(1 + exp(-tanh(margin / 2))) and is bounded
#: below by log(1 + 1/e) = 0.3133.
LOSSES: dict[str, Loss] = {
    "logistic": Loss(lambda m: F.softplus(-m), lambda m: (F.softplus(-m), -torch.sigmoid(-m))),
    "double_softmax_ce": Loss(lambda m: F.softplus(-torch.tanh(m / 2)), _double_softmax),
}

#: The single models' loss (cross-entropy on two logits, the logistic loss of the margin).
SINGLE_LOSS = "logistic"


def loss_of(cfg, single: bool = False) -> Loss:
    """The loss of ``cfg``: the single models always use ``SINGLE_LOSS``."""
    return LOSSES[SINGLE_LOSS if single else cfg.loss]


def loss_from_margin(cfg, margin: Tensor) -> Tensor:
    """Per-sample loss of the MoE as a function of the margin y * gate * f (see ``LOSSES``)."""
    return loss_of(cfg).value(margin)


def loss_and_derivative(cfg, margin: Tensor, single: bool) -> tuple[Tensor, Tensor]:
    """l(margin) and l'(margin): logistic (paper, and the single models' CE on two logits) or the
    official MoE's double softmax, l = softplus(-tanh(margin/2))."""
    return loss_of(cfg, single).with_derivative(margin)
