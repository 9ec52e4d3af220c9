"""``agcam COMMAND ...`` (or ``python -m agcam COMMAND ...``): every subcommand of the package.

This is the program on top of the house, like the top-level scripts: it imports the commands
(:mod:`agcam.cli.explain`, :mod:`agcam.cli.convert`, :mod:`agcam.bench`, :mod:`agcam.train`),
which import the library below them.

Each command is a module with ``add_arguments(parser)`` and ``main(args) -> exit code``; adding
one is adding an entry to :data:`COMMANDS`. The top-level scripts (``localization.py``,
``save_h5.py``, ``ABPC.py``) keep the paper's flags and stay scripts.
"""
from __future__ import annotations

import argparse
import sys

from agcam.bench import abpc as bench_abpc
from agcam.bench import methods as bench_methods
from agcam.bench import perturbation as bench_perturbation
from agcam.cli import convert, explain
from agcam.cli.common import run_main
from agcam.train import finetune

COMMANDS = {
    "explain": explain,
    "bench": bench_methods,
    "bench-abpc": bench_abpc,
    "bench-perturbation": bench_perturbation,
    "finetune": finetune,
    "convert": convert,
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agcam",
                                     description="Attention Guided CAM for Vision Transformers")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip().splitlines()
        summary = doc[0].split(": ", 1)[-1].rstrip(".") if doc else name
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(command_main=module.main)
    return parser


def main(args: argparse.Namespace) -> int:
    return args.command_main(args)


def entry(argv=None) -> int:
    """Parse ``argv``, run the command; user errors print one line and give exit code 2."""
    return run_main(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(entry())
