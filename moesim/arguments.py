"""The command-line arguments the subcommands share: their flags, their parsing and the usage error.

Each shared flag (``--preset``, ``--model``, ``--set``, ``--device``, ``--dtype``, ``--seeds``,
``--threads``, ``--out``, ``--overwrite``, ``--no-progress``) is defined once here, with one name,
one help text and one parser, and every subcommand (``moesim.commands``) that takes it adds it with
the function below. This module imports nothing from the command line (``moesim.cli``,
``moesim.commands``): library code may raise ``UsageError`` and parse seeds with ``parse_seeds`` /
``seed_list``.
"""

from __future__ import annotations

import argparse
import typing


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


#: Most seeds one command takes: a batched run holds every seed's model, noise and history at
#: once, so a list this long is refused before it is built (the memory check sizes the rest).
MAX_SEEDS = 100_000

SEEDS_HELP = "number of seeds (10), a list (0,3,5) or a range (0-9)"


# --- seeds -----------------------------------------------------------------------------------

def parse_seeds(text: str) -> list[int]:
    """``"10"`` -> 0..9; ``"3,5,8"`` -> [3, 5, 8]; ``"4-7"`` -> 4..7 (at most ``MAX_SEEDS``).

    The one parser of seed lists: ``--seeds`` of every command and ``seeds:`` of a sweep spec
    (through ``seed_list``).
    """

    def check_count(count: int) -> None:
        if count > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r} asks for {count} seeds; at most {MAX_SEEDS} in one command")

    try:
        if "," in text:
            check_count(text.count(",") + 1)
            seeds = [int(s) for s in text.split(",") if s.strip()]
        elif "-" in text.strip("-"):
            lo, hi = text.split("-", 1)
            check_count(int(hi) - int(lo) + 1)
            seeds = list(range(int(lo), int(hi) + 1))
        else:
            k = int(text)
            if k < 1:
                raise UsageError(f"--seeds {text!r}: the number of seeds must be >= 1")
            check_count(k)
            seeds = list(range(k))
    except ValueError:
        raise UsageError(f"--seeds {text!r} is not allowed; give a count (10), a list (0,3,5) or a range (0-9)") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r} is an empty range")
    if any(s < 0 for s in seeds):
        raise UsageError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


def seed_list(value: typing.Any) -> list[int]:
    """Seeds given as a value (a sweep spec's ``seeds:``, a Python argument): a count ``S`` (0..S-1),
    a list of distinct integers >= 0, or a text ``parse_seeds`` reads (``"0-9"``, ``"0,3,5"``)."""
    if isinstance(value, bool):
        raise UsageError(f"seeds={value!r} is not allowed; give a count (10), a list ([0, 3, 5]) or a range ('0-9')")
    if isinstance(value, int):
        return parse_seeds(str(value))
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
            raise UsageError(f"seeds={value!r} is not allowed; a list of seeds must be non-empty integers >= 0")
        if len(set(value)) != len(value):
            raise UsageError(f"seeds={value!r} contains duplicates")
        return [int(s) for s in value]
    if isinstance(value, str):
        seeds = parse_seeds(value)
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"seeds={value!r} contains duplicates")
        return seeds
    raise UsageError(f"seeds={value!r} is not allowed; give a count (10), a list ([0, 3, 5]) or a range ('0-9')")


# --- the shared flags ------------------------------------------------------------------------

def add_preset_argument(p: argparse.ArgumentParser, default: str | None = "official-s1",
                        default_text: str | None = None) -> None:
    """--preset: the base config (``moesim.config.preset``)."""
    default_text = default_text or "%(default)s"
    p.add_argument("--preset", default=default,
                   help="{paper|official}-{s1|s2|s3|s4|verify}[-quick] or theory-d<d> "
                        f"(default: {default_text}; 'moesim run --help' lists them)")


def add_model_argument(p: argparse.ArgumentParser) -> None:
    """--model: one of ``moesim.config.MODELS``."""
    p.add_argument("--model", default=None,
                   help="moe-nonlinear, moe-linear, single-nonlinear, single-linear, single-relu, ...")


