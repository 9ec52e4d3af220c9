"""Weakly-supervised localization on ILSVRC 2012 val, Pascal VOC 2012 val or CUB-200-2011 test
(the paper's Tables 1-3).

    python localization.py --method agcam --data_root ./ILSVRC --threshold 0.5
    python localization.py --dataset voc --data_root ./VOC --checkpoint voc_vit/model.pth

For each image the model classifies correctly, the box drawn from the method's heatmap is compared
with the ground-truth boxes; the script prints the mean pixel accuracy, IoU, Dice, precision and
recall. Several thresholds at once: ``--threshold 0.3 0.5 0.7`` (maps are computed once). Several
processes or GPUs: ``torchrun --nproc_per_node N localization.py ...``. See README.md
(Weakly-supervised localization).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from agcam.cli import (UsageError, add_dataset_args, add_method_arg, add_model_args, add_run_args,
                       check_run_args, dataset_from_args, samples_from_args, script_entry,
                       start_run)

SAMPLES_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "ILSVRC")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "localization", description="Weakly-supervised localization on ILSVRC 2012 val, VOC "
        "2012 val or CUB-200-2011 test: pixel accuracy, IoU, Dice, precision and recall of the "
        "box drawn from each heatmap.")
    add_method_arg(parser)
    add_dataset_args(parser)
    parser.add_argument("--data_root", default=None,
                        help="ILSVRC root holding Data/CLS-LOC/val and Annotations/CLS-LOC/val "
                             "(default: the small set in samples/ILSVRC); for voc the folder "
                             "holding VOCdevkit/, for cub the one holding CUB_200_2011/")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5],
                        help="threshold(s) on the [0, 1] heatmap, e.g. 0.5 or 0.3 0.5 0.7 "
                             "(default: 0.5)")
    add_model_args(parser)
    add_run_args(parser)
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="write localization_<method>.csv (per image) and "
                             "localization_<method>.json (means) into DIR")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before anything heavy starts (UsageError names the flag)."""
    check_run_args(args)
    for threshold in args.threshold:
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise UsageError(f"--threshold {threshold:g}: outside [0, 1]")
    if len(set(args.threshold)) != len(args.threshold):
        raise UsageError(f"--threshold {' '.join(f'{t:g}' for t in args.threshold)}: "
                         "a threshold is given twice")
    if args.output is not None:
        if os.path.exists(args.output) and not os.path.isdir(args.output):
            raise UsageError(f"--output {args.output}: exists and is not a directory")
        try:
            os.makedirs(args.output, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--output {args.output}: cannot be created ({exc.strerror})")


def main(args: argparse.Namespace) -> int:
    from agcam import distributed
    from agcam.datasets import make_loader
    from agcam.decode import collate_for, decoded_batches, make_dataset
    from agcam.registry import get_explainer
    from agcam.localization import Timer, evaluate, report_lines, summarize, write_outputs

    check_args(args)
    spec = dataset_from_args(args)
    listing = samples_from_args(args, SAMPLES_ROOT)
    samples = listing.samples
    ctx, model = start_run(args, spec)
    try:
        if ctx.is_main:
            print(listing.describe(), flush=True)
        explainer = get_explainer(args.method, model, precision=args.precision)
        dataset = make_dataset(samples, model, keep_image=False, decode=args.decode)
        loader = make_loader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                             rank=ctx.rank, world_size=ctx.world_size,
                             pin_memory=ctx.device.type == "cuda",
                             collate_fn=collate_for(dataset))
        loader = decoded_batches(loader, dataset, ctx.device)
        timer = Timer()
        results = evaluate(explainer, loader, samples, args.threshold,
                           progress=ctx.is_main and not args.no_progress,
                           total=len(loader.dataset), timer=timer)
        results = distributed.gather_to_main(results, ctx)
        if not ctx.is_main:
            return 0
        results.sort(key=lambda r: r.index)
        summary = summarize(results, args.threshold, args.method, args.model,
                            extra={"dataset": spec.name, "split": listing.split,
                                   "listed": listing.listed, "dropped": listing.dropped,
                                   "checkpoint": args.checkpoint, "data_root": args.data_root,
                                   "world_size": ctx.world_size, "precision": args.precision,
                                   "decode": args.decode})
        for line in report_lines(summary):
            print(line)
        if summary["num_images"] == 0:
            print("warning: no image was classified correctly; the means are undefined",
                  file=sys.stderr)
        print(f"time: {timer.total:.1f} s for {timer.images} images on rank 0 "
              f"({timer.images / max(timer.total, 1e-9):.1f} images/s): maps "
              f"{100 * timer.share(timer.explain):.1f}%, waiting for data "
              f"{100 * timer.share(timer.data):.1f}%, boxes and metrics "
              f"{100 * timer.share(timer.boxes):.1f}% (in a background thread; the loop waited "
              f"{100 * timer.share(timer.boxes_wait):.1f}% for them)", flush=True)
        if args.output is not None:
            paths = write_outputs(args.output, results, summary, args.threshold)
            print(f"wrote {paths['csv']} and {paths['json']}")
        return 0
    finally:
        distributed.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
