"""The ``moesim`` command line.

The entry point, on top of the subcommands (``moesim.commands``, one module each):

    moesim run        train models                        (moesim.commands.run)
    moesim verify     check every claim of the paper      (moesim.commands.verify -> moesim.verify)
    moesim reproduce  the paper's Table 1 protocol        (moesim.commands.reproduce -> moesim.reproduce)
    moesim book       re-run a book chapter               (moesim.commands.book -> moesim.bookrun)
    moesim sweep      parameter sweeps on Dask            (moesim.commands.sweep -> moesim.sweeps)
    moesim config     list the config fields              (moesim.commands.config -> moesim.fields)
    moesim replay     the official notebooks' own runs    (moesim.commands.replay -> moesim.replay)

Only the chosen subcommand's module is imported (``moesim --help`` and ``moesim run --help`` stay
fast). Nothing imports this module: it is the console script ``moesim`` and ``python -m moesim``.
Bad input (unknown preset, model, field, wrong value type, impossible sizes) ends with one
message naming the parameter and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .arguments import UsageError
from .commands import SUBCOMMANDS


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``moesim``; of the subcommands only the one ``argv`` (default ``sys.argv[1:]``)
    names is configured (its module imported): ``moesim --help`` lists them without importing any."""
    from . import __version__

    argv = sys.argv[1:] if argv is None else argv
    chosen = argv[0] if argv else None
    parser = argparse.ArgumentParser(prog="moesim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"moesim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.set_defaults(_module=module)
        if name != chosen:
            continue  # only the chosen subcommand's module is imported
        try:
            importlib.import_module(module).configure_parser(sp)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            sp.set_defaults(_missing=True)
    return parser


def cli(argv: list[str] | None = None) -> int:
    """Entry point of the ``moesim`` command."""
    from .config import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"moesim: error: the '{args.command}' command is not available in this version", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except (ConfigError, UsageError) as err:
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values found while building the run (device, seeds, ...)
        print(f"moesim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moesim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a reader that stopped early (e.g. `| head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    # run through the imported module so that subcommands raise the same UsageError class
    from moesim.cli import cli as _cli

    sys.exit(_cli())
