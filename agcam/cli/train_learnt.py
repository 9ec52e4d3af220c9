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

from agcam.cli.common import add_training_args, check_training_args


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_training_args(parser, "vit_agcam_learnt", steps=1000, batch_size=32, pair_fraction=0.2)
    return parser


def get_args_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        "agcam train-learnt", description="Train vit_agcam_learnt on the synthetic shapes."))


def main(args: argparse.Namespace) -> int:
    from models.learnt import LEARNT_WEIGHTS
    check_training_args(args, LEARNT_WEIGHTS)
    from agcam.train.learnt import run
    return run(args)
