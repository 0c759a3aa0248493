"""moesim: the data model, MoE layer and gradient-descent dynamics of Chen, Deng, Wu, Gu, Li,
"Towards Understanding the Mixture-of-Experts Layer in Deep Learning" (NeurIPS 2022).

Quick use::

    import moesim
    cfg = moesim.preset("official-s1-quick", model="moe-nonlinear")
    result = moesim.train(cfg, seeds=3)
    result.summary["test_accuracy"], result.summary["dispatch_entropy"]
"""

from .config import Config, ConfigError, preset, preset_names
from .data import Dataset, generate
from .metrics import dispatch_counts, dispatch_entropy
from .routing import routing_probabilities, routing_probabilities_mc
from .training import DivergenceError, RunResult, train

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "Dataset", "DivergenceError", "RunResult", "dispatch_counts", "dispatch_entropy",
    "generate", "preset", "preset_names", "routing_probabilities", "routing_probabilities_mc", "train",
]
