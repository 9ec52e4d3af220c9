"""Explain every validation image's label class (or predicted class) into an HDF5 store, for
ABPC.py and perturbation.py.

    python save_h5.py --method agcam --save_root ./saveroot --data_root ./ILSVRC
    python save_h5.py --dataset cub --data_root ./CUB --checkpoint cub_vit/model.pth
    python save_h5.py --method all --target predicted --save_root ./saveroot_top

Writes ``<save_root>/ILSVRC_<method>.hdf5`` (``VOC_<method>.hdf5``, ``CUB_<method>.hdf5``; one
file per method with ``--method agcam gae`` or ``--method all``, from one pass over the data): per
image the label, the resized image before normalisation (uint8) and the raw map of the label
class (``--target predicted``: of the model's top-1 class, for perturbation.py's insertion and
deletion and Chefer's "top" variant; the file records its target), from which the released
heatmap is recomputed exactly (``--layout released`` writes the authors' float32 layout
instead). Running the same command after an interruption (Ctrl-C,
``kill -9``) continues where it stopped. Several processes: ``torchrun --nproc_per_node N
save_h5.py ...``. See docs/faithfulness.md and docs/store.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from agcam.cli.common import (
    UsageError,
    add_dataset_args,
    add_method_arg,
    add_model_args,
    add_run_args,
    check_run_args,
    dataset_from_args,
    samples_from_args,
    script_entry,
    start_run,
)

SAMPLES_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "ILSVRC")
LAYOUTS = ("compact", "released")
TARGETS = ("label", "predicted")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "save_h5", description="Explain the label class of every image of the data set and "
        "store images, labels and maps in <save_root>/<ILSVRC|VOC|CUB>_<method>.hdf5 (one per "
        "method) for ABPC.py.")
    add_method_arg(parser)
    add_dataset_args(parser)
    parser.add_argument("--save_root", default="./saveroot",
                        help="folder of the HDF5 file, created if missing (default: ./saveroot)")
    parser.add_argument("--data_root", default=None,
                        help="ILSVRC root holding Data/CLS-LOC/val and Annotations/CLS-LOC/val "
                             "(default: the small set in samples/ILSVRC); for voc the folder "
                             "holding VOCdevkit/, for cub the one holding CUB_200_2011/")
    parser.add_argument("--layout", default="compact", choices=LAYOUTS,
                        help="compact: our resumable uint8 + raw-map layout (default); "
                             "released: the authors' float32 groups image/cam/label")
    parser.add_argument("--target", default="label", choices=TARGETS,
                        help="the class each map explains: label (as released; ABPC and "
                             "Chefer's 'target' test) or predicted (the model's top-1; "
                             "insertion/deletion and Chefer's 'top' test); recorded in the file "
                             "(default: label)")
    add_model_args(parser)
    add_run_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_run_args(args)
    if os.path.exists(args.save_root) and not os.path.isdir(args.save_root):
        raise UsageError(f"--save_root {args.save_root}: exists and is not a directory")


def main(args: argparse.Namespace) -> int:
    from agcam import distributed
    from agcam.datasets.decode import make_dataset
    from agcam.registry import get_explainer
    from agcam.store import store_path
    from agcam.store.export import ExportJob, export_stores, store_meta

    check_args(args)
    spec = dataset_from_args(args)
    listing = samples_from_args(args, SAMPLES_ROOT)
    samples = listing.samples
    try:
        os.makedirs(args.save_root, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--save_root {args.save_root}: cannot be created "
                         f"({exc.strerror})") from None
    ctx, model = start_run(args, spec)
    try:
        if ctx.is_main:
            print(listing.describe(), flush=True)
        jobs = [ExportJob(get_explainer(method, model, precision=args.precision),
                          store_path(args.save_root, method, spec.prefix),
                          store_meta(method, model, args.model, args.checkpoint,
                                     args.batch_size, dataset=spec.name,
                                     precision=args.precision, target=args.target))
                for method in args.methods]
        all_stats = export_stores(jobs, make_dataset(samples, model, keep_image=True,
                                                     decode=args.decode),
                                  args.layout, ctx=ctx, num_workers=args.num_workers,
                                  progress=not args.no_progress)
        if all_stats is None:
            return 0
        for stats in all_stats:
            size = os.path.getsize(stats.path)
            print(f"wrote {stats.path}: {stats.num_images} images ({stats.written} in this run, "
                  f"{len(stats.unreadable)} unreadable), layout {args.layout}, {size:,} bytes "
                  f"({size / max(stats.num_images, 1):,.0f} per image), {stats.seconds:.1f} s",
                  flush=True)
        return 0
    finally:
        distributed.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
