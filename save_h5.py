"""Explain every validation image's label class into an HDF5 store, for ABPC.py.

    python save_h5.py --method agcam --save_root ./saveroot --data_root ./ILSVRC

Writes ``<save_root>/ILSVRC_<method>.hdf5``: per image the label, the resized image before
normalisation (uint8) and the raw map of the label class, from which the released heatmap is
recomputed exactly (``--layout released`` writes the authors' float32 layout instead). Running the
same command after an interruption (Ctrl-C, ``kill -9``) continues where it stopped. Several
processes: ``torchrun --nproc_per_node N save_h5.py ...``. See docs/abpc.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from agcam.cli import (UsageError, add_model_args, model_from_args, print_args, resolve_device,
                       script_entry, seed_everything)

SAMPLES_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples", "ILSVRC")
METHODS = ("agcam", "lrp", "rollout")
LAYOUTS = ("compact", "released")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "save_h5", description="Explain the label class of every ILSVRC val image and store "
        "images, labels and maps in <save_root>/ILSVRC_<method>.hdf5 for ABPC.py.")
    parser.add_argument("--method", default="agcam",
                        help=f"explanation method: {', '.join(METHODS)} (default: agcam)")
    parser.add_argument("--save_root", default="./saveroot",
                        help="folder of the HDF5 file, created if missing (default: ./saveroot)")
    parser.add_argument("--data_root", default=None,
                        help="ILSVRC root holding Data/CLS-LOC/val and Annotations/CLS-LOC/val "
                             "(default: the small set in samples/ILSVRC)")
    parser.add_argument("--layout", default="compact", choices=LAYOUTS,
                        help="compact: our resumable uint8 + raw-map layout (default); "
                             "released: the authors' float32 groups image/cam/label")
    add_model_args(parser)
    parser.add_argument("--batch_size", type=int, default=16,
                        help="images per forward/backward pass (default: 16)")
    parser.add_argument("--num_workers", type=int, default=2,
                        help="loader processes decoding images; 0 decodes in the main process "
                             "(default: 2)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N images, by name")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def check_args(args: argparse.Namespace) -> None:
    from agcam.explainer import available_methods
    methods = available_methods()
    if args.method not in methods:
        known = ", ".join(sorted(set(methods) | set(METHODS)))
        missing = "" if args.method not in METHODS else " (its implementation is not installed)"
        raise UsageError(f"--method {args.method}: unknown method{missing}; choose from {known}")
    if args.batch_size < 1:
        raise UsageError(f"--batch_size {args.batch_size}: must be at least 1")
    if args.num_workers < 0:
        raise UsageError(f"--num_workers {args.num_workers}: must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: must be at least 1")
    if os.path.exists(args.save_root) and not os.path.isdir(args.save_root):
        raise UsageError(f"--save_root {args.save_root}: exists and is not a directory")


def load_samples(args: argparse.Namespace):
    from agcam.data import find_samples
    if args.data_root is None:
        if not os.path.isdir(SAMPLES_ROOT):
            raise UsageError(f"--data_root not given and the bundled sample set {SAMPLES_ROOT} "
                             "is not there; pass --data_root DIR, the ILSVRC root holding "
                             "Data/CLS-LOC/val and Annotations/CLS-LOC/val")
        args.data_root = SAMPLES_ROOT
    return find_samples(args.data_root, limit=args.limit)


def main(args: argparse.Namespace) -> int:
    from agcam import distributed
    from agcam.data import ValDataset
    from agcam.explainer import get_explainer
    from agcam.export import export_store, store_meta
    from agcam.store import store_path

    check_args(args)
    samples = load_samples(args)
    device = resolve_device(args.device)
    ctx = distributed.init_distributed(device)
    try:
        if ctx.is_main:
            print_args(args)
            try:
                os.makedirs(args.save_root, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--save_root {args.save_root}: cannot be created "
                                 f"({exc.strerror})") from None
        seed_everything(args.seed)
        model = model_from_args(args, ctx.device)
        explainer = get_explainer(args.method, model)
        path = store_path(args.save_root, args.method)
        meta = store_meta(args.method, model, args.model, args.checkpoint, args.batch_size)
        stats = export_store(explainer, ValDataset(samples, model, keep_image=True), path,
                             args.layout, meta, ctx=ctx, num_workers=args.num_workers,
                             progress=not args.no_progress)
        if stats is None:
            return 0
        size = os.path.getsize(path)
        print(f"wrote {path}: {stats.num_images} images ({stats.written} in this run, "
              f"{len(stats.unreadable)} unreadable), layout {args.layout}, {size:,} bytes "
              f"({size / max(stats.num_images, 1):,.0f} per image), {stats.seconds:.1f} s",
              flush=True)
        return 0
    finally:
        distributed.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(script_entry(get_args_parser, main)())
