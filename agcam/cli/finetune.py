"""``agcam finetune``: fine-tune the paper's ViT on Pascal VOC 2012 or CUB-200-2011.

    agcam finetune --dataset voc --data_root ./VOC --out ./voc_vit
    agcam finetune --dataset cub --data_root ./CUB --out ./cub_vit
    torchrun --nproc_per_node 4 -m agcam finetune --dataset cub --data_root ./CUB ...

Neither data set has an ImageNet head: this starts from the paper's weights (the hub, or
``--checkpoint``), replaces the head by a zero-initialised one with the data set's classes and
trains every weight on the training split (VOC: the single-class images of train; CUB: train).
``<out>/model.pth`` is what ``localization.py``, ``save_h5.py`` and ``ABPC.py --checkpoint``
read, with its metadata in ``<out>/model.json``; ``<out>/last.pth`` is written after every epoch,
and the same command after a kill resumes from it. The training itself:
``agcam/train/finetune.py``; the recipe: docs/datasets.md.
"""
from __future__ import annotations

import argparse
import math
import os

from agcam.cli.common import (
    UsageError,
    add_batch_size_arg,
    add_dataset_arg,
    add_limit_arg,
    add_model_args,
    add_out_arg,
    add_progress_arg,
    add_seed_arg,
    add_workers_arg,
    check_at_least,
    default_num_workers,
    plain_text,
    typed,
)

#: the data sets with a training split
TUNABLE = ("voc", "cub")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_dataset_arg(parser, names=TUNABLE, default=None, default_text="none, required")
    parser.add_argument("--data_root", default=None,
                        help="voc: the folder holding VOCdevkit/; cub: the one holding "
                             "CUB_200_2011/")
    add_out_arg(parser, "a folder for model.pth, model.json and last.pth",
                default_text="./finetune_<dataset>", aliases=("--output",))
    add_model_args(parser)
    group = parser.add_argument_group("recipe (defaults: the one in docs/datasets.md)")
    group.add_argument("--epochs", type=int, default=10, help="epochs (default: 10)")
    add_batch_size_arg(group, 64)
    group.add_argument("--opt", default="sgd", help="timm optimizer name (default: sgd)")
    group.add_argument("--lr", type=float, default=0.01, help="peak learning rate (default: 0.01)")
    group.add_argument("--momentum", type=float, default=0.9, help="momentum (default: 0.9)")
    group.add_argument("--weight_decay", type=float, default=0.0,
                       help="weight decay (default: 0.0)")
    group.add_argument("--sched", default="cosine", help="timm scheduler name (default: cosine)")
    group.add_argument("--warmup_epochs", type=int, default=1,
                       help="warm-up epochs (default: 1)")
    group.add_argument("--warmup_lr", type=float, default=1e-5,
                       help="learning rate at the start of the warm-up (default: 1e-05)")
    group.add_argument("--min_lr", type=float, default=0.0,
                       help="learning rate at the end of the schedule (default: 0.0)")
    group.add_argument("--clip_grad", type=float, default=1.0,
                       help="gradient norm clipping, 0 for none (default: 1.0)")
    group.add_argument("--smoothing", type=float, default=0.0,
                       help="label smoothing (default: 0.0)")
    group.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0),
                       help="RandomResizedCrop scale range (default: 0.08 1.0)")
    group.add_argument("--color_jitter", type=float, default=0.4,
                       help="colour jitter strength (default: 0.4)")
    group.add_argument("--auto_augment", default=None,
                       help="timm auto-augment policy, e.g. rand-m9-mstd0.5 (default: none)")
    parser.add_argument("--train_split", default=None,
                        help="default: train (VOC: its single-class images)")
    parser.add_argument("--val_split", default=None,
                        help="split for the per-epoch accuracy (default: val for voc, test for "
                             "cub; 'none' for no validation)")
    add_limit_arg(parser)
    parser.add_argument("--val_limit", type=int, default=None,
                        help="only the first N validation images, by name (default: every one)")
    add_workers_arg(parser)
    add_seed_arg(parser)
    add_progress_arg(parser)
    return parser


def check_args(args: argparse.Namespace):
    """The data set and every flag, before anything heavy starts; returns the spec."""
    from agcam.datasets import get_dataset
    if args.dataset is None:
        raise UsageError(f"--dataset is required: {' or '.join(TUNABLE)}")
    spec = get_dataset(args.dataset)
    if spec.train_split is None:
        raise UsageError(f"--dataset {spec.name}: nothing to fine-tune (the paper's weights are "
                         "its classifier, and only its validation set is read)")
    if args.data_root is None:
        raise UsageError(f"--data_root not given: {spec.root_help}")
    check_at_least(args, "epochs", "batch_size", "limit", "val_limit")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr {args.lr}: must be positive")
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    check_at_least(args, "num_workers", minimum=0)
    if not 0 < args.scale[0] <= args.scale[1] <= 1:
        raise UsageError(f"--scale {args.scale[0]} {args.scale[1]}: need 0 < min <= max <= 1")
    args.dataset = spec.name
    args.train_split = args.train_split or spec.train_split
    if args.val_split is None:
        args.val_split = spec.eval_split
    if args.out is None:
        args.out = f"./finetune_{spec.name}"
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"{typed(args, 'out')} {args.out}: exists and is not a directory")
    return spec


def get_args_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        "agcam finetune", description=plain_text(__doc__.splitlines()[0])))


def on_interrupt(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves: the last finished epoch in ``<out>/last.pth``."""
    last = os.path.join(args.out or ".", "last.pth")
    if not os.path.isfile(last):
        return "no epoch was finished; nothing is kept"
    return f"the finished epochs are kept in {last}; the same command resumes from there"


def main(args: argparse.Namespace) -> int:
    spec = check_args(args)
    from agcam.train.finetune import run
    return run(args, spec)
