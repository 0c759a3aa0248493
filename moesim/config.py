"""Run configuration: one flat dataclass, named presets, and validation.

Every difference between the paper (Chen et al., NeurIPS 2022) and its official code
(uclaml/MoE) is a field of its own, so that either behaviour, and each quirk alone, can be run.
A preset (``paper-s1``, ``official-s1``, ...) picks all of one side; ``Config.replace`` or the
command line's ``--set name=value`` flips single fields.

One module of about 490 lines, on purpose: ``Config`` is one flat dataclass whose documentation is
the comment beside each field (``moesim.fields`` reads them from this source for ``moesim config``
and the book), its validation reads every field, and the presets and Theorem 4.2's regime are
values of those fields. Moving the presets out would need ``preset`` imported back here (scripts
and the book call ``moesim.config.preset``) around an import cycle (presets build ``Config`` objects).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import typing
from dataclasses import dataclass

from .nonlinearities import ACTIVATIONS as _ACTIVATION_TABLE, LOSSES as _LOSS_TABLE  # torch tables, no moesim import

#: The activations and losses: the names of the tables of ``moesim.nonlinearities`` (one entry each;
#: validation reads the tables themselves, so a new entry is a new allowed value).
ACTIVATIONS = tuple(_ACTIVATION_TABLE)
ARCHITECTURES = ("moe", "single")
OUTPUT_HEADS = ("single", "two")
LOSSES = tuple(_LOSS_TABLE)
GATES = ("softmax", "noisy_logit", "noisy_softmax", "unit")
INITS = ("gaussian", "uniform")
NORMALIZATIONS = ("frobenius", "sum_of_norms", "per_tensor", "none")
STOPPINGS = ("fixed", "official")
ROUTER_NOISES = ("fresh", "fixed", "none")
SINGLE_OPTIMIZERS = ("normalized_gd", "gd", "adam")
DATA_RNGS = ("torch", "official")
DTYPES = ("float32", "float64")
#: How training computes a step's gradients (``moesim.train(engine=...)``): the fastest that can run,
#: then the engines registered in ``moesim.engines.MODULES`` (the fused C kernel, torch operations with
#: hand-written gradients, autograd, the official code's own operations in its order).
from .engines import NAMES as _ENGINE_NAMES  # noqa: E402 -- the registry; imports no torch

ENGINES = ("auto", *_ENGINE_NAMES)


class ConfigError(ValueError):
    """A configuration value is outside what is allowed; the message names the parameter."""


@dataclass(frozen=True)
class Config:
    """Everything that defines one training run except the model seed.

    Field groups follow the paper: data (Definition 3.1), model (Section 3), training
    (Algorithm 1), and the switches that select the official code's behaviour (listed with both sides
    in the book's appendix *The paper and its official code*, book/official_code.md).
    """

    # --- data: Definition 3.1 -------------------------------------------------------------
    n_clusters: int = 4  # K, number of clusters (each has a feature v_k and a center c_k)
    n_patches: int = 4  # P, patches per sample: signal, center, feature noise, P-3 Gaussian
    patch_dim: int = 50  # d, dimension of one patch; needs d >= 2K orthonormal vectors
    n_train: int = 16000  # n, training samples (full batch)
    n_test: int = 16000  # test samples
    alpha_range: tuple[float, float] = (0.5, 2.0)  # D_alpha = U(a, b), feature-signal strength
    beta_range: tuple[float, float] = (1.0, 2.0)  # D_beta, cluster-center strength
    gamma_range: tuple[float, float] = (0.5, 3.0)  # D_gamma, feature-noise strength
    sigma_p: float = 1.0  # Gaussian patches are N(0, sigma_p^2 / d I)
    data_scale: float = 10.0  # global factor on every patch (official code: x10)
    shuffle_patches: bool = True  # randomly permute the patches of each sample
    shuffle_labels: bool = False  # broken model on purpose: permute the training labels (y independent of x)
    data_rng: str = "torch"  # "torch": vectorized generator; "official": uclaml/MoE's RNG order
    data_seed: int = 12  # seed of the data generator (official s1: 12, s2-s4: 11)

    # --- model: Section 3 -----------------------------------------------------------------
    architecture: str = "moe"  # "moe" (router + M experts) or "single" (one CNN, no router)
    n_experts: int = 8  # M, experts in the MoE layer
    n_filters: int = 16  # J, filters per expert (two heads: J/2 per head)
    single_filters: int = 80  # J of a single model (official notebook cells that match Table 1)
    activation: str = "cubic"  # sigma: linear, cubic, power (z**power), relu, tanh, gelu, celu
    power: int = 3  # exponent q when activation == "power"
    output_heads: str = "single"  # "single": F = sum_j sigma(.); "two": F = logit_1 - logit_0
    expert_bias: bool = False  # a bias per filter inside sigma (official Conv1d has one)
    init: str = "gaussian"  # "gaussian": N(0, init_sigma^2); "uniform": U(+-1/sqrt(d)) * init_uniform_scale
    init_sigma: float = 1e-3  # sigma_0 of the Gaussian init (paper)
    init_uniform_scale: float = 1e-3  # factor on PyTorch's Conv1d default init for MoE experts (code)
    shared_init: bool = False  # broken model on purpose: every expert starts from expert 0's W^(0) (and b)
    router_init_sigma: float = 0.0  # Theta^(0) ~ N(0, s^2) entries; 0 = Algorithm 1's zero init

    # --- routing: noisy top-1 -------------------------------------------------------------
    gate: str = "softmax"  # "softmax": pi_m(h) clean (paper); "noisy_logit": h_m + r_m (code); "noisy_softmax";
    #                        "unit": the top-1 gate renormalized to 1 (broken on purpose: no task gradient to the router)
    router_noise: str = "fresh"  # "fresh": new U[0,1] each step (Alg. 1); "fixed": one draw; "none": 1e-5 tie-break
    noise_scale: float = 1.0  # router noise is noise_scale * U[0, 1]
    test_noise: bool = False  # add router noise at evaluation too (official code)
    load_balancing: float = 0.0  # weight of the Switch-style load-balancing loss (0: off)

    # --- training: Algorithm 1 ------------------------------------------------------------
    loss: str = "logistic"  # "logistic": log(1 + e^{-y pi f}); "double_softmax_ce": code's CE(softmax(.))
    lr_expert: float = 1e-3  # eta, normalized-GD step of each expert
    lr_router: float = 0.1  # eta_r, GD step of the router
    normalization: str = "frobenius"  # expert step: grad / ||grad||_F, or the code's variants, or "none"
    n_steps: int = 500  # T, full-batch steps of an MoE run
    stopping: str = "fixed"  # "fixed": T steps; "official": the code's early-stopping rules
    single_optimizer: str = "normalized_gd"  # single models: "normalized_gd" (as an M=1 MoE), "gd", "adam"
    lr_single: float = 0.0  # single-model step; 0 = default (1e-3 normalized GD; Adam: code's per-activation)
    weight_decay_single: float = 5e-4  # L2 term of the single models' Adam (official code)
    n_steps_single: int = 800  # T of a single-model run (code: up to 801 epochs)
    record_every: int = 10  # take a full trajectory snapshot every k steps (and at the end)

    # --- execution ------------------------------------------------------------------------
    device: str = "cpu"  # "cpu" or "cuda[:i]"
    dtype: str = "float32"  # "float32" or "float64"

    def __post_init__(self) -> None:
        # a range given as a list ([1, 2], from JSON or YAML) is the same config as the tuple (1, 2)
        for name in ("alpha_range", "beta_range", "gamma_range"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def replace(self, **changes: typing.Any) -> "Config":
        """Return a copy with ``changes`` applied, validated."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; allowed: {', '.join(field_names())}")
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, typing.Any]:
        """Plain JSON-serializable dict of every field."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, typing.Any]) -> "Config":
        """Inverse of ``to_dict`` (unknown keys are an error)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of field names to values, got {type(d).__name__}")
        unknown = sorted(set(d) - set(field_names()))
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}")
        kw = {k: tuple(v) if field_types()[k] is tuple and isinstance(v, (list, tuple)) else v for k, v in d.items()}
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    @property
    def filters(self) -> int:
        """Filters per expert of this architecture (J, or ``single_filters``)."""
        return self.n_filters if self.architecture == "moe" else self.single_filters

    @property
    def experts(self) -> int:
        """Number of experts actually trained (1 for a single model)."""
        return self.n_experts if self.architecture == "moe" else 1

    @property
    def steps(self) -> int:
        return self.n_steps if self.architecture == "moe" else self.n_steps_single

    def validate(self) -> "Config":
        """Check every field; raise ``ConfigError`` naming the first bad parameter.

        Every field's type is checked first (booleans are ``True``/``False``, not text or numbers;
        text fields are text; ranges are pairs of numbers), then its value.
        """
        _check_types(self)
        _choice("architecture", self.architecture, ARCHITECTURES)
        _choice("activation", self.activation, tuple(_ACTIVATION_TABLE))
        _choice("output_heads", self.output_heads, OUTPUT_HEADS)
        _choice("loss", self.loss, tuple(_LOSS_TABLE))
        _choice("gate", self.gate, GATES)
        _choice("init", self.init, INITS)
        _choice("normalization", self.normalization, NORMALIZATIONS)
        _choice("stopping", self.stopping, STOPPINGS)
        _choice("router_noise", self.router_noise, ROUTER_NOISES)
        _choice("single_optimizer", self.single_optimizer, SINGLE_OPTIMIZERS)
        _choice("data_rng", self.data_rng, DATA_RNGS)
        _choice("dtype", self.dtype, DTYPES)
        _int_at_least("n_clusters", self.n_clusters, 2)
        _int_at_least("n_patches", self.n_patches, 3)
        _int_at_least("patch_dim", self.patch_dim, 1)
        if self.patch_dim < 2 * self.n_clusters:
            raise ConfigError(
                f"patch_dim={self.patch_dim} is too small: 2K = {2 * self.n_clusters} orthonormal "
                f"vectors (features and centers) need patch_dim >= 2 * n_clusters"
            )
        _int_at_least("n_train", self.n_train, 1)
        _int_at_least("n_test", self.n_test, 1)
        _int_at_least("n_experts", self.n_experts, 1)
        _int_at_least("n_filters", self.n_filters, 1)
        _int_at_least("single_filters", self.single_filters, 1)
        _int_at_least("power", self.power, 1)
        _int_at_least("n_steps", self.n_steps, 1)
        _int_at_least("n_steps_single", self.n_steps_single, 1)
        _int_at_least("record_every", self.record_every, 1)
        _int_at_least("data_seed", self.data_seed, 0)
        seed_limit = 2**32 - 1 if self.data_rng == "official" else 2**64 - 1
        if self.data_seed > seed_limit:
            raise ConfigError(f"data_seed={self.data_seed} is not allowed with data_rng={self.data_rng!r}; it must be "
                              f"<= {seed_limit} (2**{32 if self.data_rng == 'official' else 64} - 1, the range of "
                              f"{'numpy RandomState' if self.data_rng == 'official' else 'torch.Generator'} seeds)")
        if self.output_heads == "two":
            for name in ("n_filters", "single_filters"):
                if getattr(self, name) % 2:
                    raise ConfigError(f"{name}={getattr(self, name)} must be even with output_heads='two' (J/2 filters per head)")
        for name in ("alpha_range", "beta_range", "gamma_range"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or not all(isinstance(v, (int, float)) for v in lo_hi):
                raise ConfigError(f"{name} must be a pair (low, high) of numbers, got {lo_hi!r}")
            lo, hi = lo_hi
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
                raise ConfigError(f"{name}={lo_hi!r} must satisfy 0 < low < high (a non-empty positive range)")
        _positive("sigma_p", self.sigma_p)
        _positive("data_scale", self.data_scale)
        _positive("init_sigma", self.init_sigma)
        _positive("init_uniform_scale", self.init_uniform_scale)
        _positive("router_init_sigma", self.router_init_sigma, allow_zero=True)
        _positive("lr_expert", self.lr_expert)
        _positive("lr_router", self.lr_router, allow_zero=True)
        _positive("lr_single", self.lr_single, allow_zero=True)
        _positive("noise_scale", self.noise_scale, allow_zero=True)
        _positive("load_balancing", self.load_balancing, allow_zero=True)
        _positive("weight_decay_single", self.weight_decay_single, allow_zero=True)
        check_device_name(self.device)
        return self


def check_device_name(device: typing.Any, name: str = "device") -> None:
    """``device`` is ``'cpu'``, ``'cuda'`` or ``'cuda:<index>'`` (index an integer >= 0), else ``ConfigError``."""
    if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:[0-9]+)?", device)):
        raise ConfigError(f"{name}={device!r} is not allowed; use 'cpu', 'cuda' or 'cuda:<index>' (index >= 0)")


