"""agcam evaluate: every method x every evaluation in one run, one report.

    agcam evaluate --model vit_agcam_learnt --dataset synthetic \
        --data_root samples/synthetic/heldout --method all --eval all --out report/
    torchrun --nproc_per_node 4 -m agcam evaluate --method agcam rollout --eval all ...

Each image is read once and classified once (one prediction shared by every method and
evaluation); each method explains it once per class the evaluations need (label and/or
predicted); the evaluations that re-score perturbed images share batched forward passes. The
report in DIR: results.json, a CSV per evaluation, report.md and report.html. Running the same
command again resumes an interrupted run. See docs/evaluate.md.
"""
from __future__ import annotations

import argparse
import os

from agcam.cli.common import (
    UsageError,
    add_data_run_args,
    add_dataset_args,
    add_maxboxacc_step_arg,
    add_method_arg,
    add_out_arg,
    add_perturbation_args,
    check_run_args,
)

#: the evaluations, for --help without importing them (checked against the registry by a test)
EVALUATION_NAMES = ("localization", "maxboxacc", "abpc", "positive", "negative", "insertion",
                    "deletion", "segmentation", "pointing", "completeness", "saco",
                    "randomisation")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_method_arg(parser)
    parser.add_argument("--eval", nargs="+", default=["all"], metavar="EVAL",
                        help=f"evaluation(s): {', '.join(EVALUATION_NAMES)}, several, or all "
                             "(default: all that apply to the data set)")
    add_dataset_args(parser)
    parser.add_argument("--data_root", default=None,
                        help="the data set's folder (for imagenet_seg: the folder holding "
                             "gtsegs_ijcv.mat, or the file)")
    add_data_run_args(parser)
    add_out_arg(parser, "the report (results.json, a CSV per evaluation, report.md, "
                "report.html) and the run's records, which a rerun resumes from",
                default="evaluation")
    parser.add_argument("--score_batch_size", type=int, default=64,
                        help="perturbed images per forward pass of the re-scoring evaluations "
                             "(default: 64)")
    parser.add_argument("--threshold", type=float, nargs="+", default=[0.5],
                        help="threshold(s) on the [0, 1] heatmap, e.g. 0.5 or 0.3 0.5 0.7 "
                             "(default: 0.5)")
    add_maxboxacc_step_arg(parser)
    add_perturbation_args(parser)


def check_args(args: argparse.Namespace) -> None:
    import math

    from agcam.evaluation.curves import CHEFER_AUC
    from agcam.evaluation.run import resolve_evaluations
    from agcam.evaluation.wsol import CAM_CURVE_INTERVALS

    check_run_args(args)
    args.evals = resolve_evaluations(args.eval)
    for threshold in args.threshold:
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise UsageError(f"--threshold {threshold:g}: outside [0, 1]")
    if args.maxboxacc_step not in CAM_CURVE_INTERVALS:
        raise UsageError(f"--maxboxacc_step {args.maxboxacc_step:g}: choose "
                         f"{' or '.join(f'{s:g}' for s in CAM_CURVE_INTERVALS)}")
    if args.auc not in CHEFER_AUC:
        raise UsageError(f"--auc {args.auc}: choose {' or '.join(CHEFER_AUC)}")
    if args.rise_step is not None and args.rise_step < 1:
        raise UsageError(f"--rise_step {args.rise_step}: must be at least 1")
    if args.score_batch_size < 1:
        raise UsageError(f"--score_batch_size {args.score_batch_size}: must be at least 1")
    if args.data_root is None:
        if args.dataset != "ilsvrc":
            raise UsageError(f"--data_root not given: the folder of --dataset {args.dataset}")
        args.data_root = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))), "samples", "ILSVRC")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot be created ({exc.strerror})") from None


def prompts_setting(value):
    """What run.json records of ``--prompts``: the file's absolute path, or ``classnames[:...]``
    as given (the data set's names), or None."""
    if value is None:
        return None
    from agcam.clip import is_class_names
    return value if is_class_names(value) else os.path.abspath(value)


def main(args: argparse.Namespace) -> int:
    from agcam import distributed
    from agcam.cli.common import start_run
    from agcam.evaluation.run import SEGMENTATION_DATASET, RunConfig, run
    from agcam.report.writers import summary_lines
    from models.vit import file_digest

    check_args(args)
    spec = None
    if args.dataset != SEGMENTATION_DATASET:
        from agcam.cli.common import dataset_from_args
        spec = dataset_from_args(args)
    config = RunConfig(
        methods=args.methods, evaluations=args.evals, model=args.model, dataset=args.dataset,
        data_root=os.path.abspath(args.data_root), out=args.out, checkpoint=args.checkpoint,
        checkpoint_sha256=file_digest(args.checkpoint) if args.checkpoint else "",
        split=args.split, limit=args.limit, batch_size=args.batch_size,
        score_batch_size=args.score_batch_size, precision=args.precision, decode=args.decode,
        num_workers=args.num_workers, progress=not args.no_progress,
        options={"thresholds": list(args.threshold), "maxboxacc_step": args.maxboxacc_step,
                 "auc": args.auc, "rise_step": args.rise_step},
        prompts=prompts_setting(args.prompts))
    ctx, model = start_run(args, spec)
    try:
        results = run(config, model, ctx, log=lambda text: print(text, flush=True))
        if results is None:
            return 0
        for line in summary_lines(results):
            print(line)
        print(f"wrote {os.path.join(args.out, 'report.html')}, results.json, report.md and "
              f"{len(results['evaluations'])} CSV file(s) in {args.out}", flush=True)
        return 0
    finally:
        distributed.cleanup(ctx)
