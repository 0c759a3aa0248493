"""Hypothesis drives the Python API and the command line with bad values.

The contract (the README's "Reliability" section): every bad value ends in ``ConfigError`` from
the API, and in exit code 2 with one line naming the parameter and no traceback from the CLI,
before any training (training here fails the test). The strategies draw only values that are
bad by construction: a wrong type, a negative size or rate, a name outside the allowed choices.
"""

from __future__ import annotations

import math
import re
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moesim import config as C
from moesim.arguments import UsageError, parse_seeds
from moesim.cli import cli
from moesim.config import ConfigError, field_names, field_types, preset

#: The text fields and their allowed values (``device`` is checked by its pattern).
CHOICES = {
    "activation": C.ACTIVATIONS, "architecture": C.ARCHITECTURES, "output_heads": C.OUTPUT_HEADS,
    "loss": C.LOSSES, "gate": C.GATES, "init": C.INITS, "normalization": C.NORMALIZATIONS,
    "stopping": C.STOPPINGS, "router_noise": C.ROUTER_NOISES, "single_optimizer": C.SINGLE_OPTIMIZERS,
    "data_rng": C.DATA_RNGS, "dtype": C.DTYPES,
}
BOOL_TEXT = {"true", "1", "yes", "on", "false", "0", "no", "off"}
FIELDS = field_names()
TYPES = field_types()
junk = st.one_of(st.none(), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                   max_size=2))


def valid_text(name: str, text: str) -> bool:
    if name == "device":
        return re.fullmatch(r"cpu|cuda(:[0-9]+)?", text) is not None
    return text in CHOICES[name]


def bad_value(name: str):
    """A Python value that ``name`` must refuse."""
    kind = TYPES[name]
    if kind is bool:
        return st.one_of(st.integers(), st.floats(), st.text(max_size=8), junk)
    if kind is int:
        return st.one_of(st.booleans(), st.floats(), st.text(max_size=8), junk, st.integers(max_value=-1))
    if kind is float:
        return st.one_of(st.booleans(), st.text(max_size=8), junk, st.floats(max_value=-1e-6),
                         st.sampled_from([math.nan, math.inf, -math.inf]))
    if kind is tuple:
        num = st.floats(min_value=0.01, max_value=10)
        return st.one_of(st.floats(), st.text(max_size=8), st.none(), st.tuples(num),
                         st.tuples(num, num, num), st.tuples(st.text(max_size=3), num),
                         st.tuples(num, num).map(lambda p: (max(p), min(p))),  # low >= high
                         st.tuples(st.floats(max_value=0), num))
    return st.one_of(st.integers(), st.floats(), st.booleans(), junk,
                     st.text(max_size=12).filter(lambda t: not valid_text(name, t)))


def bad_text(name: str):
    """A ``--set name=TEXT`` that ``name`` must refuse."""
    kind = TYPES[name]
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
    if kind is bool:
        return text.filter(lambda t: t.strip().lower() not in BOOL_TEXT)
    if kind is int:
        return st.one_of(text.filter(lambda t: not re.fullmatch(r"\s*[+]?[0-9_]+\s*", t)),
                         st.integers(max_value=-1).map(str))
    if kind is float:
        return st.one_of(text.filter(lambda t: not _float_ok(t)), st.floats(max_value=-1e-6).map(repr),
                         st.sampled_from(["nan", "inf", "-inf"]))
    if kind is tuple:
        return st.one_of(text.filter(lambda t: "," not in t),
                         st.tuples(st.floats(0.1, 5), st.floats(0.1, 5)).map(lambda p: f"{max(p)},{min(p)}"))
    return text.filter(lambda t: not valid_text(name, t.strip()))


def _float_ok(t: str) -> bool:
    try:
        v = float(t)
    except ValueError:
        return False
    return math.isfinite(v) and v >= 0


def _no_training(*a, **k):
    raise AssertionError("training started on a bad value")


@settings(max_examples=150)
@given(data=st.data())
def test_api_refuses_every_bad_value_with_config_error(data):
    name = data.draw(st.sampled_from(FIELDS), label="field")
    value = data.draw(bad_value(name), label="value")
    with pytest.raises(ConfigError) as exc:
        preset("paper-s1-quick", **{name: value})
    assert name in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        C.Config.from_dict({name: value})


@settings(max_examples=150)
@given(data=st.data())
def test_cli_refuses_every_bad_set_value_in_one_line(data):
    name = data.draw(st.sampled_from(FIELDS), label="field")
    text = data.draw(bad_text(name), label="text")
    _assert_clean_exit_2(["run", "--preset", "paper-s1-quick", f"--set={name}={text}"], name)


@settings(max_examples=60)
@given(text=st.text(max_size=12))
def test_cli_refuses_bad_seeds_in_one_line(text):
    try:
        parse_seeds(text)
    except UsageError:
        pass
    else:
        return  # a valid seed list: not a bad value
    _assert_clean_exit_2(["run", "--preset", "paper-s1-quick", f"--seeds={text}"], "--seeds")


@settings(max_examples=60)
@given(option=st.sampled_from(["--preset", "--model", "--device"]), text=st.text(max_size=12))
def test_cli_refuses_bad_names_in_one_line(option, text):
    if option == "--preset" and text in C.preset_names() or option == "--model" and text in C.MODELS \
            or option == "--device" and valid_text("device", text):
        return
    _assert_clean_exit_2(["run", f"{option}={text}"], option.strip("-"))


def _assert_clean_exit_2(argv: list[str], word: str) -> None:
    import contextlib
    import io

    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        mp.setattr("moesim.training.train", _no_training)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli([*argv, "--no-progress", "--out", f"{tmp}/out"])
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc == 2, (argv, text)
    assert len(lines) == 1 and lines[0].startswith("moesim: error:") and "Traceback" not in text, (argv, text)
    assert word in lines[0], (argv, text)
