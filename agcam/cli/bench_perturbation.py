"""``agcam bench-perturbation``: the batched perturbation tests against a one-image loop.

    agcam bench-perturbation [--model vit_base_patch16_224] [--images 8] [--batch_size 64]
                             [--repeats 1] [--device cpu]

For each test (Chefer's positive and negative, RISE's insertion and deletion) and for all four in
one pass, the batched engine and a loop that runs the test one image and one step at a time, as
the original scripts do, are timed in turns within each repeat (median over repeats) on random
images and heatmaps; their curves are compared. What is timed: agcam/bench/perturbation.py.
"""
from __future__ import annotations

import argparse

from agcam.cli.bench import add_bench_model_args, resolve_bench_device
from agcam.cli.common import add_batch_size_arg, add_images_arg, add_repeats_arg


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_bench_model_args(parser)
    add_images_arg(parser, 8)
    add_batch_size_arg(parser, 64)
    add_repeats_arg(parser, 1)
    return parser


def main(args: argparse.Namespace) -> int:
    resolve_bench_device(args)
    from agcam.bench.perturbation import main as run
    return run(args)
