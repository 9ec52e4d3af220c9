"""``agcam train-clip``: train clip_agcam_learnt from scratch on captioned synthetic shapes.

    agcam train-clip                                   # writes models/weights/clip_agcam_learnt.*
    agcam train-clip --out /tmp/c.safetensors --steps 200     # a shorter run

On a CPU, seeded: images drawn on the fly with a caption naming some of an object's colour,
texture and shape ("red", "a striped circle"); CLIP's symmetric contrastive loss over the batch
plus a contrastive term per attribute (each image against the prompts of one kind's words).
The weights are written as float16 safetensors, the log (arguments, time, zero-shot accuracy on
the held-out set and per attribute on fresh images) beside them as .json. The training:
agcam/train/clip.py; the model: docs/clip.md.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import add_training_args, check_training_args


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_training_args(parser, "clip_agcam_learnt", steps=3000, batch_size=64, pair_fraction=0.5,
                      workers=2)
    group = parser.add_argument_group("the CLIP recipe")
    group.add_argument("--large_fraction", type=float, default=0.5,
                       help="share of the one-object images whose object is large, 0.5 to 0.9 "
                            "of the image's side (default: 0.5)")
    group.add_argument("--full_caption", type=float, default=0.0,
                       help="probability that a caption names colour, texture and shape "
                            "(default: 0)")
    group.add_argument("--attribute_weight", type=float, default=1.0,
                       help="weight of the per-attribute contrastive term; 0: CLIP's loss only "
                            "(default: 1)")
    group.add_argument("--text_lock", type=int, default=300,
                       help="steps during which the text tower keeps its random weights "
                            "(default: 300)")
    return parser


def main(args: argparse.Namespace) -> int:
    from models.clip import LEARNT_CLIP_WEIGHTS
    check_training_args(args, LEARNT_CLIP_WEIGHTS)
    from agcam.train.clip import run
    return run(args)
