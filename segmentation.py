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
    add_data_run_args,
    add_dataset_arg,
    add_method_arg,
    add_out_arg,
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
    add_data_run_args(parser)
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
    """The segmentation evaluation of agcam evaluate's runner, written as before."""
    import time

    from agcam import distributed
    from agcam.cli.scratch import scratch_run

    path = check_args(args)
    ctx, model = start_run(args)
    tick = time.perf_counter()
    try:
        with scratch_run(ctx, model, "segmentation", methods=args.methods,
                         evaluations=["segmentation"], model=args.model, dataset=DATASET,
                         data_root=path, checkpoint=args.checkpoint, limit=args.limit,
                         batch_size=args.batch_size, precision=args.precision,
                         num_workers=args.num_workers, progress=not args.no_progress
                         ) as (results, work):
            if results is not None:
                write_results(args, ctx, results, work, time.perf_counter() - tick)
        return 0
    finally:
        distributed.cleanup(ctx)


def write_results(args, ctx, results, work, seconds: float) -> None:
    """What the script prints and writes, from the runner's records in ``work``."""
    from agcam.evaluation.run import method_records
    from agcam.evaluation.segmentation import (
        Segmentation,
        summarize,
        table_lines,
        write_outputs,
        write_table,
    )

    evaluation = Segmentation()
    data = results["dataset"]
    summaries, per_method = [], {}
    for method in args.methods:
        context, records = method_records(work, method, "segmentation")
        per_method[method] = evaluation.images(records, context)
        summaries.append(summarize(per_method[method], method, extra={
            "model": args.model, "checkpoint": args.checkpoint, "data_root": args.data_root,
            "listed": data["listed"], "unreadable": data["unreadable"],
            "target": "predicted", "heatmap": "localization (bilinear x patch, min-max)",
            "threshold": "mean (strict >)", "world_size": ctx.world_size,
            "precision": args.precision}))
    for line in table_lines(summaries):
        print(line)
    if data["unreadable"]:
        print(f"warning: {data['unreadable']} unreadable image(s) left out", file=sys.stderr)
    print(f"time: {seconds:.1f} s for {data['images']} images on rank 0; maps and "
          "metrics per method: " + ", ".join(f"{m['name']} {m['seconds']:.1f} s"
                                            for m in results["methods"]), flush=True)
    if args.out is not None:
        written = []
        for summary in summaries:
            written += write_outputs(args.out, per_method[summary["method"]], summary)
        written += write_table(args.out, summaries)
        print("wrote " + ", ".join(written))


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
