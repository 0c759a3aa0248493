"""``moesim.jsonable``: one converter, the non-finite floats of each file kept as that file has always had them."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from moesim.jsonable import jsonable


@dataclasses.dataclass
class _Point:
    x: float
    ys: tuple


def test_containers_numpy_torch_and_dataclasses_become_json_types():
    value = {1: (np.int64(2), np.float32(0.5), np.bool_(True)), "a": np.arange(3), "t": torch.tensor([1.5, 2.0]),
             "p": _Point(1.0, (np.float64(2.0),))}
    out = jsonable(value)
    assert out == {"1": [2, 0.5, True], "a": [0, 1, 2], "t": [1.5, 2.0], "p": {"x": 1.0, "ys": [2.0]}}
    assert json.loads(json.dumps(out)) == out


def test_nonfinite_keep_writes_nan_and_infinity():  # results.save_run's summary.json
    out = jsonable([math.nan, np.float64(math.inf), np.array([-math.inf])])
    assert json.dumps(out) == "[NaN, Infinity, [-Infinity]]"


def test_nonfinite_text_writes_strings():  # claim results and the scaling tier's files
    out = jsonable({"a": [math.nan, np.float64(math.inf)], "b": np.array([-math.inf, 1.0])}, nonfinite="text")
    assert out == {"a": ["nan", "inf"], "b": ["-inf", 1.0]}


def test_nonfinite_null_is_the_run_store_rule():
    # a Python NaN becomes null, +-inf stay; numpy scalars and arrays are written as they are
    out = jsonable({"a": math.nan, "b": [math.inf, math.nan], "c": np.float64(math.nan), "d": np.array([math.nan])},
                   nonfinite="null")
    assert json.dumps(out, sort_keys=True) == '{"a": null, "b": [Infinity, null], "c": NaN, "d": [NaN]}'


def test_a_bad_policy_is_named():
    with pytest.raises(ValueError, match="nonfinite='zero'"):
        jsonable(1.0, nonfinite="zero")

