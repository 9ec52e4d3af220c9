"""Chefer's perturbation test (positive, negative) and RISE's insertion/deletion, from save_h5.py's
store.

    python perturbation.py --method all --h5_root ./saveroot --test positive negative
    python save_h5.py --method all --target predicted --save_root ./saveroot_top
    python perturbation.py --method all --h5_root ./saveroot_top --test insertion deletion

Reads ``<h5_root>/ILSVRC_<method>.hdf5`` (``VOC_``/``CUB_`` with ``--dataset``; or ``--h5_file``)
as ABPC.py does, runs every ``--test`` on every image in one batched pass per method, and prints
one table per test, a row per method. Insertion and deletion score the model's top-1 class, so
they need a store of the predicted class's maps (``save_h5.py --target predicted``); Chefer's
test takes either (his "target" and "top" variants). ``--file True`` writes
``<PREFIX>_<method>_perturbation.json`` beside the HDF5 file, ``--csv True`` the per-image curves
in ``<PREFIX>_<method>_perturbation.csv``. See docs/faithfulness.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from agcam.cli.common import (
    UsageError,
    add_perturbation_args,
    script_entry,
)
from agcam.cli.stores import add_store_args, scored_indices
from agcam.evaluation.names import NEEDED_TARGET, TESTS


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "perturbation", description="Chefer's perturbation test (positive, negative) and "
        "RISE's insertion/deletion of the heatmaps save_h5.py stored.")
    parser.add_argument("--test", nargs="+", default=["positive", "negative"], metavar="TEST",
                        help=f"the tests: {', '.join(TESTS)} (default: positive negative; "
                             "insertion and deletion need a store of --target predicted)")
    add_perturbation_args(parser)
    add_store_args(parser, csv_help="<PREFIX>_<method>_perturbation.csv (per-image curves)",
                   file_help="<PREFIX>_<method>_perturbation.json")
    return parser


def check_tests(args: argparse.Namespace) -> None:
    unknown = [t for t in args.test if t not in TESTS]
    if unknown:
        raise UsageError(f"--test {unknown[0]}: unknown test; the tests are {', '.join(TESTS)}")
    args.test = list(dict.fromkeys(args.test))
    if args.rise_step is not None and args.rise_step < 1:
        raise UsageError(f"--rise_step {args.rise_step}: must be at least 1")


def store_target(store) -> str:
    """The class the store's maps explain: recorded, else ``label`` (the released save_h5.py)."""
    return store.meta.target if store.meta is not None else "label"


def check_target(store, tests) -> str:
    target = store_target(store)
    for test in tests:
        needed = NEEDED_TARGET.get(test)
        if needed is not None and needed != target:
            raise UsageError(f"{store.path} holds maps of the {target} class; --test {test} "
                             f"needs the {needed} class (write it with save_h5.py --target "
                             f"{needed})")
    return target


def main(args: argparse.Namespace) -> int:
    from agcam.cli.stores import score_stores

    check_tests(args)

    def table(summaries):
        from agcam.evaluation.perturbation import table_lines
        return [line for test in args.test for line in ["", *table_lines(summaries, test)]]

    return score_stores(args, lambda store, method, spec, model, ctx: evaluate_store(
        store, method, check_target(store, args.test), spec, model, ctx, args), table,
        target=None, script="perturbation.py",   # the target is checked per test
        check=lambda store: check_target(store, args.test))


def evaluate_store(store, method: str, target: str, spec, model, ctx,
                   args: argparse.Namespace):
    """Every test of one store; writes what the flags ask; the summary on rank 0."""
    from agcam import distributed
    from agcam.evaluation.curves import merge_results, perturbation_curves
    from agcam.evaluation.perturbation import (
        heatmap_batches,
        make_tests,
        summarize,
        write_csv,
        write_json,
    )
    from models.vit import model_geometry

    geometry = model_geometry(model)
    if store.layout != "compact" and ctx.is_main:
        print(f"warning: {store.path} is in the released layout, which keeps no raw maps: its "
              "stored heatmap (antialiased resize) is ranked instead of Chefer's recipe",
              file=sys.stderr)
    tests = make_tests(args.test, geometry.mean, geometry.std, geometry.input_size[1],
                       args.rise_step)
    indices = scored_indices(store, args, ctx)
    read_batch = args.read_batch or max(1, min(args.batch_size, 32))
    skipped = int((~store.valid).sum())
    results = perturbation_curves(
        model, heatmap_batches(store, read_batch, geometry.mean, geometry.std, indices), tests,
        batch_size=args.batch_size, precision=args.precision,
        progress=ctx.is_main and not args.no_progress, total=int(store.valid[indices].sum()),
        desc=method)
    parts = distributed.gather_to_main([results], ctx)
    if not ctx.is_main:
        return None
    results = merge_results(parts)
    if results.num_images == 0:
        raise UsageError(f"{store.path}: no readable image to evaluate")
    summary = summarize(results, method, target, spec.name, spec.prefix, args.auc)
    if skipped:
        print(f"warning: {skipped} images stored as unreadable were left out of {store.path}",
              file=sys.stderr)
    per_image = results.forward_passes / results.num_images
    print(f"{method}: {results.num_images} images, {per_image:.2f} forward passes per image",
          flush=True)
    directory = os.path.dirname(os.path.abspath(store.path))
    written = []
    if args.file:
        written.append(write_json(directory, summary))
    if args.csv:
        written.append(write_csv(directory, results, summary))
    if written:
        print("wrote " + ", ".join(written), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
