"""Chefer et al.'s segmentation test on ImageNet-Segmentation (CVPR 2021, "Transformer
Interpretability Beyond Attention Visualization"): pixel accuracy, mIoU and mAP of each method's
map of the predicted class against the foreground masks.

    python segmentation.py --data_root ./imagenet_seg --method agcam
    python segmentation.py --data_root ./imagenet_seg/gtsegs_ijcv.mat --method all --out results
    torchrun --nproc_per_node 4 segmentation.py --data_root ./imagenet_seg --method all

``--data_root`` is the folder holding ``gtsegs_ijcv.mat`` (MATLAB v7.3) or the file itself. The
map is upsampled x patch size (bilinear), min-max normalised and thresholded at its mean;
see agcam/evaluation/segmentation.py and docs/segmentation.md for what is computed exactly.
"""
from __future__ import annotations

import argparse
import sys

from agcam.cli.common import (
    UsageError,
    add_dataset_arg,
    add_method_arg,
    add_model_args,
    add_out_arg,
    add_run_args,
    check_out_dir,
    check_run_args,
    script_entry,
    start_run,
)

#: the one data set of this test (``--dataset`` takes its name, as every evaluation does)
DATASET = "imagenet_seg"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "segmentation", description="Chefer et al.'s segmentation test on ImageNet-Segmentation: "
        "pixel accuracy, mIoU and mAP of each method's map (percent).")
    add_method_arg(parser)
    add_dataset_arg(parser, names=(DATASET,), default=DATASET)
    parser.add_argument("--data_root", default=None,
                        help="the folder holding gtsegs_ijcv.mat (ImageNet-Segmentation, MATLAB "
                             "v7.3) or the file itself")
    add_model_args(parser)
    add_run_args(parser)
    add_out_arg(parser, "a folder for segmentation_<method>.csv (per image) and "
                "segmentation_<method>.json per method, and the table of every method, "
                "segmentation_table.csv and .md", aliases=("--output",))
    return parser


def check_args(args: argparse.Namespace) -> str:
    """Every flag checked before anything heavy starts; returns the .mat file's path."""
    if args.dataset.lower().replace("-", "_") != DATASET:
        raise UsageError(f"--dataset {args.dataset}: segmentation.py runs Chefer's test on "
                         f"{DATASET} (ImageNet-Segmentation) only")
    from agcam.datasets.imagenet_seg import count_images, find_mat_file

    check_run_args(args)
    if args.decode != "pil":
        raise UsageError(f"--decode {args.decode}: ImageNet-Segmentation's images are arrays in "
                         "the .mat file; only pil applies")
    path = find_mat_file(args.data_root)
    count_images(path)
    check_out_dir(args)
    return path


def main(args: argparse.Namespace) -> int:
    import time

    from agcam import distributed
    from agcam.datasets import make_loader
    from agcam.datasets.imagenet_seg import SegmentationDataset, collate_segmentation
    from agcam.evaluation.segmentation import (
        evaluate_methods,
        summarize,
        table_lines,
        write_outputs,
        write_table,
    )
    from agcam.registry import get_explainer

    path = check_args(args)
    ctx, model = start_run(args)
    try:
        dataset = SegmentationDataset(path, model, limit=args.limit)
        if ctx.is_main:
            print(f"data set imagenet-segmentation: {dataset.listed} listed, {len(dataset)} used "
                  f"({path})", flush=True)
        explainers = {method: get_explainer(method, model, precision=args.precision)
                      for method in args.methods}
        loader = make_loader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                             rank=ctx.rank, world_size=ctx.world_size,
                             pin_memory=ctx.device.type == "cuda",
                             collate_fn=collate_segmentation)
        tick = time.perf_counter()
        result = evaluate_methods(explainers, loader, progress=ctx.is_main and not args.no_progress,
                                  total=len(loader.dataset))
        seconds = time.perf_counter() - tick
        parts = distributed.gather_to_main([result], ctx)   # one result per process
        if not ctx.is_main:
            return 0
        unreadable = sorted(i for part in parts for i in part["unreadable"])
        summaries, per_method = [], {}
        for method in args.methods:
            images = sorted((im for part in parts for im in part["images"][method]),
                            key=lambda im: im.index)
            per_method[method] = images
            summaries.append(summarize(images, method, extra={
                "model": args.model, "checkpoint": args.checkpoint, "data_root": args.data_root,
                "listed": dataset.listed, "unreadable": len(unreadable),
                "target": "predicted", "heatmap": "localization (bilinear x patch, min-max)",
                "threshold": "mean (strict >)", "world_size": ctx.world_size,
                "precision": args.precision}))
        for line in table_lines(summaries):
            print(line)
        if unreadable:
            print(f"warning: {len(unreadable)} unreadable image(s) left out: "
                  f"{', '.join(map(str, unreadable[:10]))}", file=sys.stderr)
        print(f"time: {seconds:.1f} s for {len(loader.dataset)} images on rank 0; maps and "
              "metrics per method: " + ", ".join(f"{m} {result['seconds'][m]:.1f} s"
                                                for m in args.methods), flush=True)
        if args.out is not None:
            written = []
            for summary in summaries:
                written += write_outputs(args.out, per_method[summary["method"]], summary)
            written += write_table(args.out, summaries)
            print("wrote " + ", ".join(written))
        return 0
    finally:
        distributed.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