def value_has_kind(kind: type, value: typing.Any) -> bool:
    """Whether ``value`` is of a field's kind: bool, text, int, float (an int or a float), or tuple (a
    pair of numbers). A bool is never a number. ``_check_types`` and sweep specs use this one rule."""
    def number(v: typing.Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind is bool:
        return isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return number(value)
    if kind is tuple:
        return isinstance(value, tuple) and len(value) == 2 and all(number(v) for v in value)
    return True  # pragma: no cover - every field has one of the kinds above


def _check_types(cfg: "Config") -> None:
    """Raise ``ConfigError`` naming the first field whose value is not of the field's type."""
    what = {bool: "True or False", str: "text", int: "an integer", float: "a number",
            tuple: "a pair (low, high) of numbers"}
    for name, kind in _cached_field_types().items():
        value = getattr(cfg, name)
        if not value_has_kind(kind, value):
            raise ConfigError(f"{name}={value!r} has the wrong type ({type(value).__name__}); it must be {what[kind]}")


def _choice(name: str, value: typing.Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _int_at_least(name: str, value: typing.Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ConfigError(f"{name}={value} is not allowed; it must be an integer >= {low}")


def _positive(name: str, value: typing.Any, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value} is not allowed; it must be {'>= 0' if allow_zero else '> 0'}")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


@functools.lru_cache(maxsize=1)
def _cached_field_types() -> dict[str, type]:
    return field_types()


def field_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {k: typing.get_origin(v) or v for k, v in hints.items()}


# --- presets --------------------------------------------------------------------------------

#: The data settings of the official code (Table 1 and its appendix table; the book's appendix *The
#: paper and its official code*, section 'The data settings'): seed and ranges.
SETTINGS: dict[str, dict[str, typing.Any]] = {
    "s1": dict(data_seed=12, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0), gamma_range=(0.5, 3.0), sigma_p=1.0),
    "s2": dict(data_seed=11, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0), gamma_range=(0.5, 3.0), sigma_p=2.0),
    "s3": dict(data_seed=11, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0), gamma_range=(0.5, 2.0), sigma_p=1.0),
    "s4": dict(data_seed=11, alpha_range=(0.5, 2.0), beta_range=(1.0, 2.0), gamma_range=(0.5, 2.0), sigma_p=2.0),
    # Theorem 4.1's condition D_alpha = D_gamma (the official "verify" data)
    "verify": dict(data_seed=11, alpha_range=(1.0, 2.0), beta_range=(1.0, 2.0), gamma_range=(1.0, 2.0), sigma_p=1.0),
}

