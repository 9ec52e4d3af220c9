"""Weakly-supervised localization on ILSVRC 2012 val, Pascal VOC 2012 val or CUB-200-2011 test
(the paper's Tables 1-3).

    python localization.py --method agcam --data_root ./ILSVRC --threshold 0.5
    python localization.py --dataset voc --data_root ./VOC --checkpoint voc_vit/model.pth
    python localization.py --method all --data_root ./ILSVRC --out results

For each image the model classifies correctly, the box drawn from the method's heatmap is compared
with the ground-truth boxes; the script prints the mean pixel accuracy, IoU, Dice, precision and
recall. Several thresholds at once: ``--threshold 0.3 0.5 0.7`` (maps are computed once). Several
methods at once: ``--method agcam gae`` or ``--method all`` (each image decoded once, every method
run on each batch; one table, a row per method). Several processes or
GPUs: ``torchrun --nproc_per_node N localization.py ...``. See docs/localization.md.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from agcam.cli.common import (
    UsageError,
    add_data_run_args,
    add_dataset_args,
    add_maxboxacc_step_arg,
    add_method_arg,
    add_out_arg,
    check_out_dir,
    check_run_args,
    dataset_from_args,
    samples_from_args,
    script_entry,
    start_run,
)

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
    parser.add_argument("--maxboxacc", action="store_true",
                        help="also MaxBoxAcc and MaxBoxAccV2 (Choe et al., CVPR 2020, as "
                             "clovaai/wsolevaluation): every image, the map of its label class, "
                             "the best threshold over the split; percent (docs/localization.md)")
    add_maxboxacc_step_arg(parser)
    add_data_run_args(parser)
    add_out_arg(parser, "a folder for localization_<method>.csv (per image) and "
                "localization_<method>.json (means) per method, and the table of every method, "
                "localization_table.csv and .md", aliases=("--output",))
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Every flag checked before anything heavy starts (UsageError names the flag)."""
    from agcam.evaluation.wsol import CAM_CURVE_INTERVALS

    check_run_args(args)
    for threshold in args.threshold:
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise UsageError(f"--threshold {threshold:g}: outside [0, 1]")
    if args.maxboxacc_step not in CAM_CURVE_INTERVALS:
        raise UsageError(f"--maxboxacc_step {args.maxboxacc_step:g}: choose "
                         f"{' or '.join(f'{s:g}' for s in CAM_CURVE_INTERVALS)}")
    if len(set(args.threshold)) != len(args.threshold):
        raise UsageError(f"--threshold {' '.join(f'{t:g}' for t in args.threshold)}: "
                         "a threshold is given twice")
    check_out_dir(args)


def main(args: argparse.Namespace) -> int:
    """The localization (and MaxBoxAcc) evaluations of agcam evaluate's runner, written as the
    released script writes them."""
    import time

    from agcam import distributed
    from agcam.cli.scratch import scratch_run

    check_args(args)
    spec = dataset_from_args(args)
    listing = samples_from_args(args, SAMPLES_ROOT)
    ctx, model = start_run(args, spec)
    tick = time.perf_counter()
    evaluations = ["localization"] + (["maxboxacc"] if args.maxboxacc else [])
    try:
        with scratch_run(ctx, model, "localization", methods=args.methods,
                         evaluations=evaluations, model=args.model, dataset=spec.name,
                         data_root=args.data_root, checkpoint=args.checkpoint,
                         split=listing.split, limit=args.limit, batch_size=args.batch_size,
                         precision=args.precision, decode=args.decode,
                         num_workers=args.num_workers, progress=not args.no_progress,
                         options={"thresholds": list(args.threshold),
                                  "maxboxacc_step": args.maxboxacc_step}) as (results, work):
            if results is None:
                return 0
            write_results(args, spec, listing, model, ctx, results, work,
                          time.perf_counter() - tick)
        return 0
    finally:
        distributed.cleanup(ctx)


def write_results(args, spec, listing, model, ctx, results, work, seconds: float) -> None:
    """What the released script prints and writes, from the runner's records in ``work``."""
    from agcam.evaluation.localization import (
        Localization,
        report_lines,
        summarize,
        table_lines,
        write_outputs,
        write_table,
    )
    from agcam.evaluation.run import method_records

    evaluation = Localization(thresholds=args.threshold)
    summaries = {}
    for method in args.methods:
        context, records = method_records(work, method, "localization")
        per_image = evaluation.image_results(records, context)
        wsol = results["results"][method].get("maxboxacc")
        summaries[method] = (per_image, summarize(
            per_image, args.threshold, method, args.model,
            extra={"dataset": spec.name, "split": listing.split, "listed": listing.listed,
                   "dropped": listing.dropped, "checkpoint": args.checkpoint,
                   "data_root": args.data_root, "world_size": ctx.world_size,
                   "precision": args.precision, "decode": args.decode,
                   **({} if wsol is None else {
                       **{k: wsol[k] for k in ("maxboxacc", "maxboxacc_v2",
                                               "maxboxacc_delta", "maxboxacc_v2_delta",
                                               "maxboxacc_threshold",
                                               "maxboxacc_v2_threshold")},
                       "maxboxacc_images": wsol["num_images"],
                       "maxboxacc_step": wsol["maxboxacc_step"]})}))
    first = summaries[args.methods[0]][1]
    if len(args.methods) == 1:
        lines = report_lines(first)
    else:   # one table: a row per method, the metrics per threshold as columns
        lines = report_lines(first)[1:2] + table_lines([s for _, s in summaries.values()])
    for line in lines:
        print(line)
    if first["num_images"] == 0:
        print("warning: no image was classified correctly; the means are undefined",
              file=sys.stderr)
    print(f"time: {seconds:.1f} s for {len(listing.samples)} images on rank 0; maps and "
          "metrics per method: " + ", ".join(f"{m['name']} {m['seconds']:.1f} s"
                                            for m in results["methods"]), flush=True)
    if args.out is not None:
        written = []
        for per_image, summary in summaries.values():
            paths = write_outputs(args.out, per_image, summary, args.threshold,
                                  getattr(model, "label_names", None))
            written += [paths["csv"], paths["json"]]
        paths = write_table(args.out, [s for _, s in summaries.values()])
        written += [paths["csv"], paths["md"]]
        print("wrote " + ", ".join(written))


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
