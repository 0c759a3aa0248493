"""Config validation: every bad value is refused before any work, with the parameter named."""

from __future__ import annotations

import pytest

from moesim.config import Config, ConfigError, parse_override, preset, preset_names


@pytest.mark.parametrize("field, value, words", [
    ("n_patches", 2, "n_patches"),
    ("n_clusters", 1, "n_clusters"),
    ("patch_dim", 7, "patch_dim"),  # 2K = 8 orthonormal vectors need d >= 8
    ("alpha_range", (2.0, 1.0), "alpha_range"),
    ("beta_range", (1.0, 1.0), "beta_range"),  # empty range
    ("gamma_range", (-1.0, 2.0), "gamma_range"),  # non-positive
    ("sigma_p", 0.0, "sigma_p"),
    ("sigma_p", -1.0, "sigma_p"),
    ("n_experts", 0, "n_experts"),
    ("n_filters", 0, "n_filters"),
    ("n_train", 0, "n_train"),
    ("n_test", 0, "n_test"),
    ("activation", "swish", "activation"),
    ("device", "tpu", "device"),
    ("gate", "hard", "gate"),
    ("normalization", "adam", "normalization"),
    ("n_experts", 2.5, "n_experts"),
    ("lr_expert", float("nan"), "lr_expert"),
])
def test_bad_values_are_refused_with_the_parameter_named(field, value, words):
    with pytest.raises(ConfigError, match=words):
        Config().replace(**{field: value})


def test_two_heads_need_an_even_filter_count():
    with pytest.raises(ConfigError, match="n_filters"):
        Config().replace(output_heads="two", n_filters=15)


def test_unknown_preset_model_and_field():
    with pytest.raises(ConfigError, match="preset"):
        preset("official-s9")
    with pytest.raises(ConfigError, match="model"):
        preset("official-s1", "moe-quadratic")
    with pytest.raises(ConfigError, match="unknown config field"):
        Config().replace(n_expert=3)
    with pytest.raises(ConfigError, match="unknown config field"):
        parse_override("nexperts=3")


@pytest.mark.parametrize("text, field, expected", [
    ("n_experts=16", "n_experts", 16), ("sigma_p=2", "sigma_p", 2.0), ("test_noise=false", "test_noise", False),
    ("gamma_range=0.5,2", "gamma_range", (0.5, 2.0)), ("gate=softmax", "gate", "softmax"),
])
def test_overrides_are_typed_by_their_field(text, field, expected):
    assert parse_override(text) == (field, expected)


@pytest.mark.parametrize("text", ["n_experts=x", "test_noise=maybe", "gamma_range=1", "sigma_p=abc"])
def test_overrides_of_the_wrong_type(text):
    with pytest.raises(ConfigError, match="wrong type"):
        parse_override(text)


def test_presets_pick_one_side_and_fields_flip_alone():
    paper, official = preset("paper-s1"), preset("official-s1")
    assert (paper.gate, paper.loss, paper.output_heads, paper.expert_bias) == ("softmax", "logistic", "single", False)
    assert (official.gate, official.loss, official.output_heads, official.expert_bias) == (
        "noisy_logit", "double_softmax_ce", "two", True)
    flipped = preset("official-s1", gate="softmax")
    assert flipped.gate == "softmax" and flipped.loss == "double_softmax_ce"
    assert all(preset(name) for name in preset_names())


def test_dict_round_trip():
    cfg = preset("official-s2-quick", "moe-linear", n_experts=5)
    assert Config.from_dict(cfg.to_dict()) == cfg
