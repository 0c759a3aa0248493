"""How far two engines' float64 runs are apart: the measurements behind tests/test_engines.py's bounds.

    PYTHONPATH=. python benchmarks/engine_agreement.py

Prints, for each comparison the tests make, the largest relative difference of the loss history
and the largest relative and absolute differences of the expert filters W (relative to max |W|):
  * single models, autograd vs eager (2 models x 3 optimizers, the configuration of
    ``test_autograd_trains_single_models_as_eager``);
  * a softplus activation added to the table, eager vs autograd (the configuration of
    ``test_a_new_activation_is_one_table_entry``).
The tests' bounds are 10x these (recorded in benchmarks/results/calibration/engines.md).
"""

from __future__ import annotations

import numpy as np


def _diff(a, b) -> tuple[float, float, float]:
    la, lb = a.history["loss"], b.history["loss"]
    loss_rel = float(np.max(np.abs(la - lb) / np.maximum(np.abs(lb), 1e-300)))
    wa, wb = a.params.W.numpy(), b.params.W.numpy()
    w_abs = float(np.max(np.abs(wa - wb)))
    return loss_rel, w_abs / float(np.max(np.abs(wb))), w_abs


def main() -> None:
    import torch
    import torch.nn.functional as F

    import moesim
    from moesim import nonlinearities, preset

    torch.set_num_threads(1)
    print("| comparison | loss, max relative | W, max relative to max abs W | W, max absolute |")
    print("|---|---|---|---|")
    for model in ("single-nonlinear", "single-linear"):
        for optimizer in ("normalized_gd", "gd", "adam"):
            cfg = preset("paper-s1-quick", model, n_train=120, n_test=40, n_steps_single=15, dtype="float64",
                         single_optimizer=optimizer)
            ref, got = moesim.train(cfg, [0, 1], engine="eager"), moesim.train(cfg, [0, 1], engine="autograd")
            print(f"| {model} {optimizer}: autograd vs eager | " + " | ".join(f"{v:.1e}" for v in _diff(got, ref))
                  + " |")
    nonlinearities.ACTIVATIONS["softplus"] = nonlinearities.Activation(
        F.softplus, lambda z: (F.softplus(z), torch.sigmoid(z)))
    cfg = preset("paper-s1-quick", "moe-nonlinear", activation="softplus", n_train=200, n_test=200, n_steps=5,
                 dtype="float64")
    got, ref = moesim.train(cfg, [0]), moesim.train(cfg, [0], engine="autograd")
    print("| moe softplus: eager vs autograd | " + " | ".join(f"{v:.1e}" for v in _diff(got, ref)) + " |")


if __name__ == "__main__":
    main()
