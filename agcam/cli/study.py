"""agcam study: every method and the two floors on the learnt model, as one table.

    agcam study                                # every registered method, 160 held-out images
    agcam study --method agcam legrad random --limit_per_class 5
    agcam study --precision_table              # maps at bf16 and float64 against float32

Runs agcam evaluate (localization, MaxBoxAcc, ABPC, Chefer's positive and negative
perturbation, RISE insertion and deletion) on vit_agcam_learnt and its synthetic held-out set,
one method at a time into DIR/runs/METHOD (a method already run with the same settings is read
back; an interrupted run resumes), then the two-object images (does each class's map point at
its own object?), and prints one table: the best value of each column in bold, and where AGCAM
is not first. agcam figures writes the same table into docs/learnt.md.
"""
from __future__ import annotations

import argparse

from agcam.cli.common import (
    add_batch_size_arg,
    add_device_arg,
    add_limit_arg,
    add_method_arg,
    add_out_arg,
    check_at_least,
    resolve_methods,
    typed,
)

#: where the per-method runs are kept by default
DEFAULT_RUNS = "study"


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the table shared with agcam figures."""
    parser.add_argument("--limit_per_class", type=int, default=None, metavar="N",
                        help="only the first N held-out images of each class, in name order "
                             "(default: all 20 of each)")
    add_limit_arg(parser)
    add_batch_size_arg(parser, 16)
    add_device_arg(parser)
    parser.add_argument("--fresh", action="store_true",
                        help="run every method again instead of reading back its earlier run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_method_arg(parser, default=("all",))
    add_out_arg(parser, "a folder keeping each method's run (runs/METHOD) and two-object "
                        "numbers (pairs/METHOD.json)", default=DEFAULT_RUNS)
    add_table_arguments(parser)
    parser.add_argument("--no_pairs", action="store_true",
                        help="leave out the two-object images")
    parser.add_argument("--precision_table", action="store_true",
                        help="instead: how far each method's maps move at bf16 (CPU autocast) "
                             "and in float64 from float32, on the held-out images")


def study_table(args: argparse.Namespace, methods, runs: str, log=print):
    """``(results, pair rows, method seconds)`` of the table for ``methods`` (shared with agcam
    figures)."""
    from agcam.study.table import merge_results, pair_results, run_methods, study_methods

    check_at_least(args, "limit_per_class", "limit", "batch_size")
    methods = study_methods(methods)
    parts = run_methods(runs, methods, per_class=args.limit_per_class, limit=args.limit,
                        device=args.device,
                        batch_size=args.batch_size, fresh=args.fresh, log=log)
    results = merge_results(parts)
    pairs = [] if getattr(args, "no_pairs", False) else \
        pair_results(runs, methods, fresh=args.fresh, log=log)
    return results, pairs, results["time"]["methods_seconds"]


def main(args: argparse.Namespace) -> int:
    methods = resolve_methods(args.method, flag=typed(args, "method"))
    if args.precision_table:
        return precision_table(args, methods)
    from agcam.study.table import not_first_lines, pair_lines, table_lines

    results, pairs, _ = study_table(args, methods, args.out)
    print("\n".join(table_lines(results)))
    print("\nWhere AGCAM is not first:\n" + "\n".join(not_first_lines(results)))
    if pairs:
        print("\nTwo-object images:\n" + "\n".join(pair_lines(pairs)))
    return 0


def precision_table(args: argparse.Namespace, methods) -> int:
    import time

    import torch

    from agcam.study.behaviour import precision_lines, precision_rows
    from agcam.study.heldout import HELDOUT_ROOT, LEARNT_MODEL, load_heldout
    from agcam.study.table import study_methods
    from models.vit import create_model

    start = time.perf_counter()
    model = create_model(LEARNT_MODEL, device=torch.device(args.device or "cpu"))
    data = load_heldout(model, HELDOUT_ROOT)
    print(f"model {LEARNT_MODEL}, held-out set {HELDOUT_ROOT}: {len(data.samples)} images")
    print("\n".join(precision_lines(precision_rows(model, data, study_methods(methods)))))
    print(f"({time.perf_counter() - start:.0f} s, torch threads {torch.get_num_threads()})")
    return 0
