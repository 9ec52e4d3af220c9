"""``python -m agcam COMMAND ...``: the package's command line (``explain`` for now).

Each command is a module with ``add_arguments(parser)`` and ``main(args) -> exit code``; adding
one is adding an entry to :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import sys

from agcam import explain_cli
from agcam.cli import run_main

COMMANDS = {
    "explain": explain_cli,
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agcam",
                                     description="Attention Guided CAM for Vision Transformers")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        doc = (module.__doc__ or "").strip().splitlines()
        summary = doc[0].split(": ", 1)[-1] if doc else name
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
