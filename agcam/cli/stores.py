"""The stores a scoring script reads (``ABPC.py``, ``perturbation.py``): open the files that
``--method``/``--h5_root``/``--h5_file``/``--dataset`` name, check every one before the model is
made (one line and exit code 2 for what is wrong), then check them against the model."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from agcam.cli.common import (
    UsageError,
    add_batch_size_arg,
    add_dataset_arg,
    add_limit_arg,
    add_method_arg,
    add_model_args,
    add_precision_arg,
    add_progress_arg,
    add_seed_arg,
    check_at_least,
    dataset_from_args,
    resolve_methods,
    start_run,
    str2bool,
    typed,
)


def add_store_args(parser: argparse.ArgumentParser, csv_help: str, file_help: str) -> None:
    """The flags every scoring script shares: ``--method``, ``--dataset``, ``--h5_root``,
    ``--h5_file``, ``--csv`` and ``--file`` (what they write: ``csv_help``, ``file_help``), the
    model flags, ``--batch_size``, ``--precision``, ``--limit``, ``--seed`` and
    ``--no_progress``."""
    add_method_arg(parser)
    add_dataset_arg(parser, default=None, default_text="the one the file records, else ilsvrc; "
                                                       "it names the file, <PREFIX>_<method>.hdf5")
    parser.add_argument("--h5_root", default="./saveroot",
                        help="folder of <PREFIX>_<method>.hdf5 (default: ./saveroot)")
    parser.add_argument("--h5_file", default=None,
                        help="the HDF5 file itself (overrides --h5_root; one method only)")
    parser.add_argument("--csv", type=str2bool, default=False, metavar="True|False",
                        help=f"write {csv_help} beside the HDF5 file (default: False)")
    parser.add_argument("--file", type=str2bool, default=False, metavar="True|False",
                        help=f"write {file_help} beside the HDF5 file (default: False)")
    add_model_args(parser, default=None,
                   default_text="the one the file records, else the paper's weights")
    add_batch_size_arg(parser, 64)
    add_precision_arg(parser)
    add_limit_arg(parser)
    parser.add_argument("--read_batch", type=int, default=None, help=argparse.SUPPRESS)
    add_seed_arg(parser)
    add_progress_arg(parser)


def scored_indices(store, args: argparse.Namespace, ctx):
    """This process's share of the store's images: the first ``--limit`` (every one without
    it), split among the processes."""
    from agcam import distributed
    count = store.num_images if args.limit is None else min(args.limit, store.num_images)
    return distributed.shard_indices(count, ctx.rank, ctx.world_size)


def open_checked_store(args: argparse.Namespace, method: str, given_dataset=None,
                       target: Optional[str] = "label", script: str = "ABPC"):
    """The store of ``method`` the flags name, checked for everything but the model
    (UsageError otherwise). ``args.dataset`` becomes the data set the file records when
    ``--dataset`` was not given. ``target``: the class its maps must explain (``None``: any);
    ``script`` names the one that needs it in the message."""
    from agcam.store import open_store, store_path
    if args.h5_file is None and given_dataset is None:
        given_dataset = find_dataset(args.h5_root, method)
    spec = dataset_from_args(argparse.Namespace(dataset=given_dataset or "ilsvrc"))
    if args.h5_file is not None:
        path, flag = args.h5_file, "--h5_file"
    else:
        path, flag = store_path(args.h5_root, method, spec.prefix), "--h5_root"
        if not os.path.isfile(path):
            raise UsageError(f"--h5_root {args.h5_root}: no {os.path.basename(path)} there "
                             f"(write it with: python save_h5.py --dataset {spec.name} "
                             f"--method {method} --out {args.h5_root})")
    store = open_store(path, flag)
    try:
        if store.method is not None and store.method != method:
            raise UsageError(f"{path} holds {store.method} heatmaps, not --method {method}")
        recorded = store.meta.dataset if store.meta is not None else ""
        if given_dataset is not None and recorded and recorded != spec.name:
            raise UsageError(f"{path} holds the {recorded} data set, not --dataset "
                             f"{given_dataset}")
        args.dataset = given_dataset or recorded or "ilsvrc"
        recorded_target = store.meta.target if store.meta is not None else "label"
        if target is not None and recorded_target != target:
            raise UsageError(f"{path} holds maps of the {recorded_target} class; {script} "
                             f"needs the {target}'s (write it with save_h5.py --target {target})")
        store.check_complete()
    except BaseException:
        store.close()
        raise
    return store


def find_dataset(h5_root: str, method: str) -> Optional[str]:
    """The data set whose ``<PREFIX>_<method>.hdf5`` lies in ``h5_root`` when ``--dataset`` is
    not given: ``None`` when there is none (the ILSVRC name is then asked for), UsageError
    when several data sets' files are there."""
    from agcam.datasets import DATASETS
    found = [name for name, spec in DATASETS.items()
             if os.path.isfile(os.path.join(h5_root, f"{spec.prefix}_{method}.hdf5"))]
    if len(found) > 1:
        raise UsageError(f"--h5_root {h5_root}: holds {method} stores of "
                         f"{' and '.join(found)}; choose one with --dataset")
    return found[0] if found else None


