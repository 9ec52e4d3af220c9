"""agcam bench-lrp: LRP (Transformer Attribution) side by side, in one run, in turns.

    agcam bench-lrp [--images 12] [--repeats 3] [--threads 2] [--before FILE]
    agcam bench-lrp --whole --data_root DIR --checkpoint FILE --released_command "CMD"

In-process: LRP as a multiple of the forward pass (--before FILE: an older baselines/lrp.py in
the same turns, maps compared to the bit). --whole: save_h5.py --method lrp against the released
save_h5.py, whole processes, in turns. What is timed: agcam/bench/lrp.py.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import add_images_arg, add_model_args, add_repeats_arg, add_threads_arg


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_model_args(parser, default="vit_base_patch16_224",
                   default_text="vit_base_patch16_224, random weights; --whole: with "
                                "--checkpoint")
    add_images_arg(parser, 12)
    add_repeats_arg(parser, 3)
    add_threads_arg(parser, 2)
    parser.add_argument("--before", default=None, metavar="FILE",
                        help="an older baselines/lrp.py, timed in turns with ours")
    parser.add_argument("--whole", action="store_true",
                        help="time whole save_h5.py processes against --released_command "
                             "(their OMP_NUM_THREADS: --threads)")
    parser.add_argument("--data_root", default=None,
                        help="--whole: the ILSVRC-layout folder both runs explain")
    parser.add_argument("--released_command", default=None, metavar="CMD",
                        help="--whole: shell command running the released save_h5.py --method "
                             "lrp on the same images")
    return parser


def main(args: argparse.Namespace) -> int:
    from agcam.bench.lrp import main as run
    return run(args)
