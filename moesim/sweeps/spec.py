"""A sweep's specification: a base config, grid axes over config fields, seeds (``SweepSpec``).

What a spec means and how it is checked; nothing here trains or stores (``moesim.sweeps.runner``
runs a spec, ``moesim.sweeps.export`` writes its runs). A new sweep axis needs no code: any field of
``moesim.config.Config`` is an axis (``grid: {field: [values]}`` or ``--grid field=v1,v2``).
"""

from __future__ import annotations

import itertools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arguments import seed_list
from ..config import Config, ConfigError, field_names, parse_value, preset, value_has_kind
from ..store import config_field_types

DEFAULT_PRESET = "official-s1-quick"
DEFAULT_SEEDS = 10
_SWEEP_KEYS = ("name", "preset", "model", "set", "grid", "seeds")


def coerce_value(name: str, value: typing.Any) -> typing.Any:
    """``value`` as the type of config field ``name``: text through ``moesim.config.parse_value``
    (as ``--set``/``--grid`` give it), a number, list or bool from YAML checked against the type.

    Raises ``ConfigError`` naming the field for an unknown field or a value of the wrong type.
    """
    types = config_field_types()
    if name not in types:
        raise ConfigError(f"unknown config field {name!r}; allowed: {', '.join(field_names())}")
    if isinstance(value, str):
        return parse_value(name, value)
    return _typed_value(name, types[name], value)


def _typed_value(name: str, kind: type, value: typing.Any) -> typing.Any:
    """A YAML value (not text) of config field ``name`` of type ``kind``: what ``parse_value``, which
    reads text, does not cover. A YAML list is a pair; an int where a float is expected is converted;
    the type rule is the config's own (``moesim.config.value_has_kind``)."""
    if not value_has_kind(kind, tuple(value) if kind is tuple and isinstance(value, list) else value):
        what = {bool: "true or false", int: "an integer", float: "a number", tuple: "a pair [low, high]",
                str: "text"}[kind]
        raise ConfigError(f"{name}={value!r} has the wrong type; it must be {what}")
    if kind is float:
        return float(value)
    if kind is tuple:
        return tuple(float(a) for a in value)
    return value


def parse_grid_item(item: str) -> tuple[str, list[typing.Any]]:
    """``name=v1,v2,...`` -> (name, typed values). Range fields separate values by ``;``:
    ``gamma_range=0.5,1;0.5,3``."""
    if "=" not in item:
        raise ConfigError(f"--grid {item!r} must look like name=v1,v2,...")
    name, raw = (s.strip() for s in item.split("=", 1))
    if name not in config_field_types():
        raise ConfigError(f"--grid: unknown config field {name!r}; allowed: {', '.join(field_names())}")
    sep = ";" if config_field_types()[name] is tuple else ","
    texts = [t.strip() for t in raw.split(sep) if t.strip()]
    if not texts:
        raise ConfigError(f"--grid {name}= is empty: give at least one value, e.g. {name}=v1,v2")
    return name, [parse_value(name, t) for t in texts]


def _plain(v: typing.Any) -> typing.Any:
    return list(v) if isinstance(v, tuple) else v


def axis_fields(axis: str) -> list[str]:
    """The config fields of a grid axis: ``"n_experts"``, or linked fields ``"n_experts,lr_router"``."""
    return [name.strip() for name in axis.split(",")]


def _axis_values(axis: str, values: list[typing.Any]) -> list[typing.Any]:
    """Typed values of an axis; a linked axis takes one list [v1, v2, ...] per point."""
    names = axis_fields(axis)
    if len(names) == 1:
        return [coerce_value(axis, v) for v in values]
    out = []
    for v in values:
        if not isinstance(v, (list, tuple)) or len(v) != len(names):
            raise ConfigError(f"grid axis {axis!r} links {len(names)} fields: each value must be a list of "
                              f"{len(names)} values, got {v!r}")
        out.append(tuple(coerce_value(n, a) for n, a in zip(names, v)))
    return out


