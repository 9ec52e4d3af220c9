"""The loop under ``save_h5.py``: explain every image's label class into an HDF5 store.

Work is cut into fixed units of ``batch_size`` consecutive images (:func:`agcam.store.work_units`).
Under ``torchrun`` the units still to do are dealt round-robin to the processes; after each round
every process's results are gathered to rank 0, which alone opens and writes the one file, unit
by unit. A unit is always explained as the same batch, so the stored values depend neither on
the number of processes nor on where an interrupted run stopped: the rerun of an interrupted
command only computes the units not marked done and ends with the file an uninterrupted run
writes.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from agcam.datasets.common import ValDataset, loader_options
from agcam.datasets.decode import collate_for, decoded_batches
from agcam.distributed import DistContext, broadcast_from_main, gather_to_main
from agcam.explainer import Explainer
from agcam.store import PARTIAL_SUFFIX, StoreError, StoreMeta, StoreWriter, open_writer

#: test hook: seconds to sleep after each committed unit (to interrupt a run at a known point)


@dataclass
class ExportStats:
    path: str
    num_images: int
    already_done: int = 0
    written: int = 0
    unreadable: List[str] = field(default_factory=list)
    #: this store's own time on rank 0: its maps and their writing (the decoding is shared)
    seconds: float = 0.0
    #: the whole run's wall time, every store together
    run_seconds: float = 0.0


@dataclass
class _UnitResult:
    indices: List[int]
    images: np.ndarray        # [B, 3, H, W] uint8
    maps: np.ndarray          # [B, h, w] float32
    valid: np.ndarray         # [B] bool
    errors: List[str]


def explain_unit(explainer: Explainer, batch: dict, target: str = "label") -> _UnitResult:
    """Raw maps of the label class (``target="label"``) or of the predicted one
    (``"predicted"``) for the decodable images of one loader batch."""
    valid = batch["valid"].numpy().astype(bool)
    maps = np.zeros((len(valid), *explainer.map_size()), dtype=np.float32)
    if valid.any():
        inputs = batch["input"].to(explainer.device, non_blocking=True)  # pinned: overlaps
        labels = batch["label"]
        if not valid.all():
            keep = torch.from_numpy(valid)
            inputs, labels = inputs[keep.to(inputs.device)], labels[keep]
        _, raw = explainer.explain(inputs, target=labels if target == "label" else None)
        maps[valid] = raw.detach().float().cpu().numpy()
    return _UnitResult(indices=batch["index"].tolist(), images=batch["image"].numpy(),
                       maps=maps, valid=valid, errors=list(batch["error"]))


def export_store(explainer: Explainer, dataset: ValDataset, path: str, layout: str,
                 meta: StoreMeta, ctx: Optional[DistContext] = None, num_workers: int = 0,
                 progress: bool = False, log=print) -> Optional[ExportStats]:
    """Write (or finish) the store at ``path`` for every sample of ``dataset``.

    Returns the statistics on rank 0, ``None`` on the other ranks.
    """
    stats = export_stores([ExportJob(explainer, path, meta)], dataset, layout, ctx,
                          num_workers, progress, log)
    return None if stats is None else stats[0]


@dataclass
class ExportJob:
    """One store to write: its method's explainer, its path and its self-description."""

    explainer: Explainer
    path: str
    meta: StoreMeta


def export_stores(jobs: Sequence[ExportJob], dataset: ValDataset, layout: str,
                  ctx: Optional[DistContext] = None, num_workers: int = 0,
                  progress: bool = False, log=print) -> Optional[List[ExportStats]]:
    """Write (or finish) one store per job from one pass over ``dataset``: every work unit is
    decoded once and explained by each method whose store still lacks it.

    Stores resumed with another batch size than the rest (the file's own is kept, so that it
    ends as an uninterrupted run would) are done in a pass of their own. Returns the statistics
    per job on rank 0, ``None`` on the other ranks.
    """
    ctx = ctx or DistContext()
    names = [s.name for s in dataset.samples]
    labels = [s.label for s in dataset.samples]
    start = time.perf_counter()
    writers: List[StoreWriter] = []
    plan = None
    try:
        if ctx.is_main:
            try:
                plans = []
                for job in jobs:
                    writer = open_writer(job.path, layout, names, labels, job.meta)
                    writers.append(writer)
                    plans.append((writer.pending(), writer.meta.batch_size,
                                  bool(getattr(writer, "restarted", False))))
                plan = ("ok", plans)
            except StoreError as exc:
                plan = ("error", str(exc))
        plan = broadcast_from_main(plan, ctx)
        if plan[0] == "error":
            raise StoreError(plan[1])
        all_stats = []
        for job, (pending, batch_size, restarted) in zip(jobs, plan[1]):
            stats = ExportStats(path=job.path, num_images=len(names))
            stats.already_done = len(names) - sum(len(u) for u in pending)
            all_stats.append(stats)
            if not ctx.is_main:
                continue
            if restarted:
                log(f"{job.path}{PARTIAL_SUFFIX}: damaged by an interruption; starting it over",
                    file=sys.stderr)
            if batch_size != job.meta.batch_size:
                log(f"resuming {job.path} with the file's batch size {batch_size} (not "
                    f"{job.meta.batch_size}) so that it ends as an uninterrupted run would")
            if stats.already_done and pending:
                log(f"resuming {job.path}: {stats.already_done} of {len(names)} images already "
                    "written")
            elif not pending:
                log(f"{job.path} is already complete ({len(names)} images)")
        for batch_size in sorted({p[1] for p in plan[1]}):
            group = [j for j, p in enumerate(plan[1]) if p[1] == batch_size and p[0]]
            if group:
                _export_pass(jobs, writers, all_stats, group, [plan[1][j][0] for j in group],
                             dataset, ctx, num_workers, progress, log)
        if ctx.is_main:
            for writer in writers:
                writer.finish()
    finally:
        for writer in writers:
            writer.close()
    seconds = time.perf_counter() - start
    for stats in all_stats:
        stats.run_seconds = seconds
    return all_stats if ctx.is_main else None


