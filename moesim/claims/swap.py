"""The swap construction behind Theorem 4.1 (the proof of Theorem 4.1), from a dataset's latent variables.

Take a sample's latent tuple: cluster k, feature-noise cluster k' != k, magnitudes alpha, beta,
gamma and Gaussian patches xi. Its four points, with labels, are (patch order: the ``+-alpha v_k``
patch, the center, the xi patches, the ``+-gamma v_k'`` patch):

    x (y=+1, eps=-1), label +1:  [+alpha v_k, beta c_k,  xi, -gamma v_k']
    x'(y=+1, eps=-1), label -1:  [+alpha v_k, beta c_k', xi, -gamma v_k']
    x (y=-1, eps=+1), label -1:  [-alpha v_k, beta c_k,  xi, +gamma v_k']
    x'(y=-1, eps=+1), label +1:  [-alpha v_k, beta c_k', xi, +gamma v_k']

``x'`` is the swap partner of ``x``: the cluster-k' sample whose signal patch is eps*gamma*v_k'
(label eps) and whose feature noise is y*alpha*v_k. When D_alpha = D_gamma all four are equally
likely under Definition 3.1. Each pair differs only in its center patch, so for any
F(x) = sum_p f(x^(p)) the first pair needs f(beta c_k) > f(beta c_k') and the second pair the
reverse: at least one of the four points has y F(x) <= 0. Points with y != eps carry probability
1/2, hence Pr[y F(x) <= 0] >= 1/2 * 1/4 = 1/8.

The shared patches sit at the same positions in all four points and everything is evaluated in
float64, so rounding could only let a quadruple escape if F(x) and F(x') were both within rounding
error (~1e-15 relative) of zero; in exact arithmetic the certificate has no slack at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import Dataset

#: Labels of the four points of a quadruple, in the order above.
QUADRUPLE_LABELS = (1, -1, -1, 1)


@dataclass
class Quadruples:
    """Q quadruples of swap partners: points (Q, 4, P, d) and labels (Q, 4) in {-1, +1}."""

    x: torch.Tensor
    y: torch.Tensor
    cluster: torch.Tensor  # (Q, 4) cluster of each point (k, k', k, k')
    noise_cluster: torch.Tensor  # (Q, 4) feature-noise cluster of each point (k', k, k', k)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Points (4Q, P, d) and labels (4Q,) with quadruple q at rows 4q .. 4q+3."""
        Q, _, P, d = self.x.shape
        return self.x.reshape(4 * Q, P, d), self.y.reshape(4 * Q)


def gaussian_patches(data: Dataset) -> torch.Tensor:
    """The P - 3 Gaussian patches xi of each sample (n, P - 3, d), in their original order."""
    n, P, _ = data.x.shape
    pos = torch.arange(P)[None, :].expand(n, P)
    special = ((pos == data.signal_patch[:, None]) | (pos == data.center_patch[:, None])
               | (pos == data.noise_patch[:, None]))
    return data.x[~special].view(n, P - 3, -1)


def swap_quadruples(data: Dataset, dtype: torch.dtype = torch.float64) -> Quadruples:
    """One quadruple per sample of ``data``, from its latents (k, k', alpha, beta, gamma, xi).

    The labels y and eps of the sample are not used: each quadruple contains both sign patterns.
    """
    s = data.scale
    V = data.features.to(dtype) * s
    C = data.centers.to(dtype) * s
    k, k2 = data.cluster, data.noise_cluster
    u = data.alpha.to(dtype)[:, None] * V[k]  # alpha v_k
    w = data.gamma.to(dtype)[:, None] * V[k2]  # gamma v_k'
    c_own = data.beta.to(dtype)[:, None] * C[k]
    c_swap = data.beta.to(dtype)[:, None] * C[k2]
    xi = gaussian_patches(data).to(dtype)

    def point(sign_u, center, sign_w):
        return torch.cat([(sign_u * u)[:, None], center[:, None], xi, (sign_w * w)[:, None]], dim=1)

    x = torch.stack([point(1, c_own, -1), point(1, c_swap, -1), point(-1, c_own, 1), point(-1, c_swap, 1)], dim=1)
    Q = x.shape[0]
    y = torch.tensor(QUADRUPLE_LABELS, dtype=torch.long).expand(Q, 4).clone()
    cluster = torch.stack([k, k2, k, k2], dim=1)
    noise_cluster = torch.stack([k2, k, k2, k], dim=1)
    return Quadruples(x, y, cluster, noise_cluster)


def quadruple_has_error(correct: torch.Tensor) -> torch.Tensor:
    """``correct`` (..., 4Q) bool, ordered as ``Quadruples.flat`` -> (..., Q): some point wrong."""
    return ~correct.reshape(*correct.shape[:-1], -1, 4).all(-1)


def sum_form_correct(f, quads: Quadruples) -> torch.Tensor:
    """y F(x) > 0 for F(x) = sum_p f(x^(p)), on every point of ``quads``: (4Q,) bool.

    ``f`` maps patches (m, d) to values (m,). Ties (F = 0) count as errors.
    """
    x, y = quads.flat()
    n, P, d = x.shape
    F = f(x.reshape(n * P, d)).reshape(n, P).sum(1)
    return y * F > 0


# --- random per-patch networks --------------------------------------------------------------

PATCH_ACTIVATIONS = {
    "relu": torch.relu, "tanh": torch.tanh, "cubic": lambda z: z**3, "square": lambda z: z**2,
    "sin": torch.sin, "abs": torch.abs, "step": lambda z: (z > 0).to(z.dtype), "softplus": torch.nn.functional.softplus,
}


def random_patch_network(seed: int, dim: int, width: int = 16, depth: int = 1, activation: str = "tanh",
                         weight_scale: float = 0.3, dtype: torch.dtype = torch.float64):
    """A random MLP f: R^dim -> R (``depth`` hidden layers of ``width``, bias everywhere).

    Weights are N(0, weight_scale^2 / fan_in) from ``torch.Generator().manual_seed(seed)``.
    Returns ``f(patches (m, dim)) -> (m,)``.
    """
    if activation not in PATCH_ACTIVATIONS:
        raise ValueError(f"activation={activation!r}: choose one of {', '.join(PATCH_ACTIVATIONS)}")
    g = torch.Generator().manual_seed(seed)
    sizes = [dim] + [width] * depth + [1]
    layers = [(torch.randn(a, b, generator=g, dtype=dtype) * weight_scale / a**0.5,
               torch.randn(b, generator=g, dtype=dtype) * weight_scale) for a, b in zip(sizes[:-1], sizes[1:])]
    act = PATCH_ACTIVATIONS[activation]

    def f(z: torch.Tensor) -> torch.Tensor:
        z = z.to(dtype)
        for i, (W, b) in enumerate(layers):
            z = z @ W + b
            if i < len(layers) - 1:
                z = act(z)
        return z[:, 0]

    return f