def model_from_stores(stores, args: argparse.Namespace) -> None:
    """``--model`` and ``--checkpoint`` from what the stores record when not given; a flag that
    contradicts a store is refused naming both (UsageError)."""
    from models.vit import DEFAULT_MODEL, file_digest
    for store in stores:
        meta = store.meta
        if meta is None or not meta.model:
            continue
        if args.model is not None and args.model != meta.model:
            raise UsageError(f"--model {args.model}: {store.path} was written with --model "
                             f"{meta.model}")
        if args.checkpoint is not None and meta.checkpoint_sha256 and \
                file_digest(args.checkpoint) != meta.checkpoint_sha256:
            raise UsageError(f"--checkpoint {args.checkpoint}: {store.path} was written with "
                             f"the checkpoint {meta.checkpoint_path or meta.checkpoint} (SHA-256 "
                             f"{meta.checkpoint_sha256[:12]}...), not this file")
        if args.model is None:
            args.model = meta.model
        if args.checkpoint is None and meta.checkpoint_sha256:
            if not (meta.checkpoint_path and os.path.isfile(meta.checkpoint_path)):
                raise UsageError(f"{store.path} was written with the checkpoint "
                                 f"{meta.checkpoint_path or meta.checkpoint}, which is not "
                                 "there; pass --checkpoint")
            args.checkpoint = meta.checkpoint_path
    if args.model is None:   # the authors' files record nothing: the paper's weights
        args.model = DEFAULT_MODEL


def open_checked_stores(args: argparse.Namespace, target: Optional[str] = "label",
                        script: str = "ABPC") -> list:
    """Every store the flags name, all checked before the model is made (``target``: see
    :func:`open_checked_store`)."""
    check_at_least(args, "batch_size", "limit")
    args.methods = resolve_methods(args.method, args.precision, typed(args, "method"))
    if args.h5_file is not None and len(args.methods) > 1:
        raise UsageError(f"--h5_file {args.h5_file}: one method only (several methods read "
                         "--h5_root)")
    stores = []
    given_dataset = args.dataset
    try:
        for method in args.methods:
            stores.append(open_checked_store(args, method, given_dataset, target, script))
        model_from_stores(stores, args)
    except BaseException:
        for store in stores:
            store.close()
        raise
    return stores


def check_model(store, model, args: argparse.Namespace) -> None:
    """The store against the model: input size (UsageError), and warnings for another model,
    precision or normalisation than the store was written with."""
    import numpy as np

    from models.vit import model_geometry
    geometry = model_geometry(model)
    size = tuple(geometry.input_size)
    if tuple(store.image_size) != size or tuple(store.heatmap_size) != size:
        raise UsageError(f"{store.path}: images {tuple(store.image_size)} and heatmaps "
                         f"{tuple(store.heatmap_size)} do not match the model's input {size} "
                         f"(--model {args.model})")
    meta = store.meta
    written_at = meta.precision if meta is not None else "fp32"   # the authors' files: fp32
    if written_at != args.precision:
        print(f"warning: {store.path} holds maps computed at precision {written_at}; scoring "
              f"them at --precision {args.precision}", file=sys.stderr)
    if meta is not None and not (np.allclose(meta.mean, geometry.mean)
                                 and np.allclose(meta.std, geometry.std)):
        print(f"warning: {store.path} was written with mean {meta.mean} / std {meta.std}; the "
              f"model normalises with {geometry.mean} / {geometry.std}", file=sys.stderr)


def score_stores(args: argparse.Namespace, score, table, target: Optional[str] = "label",
                 script: str = "ABPC", check=None) -> int:
    """The outline every scoring script shares: open and check the stores the flags name
    (``check(store)``: the script's own check, e.g. the target a test needs, before the model
    is made), start the run (torchrun, model), check each store against the model, score each
    store (``score(store, method, spec, model, ctx)``: the summary on rank 0, ``None``
    elsewhere), then print ``table(summaries)`` on rank 0."""
    from agcam import distributed

    stores = open_checked_stores(args, target=target, script=script)
    try:
        for store in stores:
            if check is not None:
                check(store)
        spec = dataset_from_args(args)
        ctx, model = start_run(args, spec)
        try:
            for store in stores:
                check_model(store, model, args)
            summaries = [summary for summary in
                         (score(store, method, spec, model, ctx)
                          for method, store in zip(args.methods, stores))
                         if summary is not None]
            if ctx.is_main:
                for line in table(summaries):
                    print(line)
                sys.stdout.flush()
            return 0
        finally:
            distributed.cleanup(ctx)
    finally:
        for store in stores:
            store.close()
