"""``agcam bench-abpc``: batched ABPC against the released one-image loop, side by side.

    agcam bench-abpc [--model vit_base_patch16_224] [--images 8] [--batch_size 8]

The released ABPC.py runs 22 single-image forward passes per image (11 steps x LeRF/MoRF). Both
are timed in the same run, in turns, on random images and heatmaps, and their curves compared.
What is timed: agcam/bench/abpc.py.
"""
from __future__ import annotations

import argparse

from agcam.cli.bench import add_bench_model_args, resolve_bench_device
from agcam.cli.common import add_batch_size_arg, add_images_arg, add_repeats_arg


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_bench_model_args(parser)
    add_images_arg(parser, 8)
    add_batch_size_arg(parser, 8)
    add_repeats_arg(parser, 1)
    parser.add_argument("--baseline_images", type=int, default=2,
                        help="images the released loop is timed on (default: 2)")
    return parser


def main(args: argparse.Namespace) -> int:
    resolve_bench_device(args)
    from agcam.bench.abpc import main as run
    return run(args)
