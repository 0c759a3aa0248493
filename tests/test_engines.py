"""The engine registry and interface, the nonlinearity tables, and the fused kernel's declared C interface."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import moesim
from moesim import config, engines, nonlinearities, preset, store
from moesim.engines import fused
from moesim.engines.base import Engine

ROOT = Path(moesim.__file__).parent


def test_config_names_agree_with_the_registry_and_the_tables():
    assert config.ENGINES == ("auto", *engines.NAMES)
    assert config.ACTIVATIONS == tuple(nonlinearities.ACTIVATIONS)
    assert config.LOSSES == tuple(nonlinearities.LOSSES)


@pytest.mark.parametrize("name", engines.NAMES)
def test_every_registered_engine_implements_the_interface(name):
    eng = engines.get(name)
    assert isinstance(eng, Engine) and eng.name == name
    assert eng.load_balancing in ("native", "refuse", "autograd")


@pytest.mark.parametrize("bad", [None, ["eager"], 3, "turbo"])
def test_train_names_the_engines_for_any_bad_engine_argument(bad):
    """``train`` checks the name against the registry (``engines.check_name``) before any work: a
    non-string, even an unhashable one, gets the same one-line error as an unknown name."""
    cfg = preset("official-s1-quick", n_train=100, n_test=100, n_steps=2)
    with pytest.raises(ValueError, match=rf"engine={re.escape(repr(bad))} is not allowed; choose one of auto, fused, "
                                         "eager, autograd, official-ops$"):
        moesim.train(cfg, 1, engine=bad)


def test_unknown_engine_names_the_choices():
    with pytest.raises(ValueError, match="engine='turbo' is not allowed; choose one of auto, fused, eager, autograd, "
                                         "official-ops"):
        engines.get("turbo")


def test_fingerprint_covers_every_engine_and_the_modules_that_compute_a_run():
    listed = set(store.FINGERPRINT_FILES)
    on_disk = {f"engines/{p.name}" for p in (ROOT / "engines").iterdir() if p.suffix in (".py", ".c")}
    assert on_disk <= listed
    assert {"nonlinearities.py", "model.py", "training.py", "noise.py", "optim.py", "stopping.py", "recorder.py",
            "evaluation.py", "data.py", "config.py", "metrics.py"} <= listed
    assert all((ROOT / name).is_file() for name in listed)


def test_fused_covers_exactly_the_monomial_activations():
    x = torch.zeros(1, 1, 1)
    for name in nonlinearities.ACTIVATIONS:
        cfg = preset("paper-s1-quick", activation=name)
        reason = fused.unsupported(cfg, x)
        if nonlinearities.ACTIVATIONS[name].degree is None:
            assert reason == f"activation={name!r} (covered: linear, cubic, power)"
        else:
            assert reason is None


def test_c_enums_are_the_mapping_of_the_config_values():
    """Every gate and loss value the kernel takes maps to one C constant of fused_step.c, and back."""
    enums = fused.c_enums()
    assert set(enums) == {c for names in fused.C_NAMES.values() for c in names.values()}
    assert set(fused.C_NAMES["gate"]) == set(config.GATES) - {"unit"}  # 'unit': the eager engine only
    assert set(fused.C_NAMES["loss"]) == set(config.LOSSES)
    for names in fused.C_NAMES.values():
        assert len({enums[c] for c in names.values()}) == len(names)  # distinct values


def _prototype(source: str, function: str) -> list[tuple[str, str]]:
    body = re.search(rf"int {function}\(([^)]*)\)", source).group(1)
    args = []
    for arg in body.split(","):
        decl = " ".join(arg.split())
        name = re.search(r"(\w+)$", decl).group(1)
        args.append((name, "pointer" if "*" in decl else decl.rsplit(" ", 1)[0]))
    return args


@pytest.mark.parametrize("function, declared", [("moesim_fused_step", fused.STEP_ARGS),
                                                ("moesim_fused_forward", fused.FORWARD_ARGS)])
def test_declared_arguments_match_the_c_prototypes(function, declared):
    c_args = _prototype(fused.SOURCE.read_text(), function)
    assert [n for n, _ in c_args] == [n for n, _ in declared]
    for (name, c_type), (_, py_type) in zip(c_args, declared):
        assert (c_type, py_type) in (("pointer", ctypes.c_void_p), ("int64_t", ctypes.c_int64)), name


def test_a_missing_kernel_argument_is_an_error():
    with pytest.raises(TypeError, match="missing or unknown"):
        fused._call(lambda *a: 0, fused.FORWARD_ARGS, x=0)


@pytest.mark.parametrize("model", ["single-nonlinear", "single-linear"])
@pytest.mark.parametrize("optimizer", ["normalized_gd", "gd", "adam"])
def test_autograd_trains_single_models_as_eager(model, optimizer):
    """The router is not in a single model's graph: autograd gives it gradient zero, as eager does.
    (float64; bounds 10x the measured differences, largest with Adam: 7.3e-8 on the loss, 3.3e-8 on
    W; benchmarks/results/calibration/engines.md.)"""
    cfg = preset("paper-s1-quick", model, n_train=120, n_test=40, n_steps_single=15, dtype="float64",
                 single_optimizer=optimizer)
    ref, got = moesim.train(cfg, [0, 1], engine="eager"), moesim.train(cfg, [0, 1], engine="autograd")
    assert got.info["engine"] == "autograd"
    np.testing.assert_allclose(got.history["loss"], ref.history["loss"], rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(got.params.W, ref.params.W, rtol=1e-6, atol=1e-8)
    assert torch.equal(got.params.theta, ref.params.theta)


def test_a_new_activation_is_one_table_entry(monkeypatch):
    """The issue's promise: adding an activation is one entry of ``nonlinearities.ACTIVATIONS`` (plus
    this kind of test). softplus, added here only: the config accepts it, the fused kernel reports it
    unavailable, ``auto`` trains it with the eager step, and the eager step's hand-written sigma'
    agrees with autograd through sigma (a wrong derivative in the entry fails the last assert)."""
    import torch.nn.functional as F

    entry = nonlinearities.Activation(F.softplus, lambda z: (F.softplus(z), torch.sigmoid(z)))
    monkeypatch.setitem(nonlinearities.ACTIVATIONS, "softplus", entry)
    cfg = preset("paper-s1-quick", "moe-nonlinear", activation="softplus", n_train=200, n_test=200, n_steps=5,
                 dtype="float64")
    x = torch.zeros(1, 1, 1)
    assert fused.unsupported(cfg, x) == "activation='softplus' (covered: linear, cubic, power)"
    auto = moesim.train(cfg, [0])
    assert auto.info["engine"] == "eager"
    ref = moesim.train(cfg, [0], engine="autograd")
    # float64 rounding: 10x the measured 4.6e-10 (loss) and 6.2e-13 (W), rounded up
    # (benchmarks/results/calibration/engines.md, benchmarks/engine_agreement.py)
    np.testing.assert_allclose(auto.history["loss"], ref.history["loss"], rtol=1e-8)
    w_bound = 1e-11
    assert np.abs(auto.params.W.numpy() - ref.params.W.numpy()).max() <= w_bound
    # the same entry with a wrong derivative is caught by the comparison above
    monkeypatch.setitem(nonlinearities.ACTIVATIONS, "softplus",
                        nonlinearities.Activation(F.softplus, lambda z: (F.softplus(z), torch.sigmoid(2 * z))))
    bad = moesim.train(cfg, [0])
    assert np.abs(bad.params.W.numpy() - ref.params.W.numpy()).max() > w_bound


def test_a_loss_the_fused_kernel_lacks_is_reported_unavailable(monkeypatch):
    """A new loss entry runs on the eager engine; the fused kernel names what it covers."""
    monkeypatch.setitem(nonlinearities.LOSSES, "hinge_sq", nonlinearities.LOSSES["logistic"])
    cfg = preset("paper-s1-quick", "moe-nonlinear", loss="hinge_sq")
    assert fused.unsupported(cfg, torch.zeros(1, 1, 1)) == "loss='hinge_sq' (covered: logistic, double_softmax_ce)"


def test_a_new_engine_is_one_module_and_its_registration(monkeypatch):
    """The issue's promise: an engine is one module with an ``ENGINE`` plus one line in
    ``engines.MODULES``. A toy engine (the eager step, counting its calls) registered that way is
    accepted by ``train``, chosen once, used for every step, and gives the eager numbers."""
    import sys
    import types

    from moesim.engines.eager import EagerEngine

    class Toy(EagerEngine):
        name = "toy"
        steps = 0

        def step(self, *args, **kwargs):
            Toy.steps += 1
            return super().step(*args, **kwargs)

    module = types.ModuleType("moesim.engines.toy")
    module.ENGINE = Toy()
    monkeypatch.setitem(sys.modules, "moesim.engines.toy", module)
    monkeypatch.setitem(engines.MODULES, "toy", "toy")
    cfg = preset("official-s1-quick", "moe-nonlinear", n_train=200, n_test=200, n_steps=6)
    toy = moesim.train(cfg, [0, 1], engine="toy")
    eager = moesim.train(cfg, [0, 1], engine="eager")
    assert toy.info["engine"] == "toy" and Toy.steps == 6
    for key in ("loss", "dispatch_counts"):
        np.testing.assert_array_equal(toy.history[key], eager.history[key])
    np.testing.assert_array_equal(toy.params.W.numpy(), eager.params.W.numpy())
