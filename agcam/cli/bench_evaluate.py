"""agcam bench-evaluate: agcam evaluate --eval all against the six separate runs, side by side.

    agcam bench-evaluate [--model vit_agcam_learnt] [--method agcam rollout lrp] [--images 16]

The six runs a comparison table took before the runner (localization.py --maxboxacc, save_h5.py
for the label and for the predicted class, ABPC.py, perturbation.py, segmentation.py) against
agcam evaluate's two (--eval all; --eval segmentation on the data set with masks), each as a
whole process, on the same model, methods and images, in turns: wall times, ratio, and whether
every number is equal. What is timed: agcam/bench/evaluate.py.
"""
from __future__ import annotations

import argparse
import os

from agcam.cli.common import (
    add_batch_size_arg,
    add_dataset_arg,
    add_images_arg,
    add_method_arg,
    add_model_args,
    add_repeats_arg,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEGMENTATION_FIXTURE = os.path.join(ROOT, "tests", "fixtures", "imagenet_seg", "gtsegs_ijcv.mat")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_method_arg(parser, default=["agcam", "rollout", "lrp"])
    add_model_args(parser, default="vit_agcam_learnt",
                   default_text="vit_agcam_learnt, offline")
    add_dataset_arg(parser, default="synthetic",
                    default_text="synthetic, the learnt model's held-out set")
    parser.add_argument("--data_root", default=os.path.join(ROOT, "samples", "synthetic",
                                                            "ILSVRC"),
                        help="its folder (default: samples/synthetic/ILSVRC)")
    parser.add_argument("--seg_root", default=SEGMENTATION_FIXTURE,
                        help="ImageNet-Segmentation's gtsegs_ijcv.mat (default: the test "
                             "fixture); 'none' leaves segmentation out of both sides")
    add_images_arg(parser, 16)
    add_batch_size_arg(parser, 16)
    add_repeats_arg(parser, 1)
    return parser


def main(args: argparse.Namespace) -> int:
    from agcam.bench.evaluate import main as run
    return run(args)