@dataclass
class SweepSpec:
    """A sweep: base config, grid axes (their product is the set of points), seeds.

    Args:
        name: the sweep's name in the store.
        preset: a preset name (``moesim.config.preset_names()``).
        model: a model name (``moesim.config.MODELS``) or None for the preset's.
        fixed: config overrides applied to every point.
        axes: ``{field: [values]}``; the grid is their product, in this order. An axis may link
            fields that vary together, ``{"n_experts,lr_router": [(4, 0.025), (8, 0.1)]}`` (e.g.
            Theorem 4.2's router step eta_r = Theta(M^2) eta).
        seeds: the model seeds of every point.
    """

    name: str
    preset: str = DEFAULT_PRESET
    model: str | None = None
    fixed: dict[str, typing.Any] = field(default_factory=dict)
    axes: dict[str, list[typing.Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))

    @classmethod
    def from_dict(cls, d: dict[str, typing.Any], name: str | None = None) -> SweepSpec:
        """Build from the mapping of a YAML spec (keys: name, preset, model, set, grid, seeds)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a sweep spec must be a mapping with keys {', '.join(_SWEEP_KEYS)}; "
                              f"got {type(d).__name__}")
        unknown = sorted(set(d) - set(_SWEEP_KEYS))
        if unknown:
            raise ConfigError(f"unknown sweep spec key(s) {unknown}; allowed: {', '.join(_SWEEP_KEYS)}")
        fixed, grid = d.get("set") or {}, d.get("grid")
        if not isinstance(fixed, dict):
            raise ConfigError(f"spec 'set' must be a mapping field: value, got {fixed!r}")
        if grid is None:
            grid = {}
        if not isinstance(grid, dict):
            raise ConfigError(f"spec 'grid' must be a mapping field: [values], got {grid!r}")
        axes = {}
        for k, values in grid.items():
            if not isinstance(values, list):
                values = [values]
            axes[",".join(axis_fields(str(k)))] = _axis_values(str(k), values)
        return cls(name=str(d.get("name") or name or "sweep"), preset=str(d.get("preset") or DEFAULT_PRESET),
                   model=d.get("model"), fixed={k: coerce_value(k, v) for k, v in fixed.items()}, axes=axes,
                   seeds=seed_list(d.get("seeds", DEFAULT_SEEDS)))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> SweepSpec:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"sweep spec {str(path)!r} does not exist")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"sweep spec {str(path)!r} is not valid YAML: {err}") from None
        return cls.from_dict(d if d is not None else {}, name=path.stem)

    def to_dict(self) -> dict[str, typing.Any]:
        """JSON-able form (what the store logs with each invocation)."""
        return dict(name=self.name, preset=self.preset, model=self.model,
                    set={k: _plain(v) for k, v in self.fixed.items()},
                    grid={k: [[_plain(a) for a in v] if "," in k else _plain(v) for v in vs]
                          for k, vs in self.axes.items()}, seeds=list(self.seeds))

    def check(self) -> None:
        """Raise ``ConfigError`` for an empty grid, an empty axis, a repeated value or field."""
        if not self.axes:
            raise ConfigError("the grid is empty: give at least one axis, --grid name=v1,v2,... or "
                              "'grid: {name: [v1, v2]}' in the spec")
        seen: set[str] = set()
        for axis, values in self.axes.items():
            for name in axis_fields(axis):
                if name not in config_field_types():
                    raise ConfigError(f"grid: unknown config field {name!r}; allowed: {', '.join(field_names())}")
                if name in self.fixed:
                    raise ConfigError(f"{name!r} is both a grid axis and a fixed override (--set); keep one")
                if name in seen:
                    raise ConfigError(f"{name!r} is in two grid axes; keep one")
                seen.add(name)
            if not values:
                raise ConfigError(f"grid axis {axis!r} has no values; give at least one")
            if len(set(values)) != len(values):
                raise ConfigError(f"grid axis {axis!r} repeats a value: {values!r}")
        if not self.seeds:
            raise ConfigError("seeds is empty; give at least one seed")

    def points(self) -> list[Config]:
        """Every grid point's config, validated, in grid order (last axis fastest)."""
        self.check()
        base = dict(self.fixed)
        out = []
        axes = list(self.axes)
        for values in itertools.product(*(self.axes[a] for a in axes)):
            point = {}
            for axis, value in zip(axes, values):
                names = axis_fields(axis)
                point.update(zip(names, value) if len(names) > 1 else {axis: value})
            try:
                out.append(preset(self.preset, self.model, **base, **point))
            except ConfigError as err:
                where = ", ".join(f"{k}={v!r}" for k, v in point.items())
                raise ConfigError(f"grid point {where}: {err}") from None
        return out

    @property
    def n_runs(self) -> int:
        return int(np.prod([len(v) for v in self.axes.values()])) * len(self.seeds)
