"""ABPC, the area between the LeRF and MoRF perturbation curves, from save_h5.py's store.

    python ABPC.py --method agcam --h5_root ./saveroot --csv True --file True
    python ABPC.py --method all --h5_root ./saveroot        # one table, a row per method

Reads ``<h5_root>/ILSVRC_<method>.hdf5`` (``VOC_``/``CUB_`` with ``--dataset voc``/``cub``; or
``--h5_file``), in our layout or the released one, removes 0%, 10%, ..., 100% of the pixels least
/ most relevant first, and prints the mean curves, AUC(LeRF), AUC(MoRF) and ABPC. ``--file True``
writes ``<ILSVRC|VOC|CUB>_<method>_ABPC.txt`` and ``.json`` beside the HDF5 file, ``--csv True``
the per-image ``.csv`` and a ``.png`` of the curves. See docs/faithfulness.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from agcam.cli.common import (
    UsageError,
    script_entry,
)
from agcam.cli.stores import add_store_args, score_stores, scored_indices


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "ABPC", description="Area between the perturbation curves (LeRF - MoRF) of the "
        "heatmaps save_h5.py stored; with several methods, one table of AUC(LeRF), AUC(MoRF) "
        "and ABPC.")
    add_store_args(parser, csv_help="<PREFIX>_<method>_ABPC.csv (per image) and .png (mean curves)",
                   file_help="<PREFIX>_<method>_ABPC.txt and .json")
    return parser


def main(args: argparse.Namespace) -> int:
    def table(summaries):
        if len(args.methods) == 1:
            return []
        from agcam.evaluation.abpc import table_lines
        return table_lines(summaries)

    return score_stores(args, lambda store, method, spec, model, ctx: evaluate_store(
        store, method, spec, model, ctx, args, verbose=len(args.methods) == 1), table)


def evaluate_store(store, method: str, spec, model, ctx, args: argparse.Namespace,
                   verbose: bool):
    """ABPC of one store: prints (all of it when ``verbose``) and writes what the flags ask;
    returns the summary on rank 0, ``None`` elsewhere."""
    from agcam import distributed
    from agcam.evaluation.abpc import (
        abpc_curves,
        report_lines,
        summarize,
        write_csv,
        write_report,
    )
    from agcam.evaluation.curves import merge_results
    from models.vit import model_geometry

    geometry = model_geometry(model)
    indices = scored_indices(store, args, ctx)
    read_batch = args.read_batch or max(1, min(args.batch_size, 32))
    skipped = int((~store.valid).sum())
    curves = abpc_curves(model, store.batches(read_batch, geometry.mean, geometry.std, indices),
                         batch_size=args.batch_size, precision=args.precision,
                         progress=ctx.is_main and not args.no_progress,
                         total=int(store.valid[indices].sum()))
    parts = distributed.gather_to_main([curves], ctx)
    if not ctx.is_main:
        return None
    curves = merge_results(parts)
    if curves.num_images == 0:
        raise UsageError(f"{store.path}: no readable image to evaluate")
    summary = summarize(curves, method, spec.name, spec.prefix)
    if verbose:
        for line in report_lines(summary):
            print(line)
    if skipped:
        print(f"warning: {skipped} images stored as unreadable were left out"
              + ("" if verbose else f" of {store.path}"), file=sys.stderr)
    if verbose:
        print(f"forward passes: {curves.forward_passes / curves.num_images:.2f} per image",
              flush=True)
    directory = os.path.dirname(os.path.abspath(store.path))
    written = []
    if args.file:
        written += write_report(directory, summary)
    if args.csv:
        written += write_csv(directory, curves, summary)
    if written:
        print("wrote " + ", ".join(written), flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
