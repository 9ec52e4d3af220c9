"""``agcam bench``: seconds per image of the plain forward pass and of each method, side by side.

    agcam bench [--model vit_base_patch16_224] [--batch_sizes 1 8] [--repeats 5]
                [--method agcam lrp rollout ...] [--abpc_images 8] [--device cuda]
                [--precision fp32|tf32|bf16]

Random weights (nothing is downloaded). For every batch size the plain forward pass and every
method are timed in turns within the same repeat, so the ratios compare runs made under the same
machine load; the median of the repeats is reported, then images per second, the figure to
compare between machines. A method that refuses ``--precision`` (LRP at bf16) is shown as
refused. The ABPC stage is compared with the released procedure's cost in the same run. What is
timed: agcam/bench/methods.py.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import (
    add_method_arg,
    add_model_args,
    add_precision_arg,
    add_repeats_arg,
    add_threads_arg,
    resolve_device,
    resolve_methods,
    typed,
)

#: the benchmarks time an architecture with random weights (nothing is downloaded)
BENCH_MODEL = "vit_base_patch16_224"


def add_bench_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model`` (random weights), ``--device``, ``--threads``: every benchmark's start."""
    add_model_args(parser, default=BENCH_MODEL, default_text=f"{BENCH_MODEL}, random weights",
                   checkpoint=False)
    add_threads_arg(parser)


def resolve_bench_device(args: argparse.Namespace) -> None:
    """``--device`` as the benchmarks take it: a name (``cpu``, ``cuda``, ``cuda:1``)."""
    args.device = str(resolve_device(args.device))


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add_bench_model_args(parser)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8],
                        help="the batch sizes timed (default: 1 8)")
    add_method_arg(parser, default=("all",))
    add_repeats_arg(parser, 5)
    add_precision_arg(parser)
    parser.add_argument("--abpc_images", type=int, default=8,
                        help="images for the ABPC benchmark, 0 skips it (default: 8)")
    parser.add_argument("--clip", default=None, metavar="MODEL",
                        help="time the zero-shot classifier of an image-text model instead "
                             "(clip_agcam_learnt, hf:<repo>, open_clip:<arch>/<pretrained>; its "
                             "own weights): the cost of explaining a prompt against a forward")
    parser.add_argument("--clip_text", nargs="+", default=None, metavar="PROMPT",
                        help="the prompts of --clip (default: 'a photo of a cat' 'a photo of "
                             "a dog')")
    return parser


def main(args: argparse.Namespace) -> int:
    args.methods = resolve_methods(args.method, flag=typed(args, "method"))
    resolve_bench_device(args)
    from agcam.bench.methods import main as run
    return run(args)