#: The paper's side of every switch (Algorithm 1, Section 3).
PAPER_SEMANTICS: dict[str, typing.Any] = dict(
    output_heads="single", expert_bias=False, loss="logistic", gate="softmax", init="gaussian",
    normalization="frobenius", stopping="fixed", test_noise=False, router_noise="fresh",
    single_optimizer="normalized_gd", n_steps=500, n_steps_single=500, data_rng="torch",
)

#: The official code's side of every switch (book/official_code.md, 'Algorithm 1 and the official code').
OFFICIAL_SEMANTICS: dict[str, typing.Any] = dict(
    output_heads="two", expert_bias=True, loss="double_softmax_ce", gate="noisy_logit", init="uniform",
    normalization="sum_of_norms", stopping="official", test_noise=True, router_noise="fresh",
    single_optimizer="adam", n_steps=501, n_steps_single=801, data_rng="official",
)

SEMANTICS = {"paper": PAPER_SEMANTICS, "official": OFFICIAL_SEMANTICS}

#: Laptop-sized variant: a quarter of the data, same everything else (the size of the quick verify tier,
#: at which the calibration records in benchmarks/results/calibration/ were measured).
QUICK = dict(n_train=4000, n_test=4000)

#: Models by name: architecture and activation.
MODELS: dict[str, dict[str, typing.Any]] = {
    "moe-nonlinear": dict(architecture="moe", activation="cubic"),
    "moe-linear": dict(architecture="moe", activation="linear"),
    "single-nonlinear": dict(architecture="single", activation="cubic"),
    "single-linear": dict(architecture="single", activation="linear"),
    "single-relu": dict(architecture="single", activation="relu"),
    "single-tanh": dict(architecture="single", activation="tanh"),
    "single-gelu": dict(architecture="single", activation="gelu"),
    "single-celu": dict(architecture="single", activation="celu"),
}