def _export_pass(jobs: Sequence[ExportJob], writers: List[StoreWriter],
                 all_stats: List[ExportStats], group: List[int], pendings: List[List[List[int]]],
                 dataset: ValDataset, ctx: DistContext, num_workers: int, progress: bool,
                 log) -> None:
    """One pass over the units any job of ``group`` (same batch size) still needs."""
    needed: Dict[Tuple[int, ...], List[int]] = {}
    for j, pending in zip(group, pendings):
        for unit in pending:
            needed.setdefault(tuple(unit), []).append(j)
    units = sorted(needed)
    names = [s.name for s in dataset.samples]
    mine = [list(u) for u in units[ctx.rank::ctx.world_size]]
    rounds = -(-len(units) // ctx.world_size)
    device = jobs[group[0]].explainer.device
    loader = iter(decoded_batches(DataLoader(
        dataset, batch_sampler=mine, collate_fn=collate_for(dataset),
        **loader_options(num_workers, device.type == "cuda")),
        dataset, device)) if mine else iter(())
    warned = set()
    bar = None
    if progress and ctx.is_main and units:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(u) for u in units), unit="img", desc="save_h5")
    try:
        for _ in range(rounds):
            batch = next(loader, None)
            results, own = [], {}
            for j in ([] if batch is None else needed[tuple(batch["index"].tolist())]):
                tick = time.perf_counter()
                results.append((j, explain_unit(jobs[j].explainer, batch, jobs[j].meta.target)))
                own[j] = time.perf_counter() - tick
            gathered = gather_to_main(results, ctx)
            if not ctx.is_main:
                continue
            for j, result in sorted(gathered, key=lambda r: (r[1].indices[0], r[0])):
                tick = time.perf_counter()
                writers[j].write(result.indices, result.images, result.maps, result.valid)
                stats = all_stats[j]
                stats.seconds += own.pop(j, 0.0) + time.perf_counter() - tick
                stats.written += len(result.indices)
                for i, ok, error in zip(result.indices, result.valid, result.errors):
                    if not ok:
                        stats.unreadable.append(names[i])
                        if i not in warned:
                            warned.add(i)
                            log(f"warning: {dataset.samples[i].path}: unreadable, stored as "
                                f"invalid and left out of ABPC ({error})", file=sys.stderr)
            if bar is not None:
                bar.update(sum({r.indices[0]: len(r.indices) for _, r in gathered}.values()))
    finally:
        if bar is not None:
            bar.close()


def store_meta(method: str, model: torch.nn.Module, model_name: str,
               checkpoint: Optional[str], batch_size: int,
               checkpoint_sha256: Optional[str] = None, dataset: str = "ilsvrc",
               precision: str = "fp32", target: str = "label", data_root: str = "",
               split: str = "") -> StoreMeta:
    """The self-description of a store written with ``model`` (from ``checkpoint`` and the
    data set's ``data_root`` and ``split``)."""
    import timm

    from agcam.registry import method_class
    from models.vit import file_digest, model_geometry
    geometry = model_geometry(model)
    # the maps' size: the patch grid, or the input size for a pixel-level method
    pixel = method_class(method).resolution == "pixel"
    digest = checkpoint_sha256 if checkpoint_sha256 is not None else \
        (file_digest(checkpoint) if checkpoint else "")
    return StoreMeta(method=method, model=model_name, input_size=tuple(geometry.input_size),
                     grid=tuple(geometry.grid), mean=tuple(geometry.mean),
                     std=tuple(geometry.std), batch_size=int(batch_size),
                     checkpoint=os.path.basename(checkpoint) if checkpoint else "",
                     checkpoint_sha256=digest, timm_version=timm.__version__,
                     torch_version=str(torch.__version__), dataset=dataset,
                     precision=precision, target=target,
                     map_size=tuple(geometry.input_size if pixel else geometry.grid),
                     checkpoint_path=os.path.abspath(checkpoint) if checkpoint else "",
                     data_root=os.path.abspath(data_root) if data_root else "", split=split or "",
                     preprocessing=describe_transform(model))


def describe_transform(model) -> str:
    """The model's evaluation transform (timm's, as the loaders apply it) on one line."""
    from models.vit import build_transform
    return " ".join(str(build_transform(model)).split())

