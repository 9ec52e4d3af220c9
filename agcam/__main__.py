"""``agcam COMMAND ...`` (or ``python -m agcam COMMAND ...``): every subcommand of the package.

This is the program on top of the house, like the top-level scripts. Each command is a module
with ``add_arguments(parser)`` and ``main(args) -> exit code``, named in :data:`COMMANDS` with a
one-line summary; adding a command is adding an entry there. Only the module of the command
given is imported, after the summaries are shown and before its arguments are parsed, and the
command modules import nothing heavy at their top: ``agcam --help``, ``agcam explain --help``
and a mistyped flag answer without loading torch (``agcam bench-startup`` times them). The
top-level scripts (``localization.py``, ``save_h5.py``, ``ABPC.py``, ``perturbation.py``,
``segmentation.py``) keep the paper's flags and stay scripts.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, Iterable, Optional, Sequence, Tuple

from agcam.cli.common import plain_text, run_main

#: name -> (the command's module, its one-line summary for ``agcam --help``)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "explain": ("agcam.cli.explain",
                "explain your own images: the top-5 classes and a PNG per method"),
    "evaluate": ("agcam.cli.evaluate",
                 "every method x every evaluation in one run, one report"),
    "bench": ("agcam.cli.bench",
              "seconds per image of the forward pass and of each method, side by side"),
    "bench-abpc": ("agcam.cli.bench_abpc",
                   "batched ABPC against the released one-image loop, side by side"),
    "bench-perturbation": ("agcam.cli.bench_perturbation",
                           "batched perturbation tests against a one-image loop, side by side"),
    "bench-evaluate": ("agcam.cli.bench_evaluate",
                       "agcam evaluate against the six separate runs, side by side"),
    "bench-lrp": ("agcam.cli.bench_lrp",
                  "LRP against its forward pass, an older LRP or the released save_h5.py"),
    "bench-startup": ("agcam.cli.bench_startup",
                      "start-up time of every script and command: --help and a usage error"),
    "finetune": ("agcam.cli.finetune", "fine-tune the paper's ViT on Pascal VOC or CUB-200"),
    "convert": ("agcam.cli.convert", "a Hugging Face checkpoint as a timm checkpoint"),
    "app": ("agcam.cli.app", "a page to look at explanations in a browser"),
    "make-synthetic": ("agcam.cli.make_synthetic",
                       "write the synthetic held-out set (boxes right by construction)"),
    "train-learnt": ("agcam.cli.train_learnt",
                     "train vit_agcam_learnt on the synthetic shapes (CPU, seeded)"),
    "train-clip": ("agcam.cli.train_clip",
                   "train clip_agcam_learnt on captioned synthetic shapes (CPU, seeded)"),
    "study": ("agcam.cli.study",
              "every method and two floors on the learnt model: one table"),
    "figures": ("agcam.cli.figures",
                "redraw every committed figure and the learnt-model page"),
}


def command_module(name: str):
    """The module of command ``name`` (imported on first use)."""
    return importlib.import_module(COMMANDS[name][0])


def get_args_parser(load: Optional[Iterable[str]] = None) -> argparse.ArgumentParser:
    """The ``agcam`` parser; ``load``: the commands whose flags are added (default: every one;
    :func:`entry` loads only the command given)."""
    load = set(COMMANDS) if load is None else set(load)
    parser = argparse.ArgumentParser(prog="agcam",
                                     description="Attention Guided CAM for Vision Transformers")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        if name not in load:
            commands.add_parser(name, help=summary)
            continue
        module = command_module(name)
        sub = commands.add_parser(name, help=summary, description=plain_text(module.__doc__),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    return parser


def main(args: argparse.Namespace) -> int:
    return command_module(args.command).main(args)


def on_interrupt(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves: the command's own account (its ``on_interrupt(args)``), if it has
    one."""
    report = getattr(command_module(args.command), "on_interrupt", None)
    return report(args) if report is not None else "stopped before the end (Ctrl-C)"


def chosen_command(argv: Sequence[str]) -> Optional[str]:
    """The command ``argv`` names (its first word that is not an option), if any."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def entry(argv=None) -> int:
    """Parse ``argv``, run the command; user errors print one line and give exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = chosen_command(argv)
    return run_main(main, get_args_parser(load=[name] if name else []).parse_args(argv),
                    on_interrupt)


if __name__ == "__main__":
    sys.exit(entry())