# --- Theorem 4.2's regime -------------------------------------------------------------------

#: The constant in front of each order of Theorem 4.2, with its reason. The theorem fixes only
#: orders in d; these constants make them numbers at a finite d (``theory_values``).
THEORY_CONSTANTS: dict[str, float] = dict(
    # M = ceil(c_M K log K log log d): c_M = 1 gives M = 8 at d = 50, K = 4, the paper's M.
    c_M=1.0,
    # J = ceil(c_J log M log log d): c_J = 1 gives J = 3 at d = 50 (the smallest J the order allows
    # there; the official code's 16 filters are far above it).
    c_J=1.0,
    # sigma_0 = d^(-a): a = 1/3 is the lower end of the allowed interval [d^(-1/3), d^(-0.01)], the
    # end closest to the official code's small init.
    a_sigma=1 / 3,
    # eta = c_eta sigma_0 (eta = O~(sigma_0)): 1/25 puts the end of exploration,
    # T1 = floor(eta^-1 sigma_0^(1/2)) = 25 d^(1/6), at 48 steps for d = 50, and makes each
    # normalized step < 4 % of sigma_0.
    c_eta=1 / 25,
    # eta_r = c_router M^2 eta (eta_r = Theta(M^2) eta): c_router = 1.
    c_router=1.0,
    # n = c_n d (n = Omega(d)): c_n = 20 (n = 4000 at d = 200, the size of the quick tier).
    c_n=20.0,
    # T = ceil(c_T / eta) (T = O~(1/eta)): c_T = 10, i.e. 10 / eta steps, about 20 T1.
    c_T=10.0,
)


