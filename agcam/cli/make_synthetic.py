"""``agcam make-synthetic``: write the synthetic held-out set, boxes right by construction.

    agcam make-synthetic --out samples/synthetic      # rewrites the committed set

Writes ``<out>/ILSVRC`` (the ILSVRC validation layout: JPEGs by class folder and a box file per
image, what ``--dataset synthetic --data_root <out>/ILSVRC`` reads) and ``<out>/pairs`` (the
two-object images). Every image is a function of the seed and its index only. The data set:
agcam/datasets/synthetic.py and samples/synthetic/README.md.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import add_out_arg, check_at_least


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_out_arg(parser, "a folder to write ILSVRC/ and pairs/ into", required=True)
    parser.add_argument("--per_class", type=int, default=20,
                        help="single-object images per class (default: 20)")
    parser.add_argument("--pairs", type=int, default=16,
                        help="two-object images (default: 16)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: the committed set's)")
    return parser


def main(args: argparse.Namespace) -> int:
    check_at_least(args, "per_class", "pairs", minimum=0)
    from agcam.datasets.synthetic import HELDOUT_SEED, write_heldout
    seed = HELDOUT_SEED if args.seed is None else args.seed
    for root in write_heldout(args.out, args.per_class, args.pairs, seed):
        print(root)
    return 0
