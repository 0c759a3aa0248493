"""The subcommands of ``moesim``, one module each (``configure_parser(parser)`` and ``main(args) -> int``).

Each module holds only its argparse definition (with the shared flags of ``moesim.arguments``) and
a ``main`` that turns the arguments into calls of the library; ``moesim.cli`` imports only the
chosen one. Adding a subcommand is one module here plus its line in ``SUBCOMMANDS``.
"""

#: name -> (module, one-line help), in the order ``moesim --help`` lists them.
SUBCOMMANDS = {
    "run": ("moesim.commands.run", "train models on the paper's data and write their results"),
    "verify": ("moesim.commands.verify", "check every claim of the paper and print a verdict table"),
    "reproduce": ("moesim.commands.reproduce", "run the paper's Table 1 protocol"),
    "book": ("moesim.commands.book", "re-execute a book chapter with other parameters"),
    "sweep": ("moesim.commands.sweep", "run a parameter grid on Dask into a run store"),
    "config": ("moesim.commands.config",
               "list every config field: type, default (or a preset's value) and meaning"),
    "replay": ("moesim.commands.replay",
               "replay an official demo notebook's runs and compare them with its printed output"),
}