def theory_values(d: int, n_clusters: int = 4, **constants: float) -> dict[str, typing.Any]:
    """Every condition of Theorem 4.2 made a number at patch dimension ``d``.

    Algorithm 1 semantics, unit-scale data (``data_scale = 1``) of setting 1's ranges, and
    M, J, sigma_0, eta, eta_r, n, T from their orders with the constants of ``THEORY_CONSTANTS``
    (any of which ``constants`` may change). Requires d >= 16 (log log d > 0 with room).
    """
    unknown = sorted(set(constants) - set(THEORY_CONSTANTS))
    if unknown:
        raise ConfigError(f"unknown theory constant(s) {unknown}; allowed: {', '.join(THEORY_CONSTANTS)}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 16:
        raise ConfigError(f"d={d!r} is not allowed for the theory regime; give an integer patch dimension >= 16")
    c = dict(THEORY_CONSTANTS, **constants)
    K = n_clusters
    llog = math.log(math.log(d))
    M = math.ceil(c["c_M"] * K * math.log(K) * llog)
    J = math.ceil(c["c_J"] * math.log(M) * llog)
    sigma0 = d ** (-c["a_sigma"])
    eta = c["c_eta"] * sigma0
    n = int(round(c["c_n"] * d))
    return dict(
        PAPER_SEMANTICS, **SETTINGS["s1"], data_scale=1.0, patch_dim=d, n_clusters=K, n_experts=M, n_filters=J,
        init_sigma=sigma0, lr_expert=eta, lr_router=c["c_router"] * M**2 * eta, n_train=n, n_test=n,
        n_steps=math.ceil(c["c_T"] / eta),
    )


def exploration_length(cfg: "Config") -> int:
    """T1 = floor(eta^-1 sigma_0^(1/2)), the end of the exploration stage (Section 5)."""
    return int(math.floor(cfg.init_sigma**0.5 / cfg.lr_expert))


#: Patch dimensions with a named theory preset (``theory-d<d>``); any d >= 16 works through
#: ``theory_values``.
THEORY_DIMS = (32, 50, 64, 100, 128, 200, 256, 400)


def preset_names() -> list[str]:
    names = []
    for sem in SEMANTICS:
        for s in SETTINGS:
            names += [f"{sem}-{s}", f"{sem}-{s}-quick"]
    names += [f"theory-d{d}" for d in THEORY_DIMS]
    return names


def preset(name: str, model: str | None = None, **overrides: typing.Any) -> Config:
    """Build a config from a preset name ``{paper|official}-{s1|s2|s3|s4|verify}[-quick]`` or
    ``theory-d<d>`` (Theorem 4.2's regime at patch dimension d, see ``theory_values``).

    Args:
        name: the preset.
        model: optional model name (``moe-nonlinear``, ``single-linear``, ... see ``MODELS``).
        overrides: single fields to change after the preset is applied.
    """
    if not isinstance(name, str):
        raise ConfigError(f"preset={name!r} is not allowed; choose one of: {', '.join(preset_names())}")
    if name.startswith("theory-d") and name[8:].isdigit():
        values = theory_values(int(name[8:]))
    else:
        parts = name.split("-")
        quick = parts[-1] == "quick"
        if quick:
            parts = parts[:-1]
        if len(parts) != 2 or parts[0] not in SEMANTICS or parts[1] not in SETTINGS:
            raise ConfigError(f"preset={name!r} is not allowed; choose one of: {', '.join(preset_names())}")
        values = dict(SEMANTICS[parts[0]], **SETTINGS[parts[1]], **(QUICK if quick else {}))
    if model is not None:
        if not isinstance(model, str) or model not in MODELS:
            raise ConfigError(f"model={model!r} is not allowed; choose one of: {', '.join(MODELS)}")
        values.update(MODELS[model])
    values.update(overrides)
    return Config().replace(**values)


def parse_override(item: str) -> tuple[str, typing.Any]:
    """Parse a ``name=value`` override, typed by the field it names.

    Tuples are written ``low,high``; booleans ``true``/``false``.
    """
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like name=value")
    name, raw = item.split("=", 1)
    name = name.strip()
    types = field_types()
    if name not in types:
        raise ConfigError(f"unknown config field {name!r}; allowed: {', '.join(field_names())}")
    return name, parse_value(name, raw.strip())


def parse_value(name: str, raw: str) -> typing.Any:
    """Convert the text ``raw`` to the type of field ``name`` (or raise ``ConfigError``)."""
    kind = field_types()[name]
    try:
        if kind is bool:
            low = raw.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is tuple:
            parts = [float(p) for p in raw.strip("()[] ").split(",")]
            if len(parts) != 2:
                raise ValueError(raw)
            return tuple(parts)
        return raw
    except ValueError:
        what = {bool: "true or false", int: "an integer", float: "a number", tuple: "two numbers 'low,high'"}[kind]
        raise ConfigError(f"{name}={raw!r} has the wrong type; it must be {what}") from None


def default_lr_single(cfg: Config) -> float:
    """Single-model step when ``lr_single == 0`` (official code: Adam 0.003 linear, 0.01 otherwise)."""
    if cfg.lr_single > 0:
        return cfg.lr_single
    if cfg.single_optimizer == "adam":
        return 0.003 if cfg.activation == "linear" else 0.01
    return cfg.lr_expert
