"""``moesim config``: list every config field with its type, value and meaning (``moesim.fields``).

    moesim config                          # defaults
    moesim config --preset paper-s1        # the values of a preset (changed ones marked '*')
    moesim config --preset official-s1 --model single-linear --set n_train=400
"""

from __future__ import annotations

import argparse

from ..arguments import add_config_arguments, presets_epilog


def configure_parser(p: argparse.ArgumentParser) -> None:
    from ..fields import __doc__ as fields_doc

    p.description = fields_doc.split("\n\n")[0].replace("``", "")
    add_config_arguments(p, default_preset=None, preset_default_text="none")
    for action in p._actions:
        if action.dest == "preset":
            action.help = "show this preset's values (default: the defaults of Config)"
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (presets_epilog().rsplit("\n", 1)[0]
                + "\nChange a field in any command with --set NAME=VALUE (ranges: --set gamma_range=0.5,2).")


def main(args: argparse.Namespace) -> int:
    from ..arguments import config_from_args, overrides_from_args
    from ..config import MODELS, Config, ConfigError
    from ..fields import render

    if args.preset is not None:
        cfg = config_from_args(args)
    else:  # the defaults, with --model / --set / --device / --dtype on top
        if args.model is not None and args.model not in MODELS:
            raise ConfigError(f"model={args.model!r} is not allowed; choose one of: {', '.join(MODELS)}")
        cfg = Config().replace(**dict(MODELS.get(args.model, {}), **overrides_from_args(args)))
    title = f"preset {args.preset}" if args.preset else "defaults"
    print(f"moesim config: {title}{f', model {args.model}' if args.model else ''} ('*': differs from the default)")
    print(render(cfg))
    return 0
