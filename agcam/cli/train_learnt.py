"""``agcam train-learnt``: train vit_agcam_learnt from scratch on the synthetic shapes.

    agcam train-learnt                                  # writes models/weights/vit_agcam_learnt.*
    agcam train-learnt --out /tmp/w.safetensors --steps 200   # a shorter run

On a CPU, seeded: the images are drawn on the fly and preprocessed as the scripts preprocess the
held-out JPEGs; AdamW, warm-up then cosine decay. The weights are written as float16
safetensors, the log (arguments, time, accuracy on the held-out set and on fresh images) beside
them as .json. The training: agcam/train/learnt.py; the model: docs/datasets.md.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import (
    add_batch_size_arg,
    add_out_arg,
    add_seed_arg,
    add_threads_arg,
    check_at_least,
)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps (default: 1000)")
    add_batch_size_arg(parser, 32)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up steps (default: 50)")
    parser.add_argument("--weight_decay", type=float, default=0.05,
                        help="weight decay (default: 0.05)")
    parser.add_argument("--pair_fraction", type=float, default=0.2,
                        help="share of training images with two objects (default: 0.2)")
    add_seed_arg(parser)
    add_threads_arg(parser, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="data-loader worker processes drawing the images (default: 1)")
    parser.add_argument("--log_every", type=int, default=50,
                        help="steps between two log lines (default: 50)")
    add_out_arg(parser, "the weights file (.safetensors); the log goes beside it as .json",
                metavar="FILE",
                default_text="the committed models/weights/vit_agcam_learnt.safetensors")
    parser.add_argument("--heldout", default=None,
                        help="the held-out set to report the accuracy on (default: "
                             "samples/synthetic/ILSVRC)")
    parser.add_argument("--fresh_images", type=int, default=1000,
                        help="fresh single-object images to report the accuracy on "
                             "(default: 1000)")
    return parser


def get_args_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        "agcam train-learnt", description="Train vit_agcam_learnt on the synthetic shapes."))


def main(args: argparse.Namespace) -> int:
    check_at_least(args, "steps", "batch_size", "threads")
    check_at_least(args, "workers", "warmup", "fresh_images", minimum=0)
    from agcam.train.learnt import HELDOUT_ROOT, run
    from models.learnt import LEARNT_WEIGHTS
    args.out = args.out or LEARNT_WEIGHTS
    args.heldout = args.heldout or HELDOUT_ROOT
    return run(args)
