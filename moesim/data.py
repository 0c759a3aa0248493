"""The clustered patch data of Definition 3.1, with its latent variables.

Two generators draw from the same distribution:

* ``rng="torch"``: vectorized, one ``torch.Generator``;
* ``rng="official"``: the official code's exact random-number order (numpy's legacy
  ``RandomState`` for everything, ``torch.randperm`` for the patch order; book/official_code.md,
  'The data settings'), so
  that setting 1 regenerates the stored labels, centers, features and cluster lists of
  uclaml/MoE element for element. It loops over samples (that is the order it must follow), so
  its output is cached on disk (``moesim.outputs.cache_dir()``: ``$MOESIM_CACHE``, default ``~/.cache/moesim``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .outputs import cache_dir

#: Role of each patch before shuffling: signal y*alpha*v_k, center beta*c_k, Gaussian noise
#: patches, then the feature-noise patch eps*gamma*v_k' (the official code's stacking order).
ROLE_SIGNAL, ROLE_CENTER, ROLE_FEATURE_NOISE = 0, 1, 2

#: The config fields the official generator's latent variables (``_official_latents``: basis,
#: labels, clusters, strengths, Gaussian patches, patch order) depend on besides the seed: the key
#: of their disk cache. ``data_scale`` and ``shuffle_labels`` act after the cached latents,
#: ``data_rng`` is ``"official"`` for every cached file, and the seed is keyed on its own.
OFFICIAL_LATENT_FIELDS = ("n_clusters", "n_patches", "patch_dim", "n_train", "n_test", "alpha_range", "beta_range",
                          "gamma_range", "sigma_p", "shuffle_patches")
#: Every config field ``generate`` reads (Definition 3.1's sizes and ranges, and how they are drawn):
#: two configs equal on these get the same datasets (``moesim.claims.Context.dataset`` keys its
#: in-process cache by them).
DATA_FIELDS = OFFICIAL_LATENT_FIELDS + ("data_scale", "shuffle_labels", "data_rng", "data_seed")


@dataclass
class Dataset:
    """Samples of Definition 3.1 and every latent variable that produced them.

    Shapes: ``n`` samples, ``P`` patches of dimension ``d``, ``K`` clusters.
    """

    x: torch.Tensor  # (n, P, d) patches, already multiplied by ``scale``
    y: torch.Tensor  # (n,) labels in {-1, +1}, int64
    cluster: torch.Tensor  # (n,) k: the cluster (center patch beta*c_k, signal y*alpha*v_k)
    noise_cluster: torch.Tensor  # (n,) k' != k: the feature-noise patch eps*gamma*v_k'
    epsilon: torch.Tensor  # (n,) sign of the feature-noise patch, in {-1, +1}
    alpha: torch.Tensor  # (n,) signal strength
    beta: torch.Tensor  # (n,) center strength
    gamma: torch.Tensor  # (n,) feature-noise strength
    signal_patch: torch.Tensor  # (n,) index p of the signal patch
    center_patch: torch.Tensor  # (n,) index p of the center patch
    noise_patch: torch.Tensor  # (n,) index p of the feature-noise patch
    features: torch.Tensor  # (K, d) unit-norm v_k
    centers: torch.Tensor  # (K, d) unit-norm c_k
    scale: float  # global factor applied to x (official code: 10)
    sigma_p: float  # the Gaussian patches are N(0, sigma_p^2/d I) before scaling

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def labels01(self) -> torch.Tensor:
        """Labels as the official code stores them (y = -1 -> 0, y = +1 -> 1)."""
        return (self.y > 0).long()

    def cluster_lists(self) -> list[list[int]]:
        """Indices of the samples of each cluster, as the official ``train_cluster`` file."""
        k = self.cluster.cpu().numpy()
        return [np.flatnonzero(k == c).tolist() for c in range(self.features.shape[0])]

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Dataset":
        """Move every tensor to ``device``; cast the floating ones to ``dtype``."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.to(device=device, dtype=dtype if (dtype is not None and v.is_floating_point()) else None)
            out[f.name] = v
        return Dataset(**out)

    def subset(self, index: torch.Tensor | slice) -> "Dataset":
        """The samples ``index`` (features, centers and constants are shared)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor) and f.name not in ("features", "centers"):
                v = v[index]
            out[f.name] = v
        return Dataset(**out)


def generate(cfg: Config, *, seed: int | None = None, rng: str | None = None) -> tuple[Dataset, Dataset]:
    """Draw the training and test sets of Definition 3.1.

    Args:
        cfg: the data fields of the config (K, P, d, n_train, n_test, ranges, sigma_p, scale).
        seed: data seed; default ``cfg.data_seed``.
        rng: ``"torch"`` or ``"official"``; default ``cfg.data_rng``.

    Returns:
        ``(train, test)``, float64 on the CPU (cast with ``Dataset.to``).
    """
    cfg.validate()
    seed = cfg.data_seed if seed is None else seed
    rng = cfg.data_rng if rng is None else rng
    if rng == "torch":
        data = _generate_torch(cfg, seed)
    elif rng == "official":
        data = _generate_official_cached(cfg, seed)
    else:
        raise ValueError(f"rng={rng!r} is not allowed; choose 'torch' or 'official'")
    n = cfg.n_train
    train, test = data.subset(slice(0, n)), data.subset(slice(n, n + cfg.n_test))
    if cfg.shuffle_labels:  # broken on purpose: the training labels no longer depend on x
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0x1ABE15]).generate_state(1)[0]))
        train = dataclasses.replace(train, y=train.y[torch.randperm(n, generator=g)])
    return train, test


# --- vectorized generator ------------------------------------------------------------------

def orthonormal_basis(n_vectors: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``n_vectors`` orthonormal rows in R^dim (QR of a Gaussian matrix), float64."""
    g = torch.randn(dim, n_vectors, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


def _uniform(lo_hi: tuple[float, float], n: int, g: torch.Generator) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _generate_torch(cfg: Config, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    K, P, d = cfg.n_clusters, cfg.n_patches, cfg.patch_dim
    n = cfg.n_train + cfg.n_test
    basis = orthonormal_basis(2 * K, d, g)
    V, C = basis[:K], basis[K:]
    k = torch.randint(K, (n,), generator=g)
    k_noise = (k + 1 + torch.randint(K - 1, (n,), generator=g)) % K  # uniform over [K] \ {k}
    y = 2 * torch.randint(2, (n,), generator=g) - 1
    eps = 2 * torch.randint(2, (n,), generator=g) - 1
    alpha = _uniform(cfg.alpha_range, n, g)
    beta = _uniform(cfg.beta_range, n, g)
    gamma = _uniform(cfg.gamma_range, n, g)
    xi = torch.randn(n, P - 3, d, generator=g, dtype=torch.float64) * (cfg.sigma_p / d**0.5)
    if cfg.shuffle_patches:
        perm = torch.argsort(torch.rand(n, P, generator=g), dim=1)
    else:
        perm = torch.arange(P).expand(n, P)
    return _assemble(cfg, V, C, y, k, k_noise, eps, alpha, beta, gamma, xi, perm)


def _assemble(cfg, V, C, y, k, k_noise, eps, alpha, beta, gamma, xi, perm) -> Dataset:
    """Stack [signal, center, xi_1..xi_{P-3}, feature noise], permute each sample by ``perm``.

    ``x[i, j] = stacked[i, perm[i, j]]`` (as ``stacked[torch.randperm(P)]`` in the code).
    """
    signal = (y * alpha)[:, None] * V[k]
    center = beta[:, None] * C[k]
    fnoise = (eps * gamma)[:, None] * V[k_noise]
    stacked = torch.cat([signal[:, None], center[:, None], xi, fnoise[:, None]], dim=1)  # (n, P, d)
    x = torch.gather(stacked, 1, perm[:, :, None].expand_as(stacked))
    where = torch.argsort(perm, dim=1)  # where[i, role] = position of that stacked patch
    P = stacked.shape[1]
    if cfg.data_rng == "official":
        x = (x.float() * cfg.data_scale).double()  # the code casts to float32, then multiplies by 10
    else:
        x = x * cfg.data_scale
    return Dataset(
        x=x, y=y, cluster=k, noise_cluster=k_noise, epsilon=eps,
        alpha=alpha, beta=beta, gamma=gamma,
        signal_patch=where[:, 0].contiguous(), center_patch=where[:, 1].contiguous(),
        noise_patch=where[:, P - 1].contiguous(),
        features=V, centers=C, scale=float(cfg.data_scale), sigma_p=float(cfg.sigma_p),
    )


# --- the official code's generator (book/official_code.md, 'The data settings') ---------------

def official_basis(rs: np.random.RandomState, n_clusters: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Features then centers from one sequential Gram-Schmidt chain, in the code's RNG order."""

    def next_vector(done: list[np.ndarray]) -> np.ndarray:
        v = rs.randn(dim)
        v = v / np.linalg.norm(v)
        for u in done:
            v = v - (v @ u) * u
        return v / np.linalg.norm(v)

    done: list[np.ndarray] = []
    x = next_vector(done)
    feats, cents = [], []
    for _ in range(n_clusters):
        feats.append(x)
        done.append(x)
        x = next_vector(done)
    for i in range(n_clusters):
        cents.append(x)
        if i != n_clusters - 1:
            done.append(x)
            x = next_vector(done)
    return np.array(feats), np.array(cents)


def _official_latents(cfg: Config, seed: int) -> dict[str, np.ndarray]:
    """The code's sample loop, call for call (it cannot be vectorized and keep the stream)."""
    K, P, d = cfg.n_clusters, cfg.n_patches, cfg.patch_dim
    n = cfg.n_train + cfg.n_test
    rs = np.random.RandomState(seed)
    torch_gen = torch.Generator().manual_seed(seed)  # the code's torch.manual_seed(s), for randperm
    V, C = official_basis(rs, K, d)
    clusters = list(range(K))
    out = {name: np.empty(n, dtype=np.int64) for name in ("y", "k", "k_noise", "eps")}
    for name in ("alpha", "beta", "gamma"):
        out[name] = np.empty(n)
    out["xi"] = np.empty((n, P - 3, d))
    out["perm"] = np.empty((n, P), dtype=np.int64)
    std = cfg.sigma_p / np.sqrt(d)
    for i in range(n):
        out["y"][i] = rs.choice([-1, 1], 1)[0]
        k = rs.choice(clusters)
        out["k"][i] = k
        out["xi"][i] = rs.normal(0, std, size=(P - 3, d))
        out["eps"][i] = rs.choice([-1, 1], 1)[0]
        out["k_noise"][i] = rs.choice(sorted(set(clusters) - {k}))
        out["alpha"][i] = rs.uniform(*cfg.alpha_range)
        out["beta"][i] = rs.uniform(*cfg.beta_range)
        out["gamma"][i] = rs.uniform(*cfg.gamma_range)
        out["perm"][i] = torch.randperm(P, generator=torch_gen).numpy() if cfg.shuffle_patches else np.arange(P)
    out["V"], out["C"] = V, C
    return out


def _data_key(cfg: Config, seed: int) -> str:
    """The disk-cache key of the official latents: ``OFFICIAL_LATENT_FIELDS``, the seed, a version."""
    blob = json.dumps({f: getattr(cfg, f) for f in OFFICIAL_LATENT_FIELDS} | {"seed": seed, "version": 1},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _generate_official_cached(cfg: Config, seed: int) -> Dataset:
    path = cache_dir("data") / f"official-{_data_key(cfg, seed)}.npz"
    lat = None
    if path.exists():
        try:
            with np.load(path) as f:
                lat = {k: f[k] for k in f.files}
        except (OSError, ValueError):
            lat = None  # a damaged cache file is regenerated
    if lat is None:
        lat = _official_latents(cfg, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **lat)
        os.replace(tmp, path)
    t = {k: torch.from_numpy(v) for k, v in lat.items()}
    return _assemble(cfg, t["V"], t["C"], t["y"], t["k"], t["k_noise"], t["eps"], t["alpha"], t["beta"],
                     t["gamma"], t["xi"], t["perm"])
