"""Explain every validation image's label class (or predicted class) into an HDF5 store, for
ABPC.py and perturbation.py.

    python save_h5.py --method agcam --out ./saveroot --data_root ./ILSVRC
    python save_h5.py --dataset cub --data_root ./CUB --checkpoint cub_vit/model.pth
    python save_h5.py --method all --target predicted --out ./saveroot_top

Writes ``<out>/ILSVRC_<method>.hdf5`` (``--out`` is the released script's ``--save_root``, which
still works) (``VOC_<method>.hdf5``, ``CUB_<method>.hdf5``; one
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
    add_data_run_args,
    add_dataset_args,
    add_method_arg,
    add_out_arg,
    check_run_args,
    dataset_from_args,
    samples_from_args,
    script_entry,
    start_run,
    typed,
)

SAMPLES_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "ILSVRC")
LAYOUTS = ("compact", "released")
TARGETS = ("label", "predicted")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "save_h5", description="Explain the label class of every image of the data set and "
        "store images, labels and maps in <out>/<ILSVRC|VOC|CUB|SYNTH>_<method>.hdf5 (one per "
        "method) for ABPC.py and perturbation.py. The same command after an interruption "
        "continues where it stopped.")
    add_method_arg(parser)
    add_dataset_args(parser)
    add_out_arg(parser, "the folder of the HDF5 files, created if missing", default="./saveroot",
                aliases=("--save_root",))
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
    add_data_run_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    check_run_args(args)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"{typed(args, 'out')} {args.out}: exists and is not a directory")


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
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{typed(args, 'out')} {args.out}: cannot be created "
                         f"({exc.strerror})") from None
    ctx, model = start_run(args, spec)
    try:
        if ctx.is_main:
            print(listing.describe(), flush=True)
        jobs = [ExportJob(get_explainer(method, model, precision=args.precision),
                          store_path(args.out, method, spec.prefix),
                          store_meta(method, model, args.model, args.checkpoint,
                                     args.batch_size, dataset=spec.name,
                                     precision=args.precision, target=args.target,
                                     data_root=args.data_root, split=listing.split))
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
        if len(all_stats) > 1:
            print(f"time: {all_stats[0].run_seconds:.1f} s in all (decoding shared by the "
                  f"{len(all_stats)} files)", flush=True)
        return 0
    finally:
        distributed.cleanup(ctx)


def kept_after_interrupt(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves: the images each store holds, and how to go on."""
    from agcam.cli.common import dataset_from_args as spec_of
    from agcam.store import count_kept, store_path
    spec = spec_of(args)
    counts = []
    for method in getattr(args, "methods", None) or []:
        kept = count_kept(store_path(args.out, method, spec.prefix))
        if kept is not None:
            counts.append(f"{kept[0]} of {kept[1]} images of {method}")
    held = "; ".join(counts) if counts else "no image"
    return f"{held} kept in {args.out}; the same command continues where it stopped"


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main, kept_after_interrupt)())