def add_set_argument(p: argparse.ArgumentParser, applies_to: str = "") -> None:
    """--set NAME=VALUE (repeatable), parsed by ``moesim.config.parse_override``; ``applies_to``
    says which runs it changes where that is not simply the one config."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one config field (repeatable), e.g. --set n_experts=16"
                        + (f"; {applies_to}" if applies_to else ""))


def add_device_argument(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--device: where the tensors live."""
    p.add_argument("--device", default=default,
                   help="cpu, cuda or cuda:<i> (default: " + ("%(default)s" if default else "the preset's, cpu") + ")")


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    """--dtype: the float type of the parameters and data."""
    p.add_argument("--dtype", default=None, choices=("float32", "float64"),
                   help="float type of every run (default: the preset's)")


def add_config_arguments(p: argparse.ArgumentParser, default_preset: str | None = "official-s1",
                         preset_default_text: str | None = None) -> None:
    """--preset, --model, --set, --device, --dtype: one config (run, sweep, config)."""
    add_preset_argument(p, default_preset, preset_default_text)
    add_model_argument(p)
    add_set_argument(p)
    add_device_argument(p)
    add_dtype_argument(p)


def add_seeds_argument(p: argparse.ArgumentParser, default: str | None = "10", default_text: str | None = None) -> None:
    """--seeds: model seeds, read by ``parse_seeds``."""
    tail = f" (default: {default_text})" if default_text else (" (default %(default)s)" if default else "")
    p.add_argument("--seeds", default=default, help=SEEDS_HELP + tail)


def add_threads_argument(p: argparse.ArgumentParser, what: str = "torch CPU threads", default: int | None = None,
                         default_text: str = "torch's choice; 1 is faster on a busy shared machine") -> None:
    """--threads: shared by every command that trains (run, verify, reproduce, sweep, replay)."""
    p.add_argument("--threads", type=int, default=default, help=f"{what} (default: {default_text})")


def add_out_argument(p: argparse.ArgumentParser, default_text: str, holds: str = "") -> None:
    """--out: the output folder (``moesim.outputs.prepare_out``)."""
    p.add_argument("--out", default=None,
                   help="output folder" + (f" for {holds}" if holds else "") + f" (default: {default_text})")


def add_overwrite_argument(p: argparse.ArgumentParser, what: str = "an existing non-empty --out folder whole") -> None:
    """--overwrite: replace what the command would otherwise refuse to write over."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_progress_argument(p: argparse.ArgumentParser, what: str = "no progress bar") -> None:
    """--no-progress."""
    p.add_argument("--no-progress", action="store_true", help=what)


# --- reading them ----------------------------------------------------------------------------

def check_threads(threads: int | None) -> int | None:
    """``--threads`` as given, or ``UsageError`` when it is below 1."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads} is not allowed; give an integer >= 1")
    return threads


def apply_threads(args: argparse.Namespace) -> int | None:
    """Validate ``--threads`` and set torch's CPU threads; return the number (None: unchanged)."""
    threads = check_threads(getattr(args, "threads", None))
    if threads is None:
        return None
    import torch

    torch.set_num_threads(threads)
    return threads


def overrides_from_args(args: argparse.Namespace) -> dict[str, typing.Any]:
    """The config fields ``--set``, ``--device`` and ``--dtype`` change (those not given are left out)."""
    from .config import parse_override

    overrides = dict(parse_override(item) for item in getattr(args, "overrides", []))
    for name in ("device", "dtype"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    return overrides


def config_from_args(args: argparse.Namespace, model: str | None = None):
    """Build and validate the config the arguments describe (--preset, --model, --set, --device, --dtype)."""
    from .config import preset

    return preset(args.preset, model or args.model, **overrides_from_args(args))


def presets_epilog() -> str:
    """The preset and model names, for ``--help``."""
    from .config import MODELS, preset_names

    names = [n for n in preset_names() if not n.startswith("theory-")]
    return ("presets: " + ", ".join(names) + ", theory-d<d> (any d >= 16)\n"
            "models: " + ", ".join(MODELS) + "\n"
            "config fields (for --set NAME=VALUE): moesim config [--preset P]")
