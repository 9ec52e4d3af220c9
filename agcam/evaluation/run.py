"""The one runner: data -> model -> one prediction per image -> each method's maps, once per class
asked for -> every evaluation (:mod:`agcam.evaluation.base`) -> per-image records on disk.

What it guarantees:

- **One prediction per image**, from one forward pass shared by every method and evaluation:
  the plain model with its attention unfused (:func:`predict`), the forward pass Rollout and the
  released scripts classify with. Every method then explains that class (``target=``), so every
  table counts the same images.
- **Each method explains each image once per class**: the predicted class where an evaluation
  reads it, the label where one reads that, each as one call on the unit; where every label of
  the unit is its prediction (or the method is not class-specific) the one call serves both.
- **Batched re-scoring**: the evaluations that re-score perturbed images and read the same
  heatmap (same class, same recipe) go through one
  :func:`agcam.evaluation.curves.perturbation_curves` call per unit, so their forward passes are
  batched across tests, steps and images.
- **Resumable to the bit**: work is cut into fixed units of ``batch_size`` consecutive images
  (:func:`agcam.store.work_units`), each always computed as the same batch. After a unit, one
  JSON line per method (its records, predictions, seconds) is appended to
  ``DIR/records/rank<r>.jsonl`` and flushed to disk. A run killed at any point (SIGKILL
  included) and started again skips the units already recorded, ignores a torn last line, and
  summarises the same records in the same order: the same numbers to the bit. The records are
  small (a few hundred bytes per image and method, the bytes are reported); no map is kept but
  those of the report's example images.
- **torchrun**: the units still to do are dealt round-robin to the processes; each writes its
  own records file, rank 0 reads them all at the end.

The run's settings are kept in ``DIR/run.json``; resuming with settings that change the numbers
(model, checkpoint, data set, batch size, precision, evaluation options) is refused naming both.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agcam.errors import UsageError
from agcam.evaluation.base import (
    CurveEvaluation,
    EvalBatch,
    Evaluation,
    available_evaluations,
    get_evaluation,
)

#: the version of DIR's layout (records and run.json)
RUN_FORMAT_VERSION = 1
#: how many images of the first unit keep their maps, for the report's grid of examples
EXAMPLE_IMAGES = 4
#: settings that decide the numbers: a resumed run must have the same
DECISIVE = ("model", "checkpoint", "checkpoint_sha256", "dataset", "data_root", "split",
            "limit", "batch_size", "score_batch_size", "precision", "decode", "options",
            "prompts")


@dataclass
class RunConfig:
    """What ``agcam evaluate`` was asked to do (JSON in ``DIR/run.json``)."""

    methods: List[str]
    evaluations: List[str]
    model: str
    dataset: str
    data_root: str
    out: str
    checkpoint: Optional[str] = None
    checkpoint_sha256: str = ""
    split: Optional[str] = None
    limit: Optional[int] = None
    batch_size: int = 16
    score_batch_size: int = 64
    precision: str = "fp32"
    decode: str = "pil"
    num_workers: int = 0
    progress: bool = True
    #: evaluation options: thresholds, maxboxacc_step, auc, rise_step
    options: Dict[str, Any] = field(default_factory=dict)
    #: the prompts file of a zero-shot classifier (--prompts), if the model is one
    prompts: Optional[str] = None
    #: methods that refuse the model, and why (filled by :func:`run`; left out of the run)
    refused: Dict[str, str] = field(default_factory=dict)


# -- the one prediction ----------------------------------------------------------------------------

def predict(model, images, precision: str = "fp32"):
    """``[B]`` predicted classes: ``model(images)`` in eval mode with every attention unfused
    (eager softmax(q k^T) v, as the released code's timm 0.6.12 and Rollout's forward), at
    ``precision``; the model is left as it was."""
    import torch

    from agcam.precision import precision as precision_context
    from models.attention import AttentionRecorder

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), precision_context(precision, images.device.type), \
                AttentionRecorder(model, keep_scores=False, grad=False):
            logits = model(images)
    finally:
        model.train(was_training)
    return logits.argmax(dim=1)


# -- the records on disk ---------------------------------------------------------------------------

class RecordLog:
    """``DIR/records/rank<r>.jsonl``: one line per (method, unit), appended and flushed."""

    def __init__(self, out: str, rank: int = 0):
        self.directory = os.path.join(out, "records")
        os.makedirs(self.directory, exist_ok=True)
        self.path = os.path.join(self.directory, f"rank{rank}.jsonl")
        self._repair()
        self.handle = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        """Cut a line torn by a kill (no final newline) so that the next line starts clean."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if data and not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, line: Dict[str, Any]) -> None:
        self.handle.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    @staticmethod
    def read_all(out: str) -> List[Dict[str, Any]]:
        """Every complete line of every rank's file (a torn line is skipped)."""
        directory = os.path.join(out, "records")
        lines = []
        if not os.path.isdir(directory):
            return lines
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".jsonl"):
                continue
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                for text in handle:
                    if text.endswith("\n"):
                        try:
                            lines.append(json.loads(text))
                        except json.JSONDecodeError:
                            continue
        return lines

    @staticmethod
    def size(out: str) -> int:
        directory = os.path.join(out, "records")
        return sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory)
                   if n.endswith(".jsonl")) if os.path.isdir(directory) else 0


def check_config(out: str, config: RunConfig) -> None:
    """Write ``DIR/run.json``, or refuse a resume whose decisive settings differ."""
    path = os.path.join(out, "run.json")
    mine = asdict(config)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--out {out}: {path} is unreadable ({exc}); use a new folder")
        for key in DECISIVE:
            if recorded.get(key) != mine.get(key):
                raise UsageError(f"--out {out} holds a run with {key} {recorded.get(key)!r}; "
                                 f"this command has {key} {mine.get(key)!r} (use another --out, "
                                 "or the same settings to resume)")
    recorded = dict(mine, format_version=RUN_FORMAT_VERSION)
    recorded.pop("progress", None)
    recorded.pop("num_workers", None)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(recorded, handle, indent=1)
    os.replace(tmp, path)


# -- the data --------------------------------------------------------------------------------------

@dataclass
class Source:
    """The data set as the runner reads it: a dataset of items, its collate function, the
    image names and labels (``None`` without labels), and what it provides."""

    name: str
    prefix: str
    dataset: Any
    collate: Any
    names: List[str]
    labels: Optional[List[int]]
    provides: Tuple[str, ...]          # of "labels", "boxes", "masks"
    description: str
    split: Optional[str] = None
    samples: Optional[list] = None
    #: images the data set lists before --limit
    listed: int = 0


SEGMENTATION_DATASET = "imagenet_seg"


def open_source(config: RunConfig, model) -> Source:
    """The data set ``config`` names, listed (UsageError for a bad root or name)."""
    if config.dataset == SEGMENTATION_DATASET:
        from agcam.datasets.imagenet_seg import (
            SegmentationDataset,
            collate_segmentation,
            count_images,
            find_mat_file,
        )
        path = find_mat_file(config.data_root)
        count_images(path)
        dataset = SegmentationDataset(path, model, limit=config.limit)
        names = [f"{i:05d}" for i in range(len(dataset))]
        return Source(SEGMENTATION_DATASET, "IMAGENET_SEG", dataset, collate_segmentation,
                      names, None, ("masks",),
                      f"data set imagenet_seg: {dataset.listed} listed, {len(dataset)} used "
                      f"({path})", listed=dataset.listed)
    from agcam.datasets import get_dataset, list_split
    from agcam.datasets.decode import collate_for, make_dataset

    spec = get_dataset(config.dataset)
    listing = list_split(spec, config.data_root, config.split, limit=config.limit)
    dataset = make_dataset(listing.samples, model, keep_image=False, decode=config.decode)
    return Source(spec.name, spec.prefix, dataset, collate_for(dataset),
                  [s.name for s in listing.samples], [s.label for s in listing.samples],
                  ("labels", "boxes"), listing.describe(), split=listing.split,
                  samples=listing.samples, listed=listing.listed)


def applicable(evaluation: Evaluation, source: Source) -> Optional[str]:
    """Why ``evaluation`` cannot run on ``source`` (``None``: it can)."""
    needs = evaluation.needs
    for what, needed in (("labels", needs.labels or needs.target == "label"),
                         ("boxes", needs.boxes), ("masks", needs.masks)):
        if needed and what not in source.provides:
            return f"the {source.name} data set has no {what}"
    return None


# -- the run ---------------------------------------------------------------------------------------

@dataclass
class _Batch:
    """What :class:`agcam.evaluation.curves.CurveRun` reads of a batch."""

    names: List[str]
    labels: Any
    images: Any
    heatmaps: Any
    indices: List[int]
    predictions: List[int]


def _maps_for(explainer, inputs, predictions, labels, needed: Sequence[str]):
    """``{target: raw maps}`` for the classes ``needed``, each from one call on the whole unit
    (as ``save_h5.py`` computes each store). A map depends in its last float32 bits on the
    batch it was computed in, so the label's maps are not patched from a smaller batch: the
    unit is explained for its labels only where a label differs from the prediction (where
    none differs, or the method is not class-specific, the two calls would be the same)."""
    import torch

    maps = {}
    if "predicted" in needed:
        maps["predicted"] = explainer.explain(inputs, target=predictions).maps
    if "label" in needed:
        labels_t = torch.as_tensor(labels, dtype=torch.long, device=predictions.device)
        same = bool((predictions == labels_t).all()) or \
            not getattr(explainer, "class_specific", True)
        if "predicted" in maps and same:
            maps["label"] = maps["predicted"]
        else:
            maps["label"] = explainer.explain(inputs, target=labels_t).maps
    return maps


class MapCache:
    """``DIR/cache/<method>.h5``: the raw maps the re-scoring evaluations read, one dataset
    per class (``label``, ``predicted``), written unit by unit before the unit's record line,
    so that a resumed run re-scores from them and explains no image twice."""

    def __init__(self, out: str, method: str, num_images: int, map_size, targets):
        import h5py

        directory = os.path.join(out, "cache")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{method}.h5")
        self.file = h5py.File(self.path, "a")
        for target in targets:
            if target not in self.file:
                self.file.create_dataset(target, shape=(num_images, *map_size), dtype="float32",
                                         chunks=(1, *map_size), compression="gzip",
                                         compression_opts=1)

    def write(self, target: str, indices: Sequence[int], maps) -> None:
        for k, index in enumerate(indices):
            self.file[target][index] = maps[k]

    def read(self, target: str, indices: Sequence[int]):
        import numpy as np
        return np.stack([self.file[target][index] for index in indices])

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CurveStream:
    """The re-scoring evaluations of one method that read the same heatmap (class and recipe):
    one :class:`agcam.evaluation.curves.CurveRun` fed, in index order, batches of
    ``read_batch`` readable images (``ABPC.py``'s and ``perturbation.py``'s batches over a
    store), so its forward passes are those of the scripts, to the bit."""

    def __init__(self, evaluations, target: str, recipe: str, model, geometry, precision: str,
                 score_batch_size: int):
        from agcam.evaluation.curves import CurveRun

        self.evaluations, self.target, self.recipe = list(evaluations), target, recipe
        self.geometry = geometry
        tests = [t for ev in self.evaluations for t in ev.tests(geometry)]
        self.run = CurveRun(model, tests, score_batch_size, precision)
        self.read_batch = max(1, min(score_batch_size, STORE_READ_BATCH))
        self.pending: List[tuple] = []

    def add(self, names, labels, inputs, maps, indices, predictions) -> None:
        for k in range(len(indices)):
            self.pending.append((names[k], labels[k], inputs[k], maps[k], indices[k],
                                 predictions[k]))
        while len(self.pending) >= self.read_batch:
            self._feed(self.pending[:self.read_batch])
            self.pending = self.pending[self.read_batch:]

    def _feed(self, rows) -> None:
        import torch

        from agcam.maps import to_heatmap

        maps = torch.stack([torch.as_tensor(r[3]) for r in rows])
        self.run.add(_Batch(names=[r[0] for r in rows], labels=[r[1] for r in rows],
                            images=torch.stack([r[2] for r in rows]),
                            heatmaps=to_heatmap(maps, self.geometry.input_size, self.recipe),
                            indices=[r[4] for r in rows], predictions=[r[5] for r in rows]))

    def finish(self) -> Dict[str, Dict[int, Dict[str, Any]]]:
        """``{evaluation: {image index: record}}``."""
        if self.pending:
            self._feed(self.pending)
            self.pending = []
        results = self.run.finish()
        rows = range(results.num_images)
        return {ev.name: dict(zip(results.indices, ev.records_from(results, rows)))
                for ev in self.evaluations}


#: the store read batch of ABPC.py and perturbation.py (min(--batch_size, 32))
STORE_READ_BATCH = 32


def _plain_records(evaluations: Sequence[Evaluation], maps, batch: Dict[str, Any], rows,
                   labels, predictions, model, geometry, precision: str, explainer=None
                   ) -> Dict[str, List[Dict[str, Any]]]:
    """Every evaluation but the re-scoring ones: records of the readable ``rows`` of a unit.
    ``explainer`` (the method's) reaches them as ``EvalBatch.extra["explainer"]``, for an
    evaluation that explains again (e.g. on a randomised copy of the model)."""
    records = {}
    indices = [int(batch["index"][r]) for r in rows]
    for ev in evaluations:
        if isinstance(ev, CurveEvaluation):
            continue
        eval_batch = EvalBatch(
            indices=indices, names=[batch["_names"][r] for r in rows], labels=labels,
            predictions=predictions.tolist(), inputs=batch["input"], maps=maps[ev.needs.target],
            model=model, geometry=geometry, precision=precision,
            boxes=[batch["boxes"][r] for r in rows] if "boxes" in batch else None,
            source_boxes=[batch["_source_boxes"][r] for r in rows]
            if "_source_boxes" in batch else None,
            sizes=[tuple(batch["size"][r].tolist()) for r in rows] if "size" in batch else None,
            masks=batch["mask"][rows].numpy() if "mask" in batch else None,
            extra={"explainer": explainer})
        records[ev.name] = ev.score(eval_batch)
    return records


def run(config: RunConfig, model, ctx=None, log=print, report: bool = True
        ) -> Optional[Dict[str, Any]]:
    """Run ``config`` on ``model`` (a timm ViT or anything :func:`agcam.get_explainer` takes) and
    write the report into ``config.out`` (unless not ``report``: a script that writes its own
    files). Returns the results (``results.json``'s content) on rank 0, ``None`` elsewhere.
    Under torchrun pass the :class:`agcam.distributed.DistContext`. The per-image records stay
    in ``config.out`` (:func:`method_records`)."""
    from torch.utils.data import DataLoader

    from agcam import distributed
    from agcam.datasets.common import loader_options
    from agcam.datasets.decode import decoded_batches
    from agcam.registry import get_explainer
    from agcam.store import work_units

    ctx = ctx or distributed.DistContext()
    os.makedirs(config.out, exist_ok=True)
    source = open_source(config, model)
    config.split = source.split
    if ctx.is_main:
        check_config(config.out, config)
        log(source.description)
    evaluations, skipped = [], {}
    for name in config.evaluations:
        ev = get_evaluation(name, **config.options)
        reason = applicable(ev, source)
        if reason is None:
            evaluations.append(ev)
        else:
            skipped[name] = reason
    if not evaluations:
        raise UsageError(f"--eval {' '.join(config.evaluations)}: none applies to --dataset "
                         f"{source.name} ({'; '.join(sorted(set(skipped.values())))})")
    explainers, refused = {}, {}
    for method in config.methods:
        try:
            explainers[method] = get_explainer(method, model, precision=config.precision)
        except ValueError as exc:   # a method that refuses the model (e.g. a CLIP-only one)
            refused[method] = str(exc).splitlines()[0]
    if not explainers:
        raise UsageError(f"--method {' '.join(config.methods)}: every method refuses the model "
                         f"({'; '.join(refused.values())})")
    if refused and ctx.is_main:
        for method, reason in refused.items():
            log(f"warning: {method} is left out: {reason}")
    config = RunConfig(**{**asdict(config), "methods": list(explainers), "refused": refused})
    first = explainers[config.methods[0]]
    model = first.model          # a converted model (Hugging Face) is converted once
    geometry, device = first.geometry, first.device
    plain = [ev for ev in evaluations if not isinstance(ev, CurveEvaluation)]
    groups: Dict[Tuple[str, str], List[CurveEvaluation]] = {}
    for ev in evaluations:
        if isinstance(ev, CurveEvaluation):
            groups.setdefault((ev.needs.target, ev.recipe), []).append(ev)
    needed = sorted({ev.needs.target for ev in evaluations})
    cached = sorted({target for target, _ in groups})
    # one snapshot of what is done, rank 0's, taken before any process writes a line: every
    # process then deals the same pending units
    snapshot = None
    if ctx.is_main:
        snapshot = sorted((line["method"], line["unit"]) for line in RecordLog.read_all(config.out)
                          if set(ev.name for ev in plain) <= set(line["records"])
                          and set(cached) <= set(line.get("cached", [])))
    done_keys = {tuple(key) for key in distributed.broadcast_from_main(snapshot, ctx)}
    done_lines = {(line["method"], line["unit"]): line
                  for line in RecordLog.read_all(config.out)
                  if (line["method"], line["unit"]) in done_keys}
    units = work_units(len(source.names), config.batch_size)
    pending = [u for u in units
               if any((m, u[0]) not in done_lines for m in config.methods)]
    if ctx.is_main and len(pending) < len(units):
        log(f"resuming {config.out}: {len(units) - len(pending)} of {len(units)} units of "
            f"{config.batch_size} images already explained by every method")
    # the re-scoring evaluations stream every unit in order (the done ones from the cache)
    mine = (units if groups else pending)[ctx.rank::ctx.world_size]
    record_log = RecordLog(config.out, ctx.rank)
    caches = {m: MapCache(config.out, m, len(source.names), explainers[m].map_size(), cached)
              for m in config.methods} if groups else {}
    streams = {(m, key): CurveStream(group, key[0], key[1], model, geometry, config.precision,
                                     config.score_batch_size)
               for m in config.methods for key, group in groups.items()}
    bar = None
    if config.progress and ctx.is_main and mine:
        from tqdm import tqdm
        bar = tqdm(total=sum(len(u) for u in mine), unit="img", desc="evaluate",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        loader = decoded_batches(DataLoader(
            source.dataset, batch_sampler=mine, collate_fn=source.collate,
            **loader_options(config.num_workers, device.type == "cuda")),
            source.dataset, device) if mine else []
        for batch in loader:
            _unit(batch, config, source, explainers, evaluations, plain, groups, needed,
                  done_lines, record_log, caches, streams, model, geometry, device, bar, ctx)
        curve_records: Dict[str, Dict[str, Dict[int, Any]]] = {m: {} for m in config.methods}
        for (method, _), stream in streams.items():
            curve_records[method].update(stream.finish())
    finally:
        record_log.close()
        for cache in caches.values():
            cache.close()
        if bar is not None:
            bar.close()
    parts = distributed.gather_to_main([curve_records], ctx)   # also: every record is written
    if not ctx.is_main:
        return None
    merged: Dict[str, Dict[str, Dict[int, Any]]] = {m: {} for m in config.methods}
    for part in parts:
        for method, by_eval in part.items():
            for name, records in by_eval.items():
                merged[method].setdefault(name, {}).update(records)
    return collect(config, source, evaluations, skipped, geometry, explainers, merged, report)


def _unit(batch, config, source, explainers, evaluations, plain, groups, needed, done_lines,
          record_log, caches, streams, model, geometry, device, bar, ctx) -> None:
    """One unit of images: the prediction, each method's maps and records (or, for a unit
    already done, its cached maps), and the re-scoring streams fed."""
    import numpy as np
    import torch

    unit_indices = batch["index"].tolist()
    unit = unit_indices[0]
    valid = batch["valid"].numpy().astype(bool)
    rows = [int(r) for r in np.flatnonzero(valid)]
    batch["_names"] = [source.names[i] for i in unit_indices]
    if source.samples is not None:
        batch["_source_boxes"] = [source.samples[i].boxes for i in unit_indices]
    unreadable = [[unit_indices[k], source.names[unit_indices[k]],
                   None if source.labels is None else source.labels[unit_indices[k]],
                   str(batch["error"][k])] for k in np.flatnonzero(~valid)]
    for entry in unreadable:
        text = f"warning: skipping unreadable image {entry[1]} ({entry[3]})"
        if bar is not None:
            bar.write(text, file=sys.stderr)
        elif ctx.is_main or ctx.world_size > 1:
            print(text, file=sys.stderr, flush=True)
    indices = [unit_indices[r] for r in rows]
    names = [batch["_names"][r] for r in rows]
    labels = None if source.labels is None else [source.labels[i] for i in indices]
    inputs = predictions = None
    predict_seconds = 0.0
    if rows:
        inputs = batch["input"][torch.from_numpy(np.asarray(rows))].to(device, non_blocking=True)
        inputs = inputs.to(next(model.parameters()).dtype)
        todo = [m for m in config.methods if (m, unit) not in done_lines]
        if todo:
            tick = time.perf_counter()
            predictions = predict(model, inputs, config.precision)
            predict_seconds = time.perf_counter() - tick
        else:   # every method done: the recorded prediction
            line = done_lines[(config.methods[0], unit)]
            predictions = torch.as_tensor(line["predictions"], dtype=torch.long, device=device)
    sub = dict(batch, input=inputs)
    stream_labels = labels if labels is not None else [-1] * len(rows)
    for method in config.methods:
        line = done_lines.get((method, unit))
        if line is not None:
            if rows and streams:
                recorded = torch.as_tensor(line["predictions"], dtype=torch.long)
                for (m, (target, _)), stream in streams.items():
                    if m == method:
                        maps = torch.from_numpy(caches[method].read(target, indices))
                        stream.add(names, stream_labels, inputs, maps.to(device), indices,
                                   recorded.tolist())
            continue
        tick = time.perf_counter()
        records = {ev.name: [] for ev in plain}
        if rows:
            maps = _maps_for(explainers[method], inputs, predictions, labels, needed)
            records = _plain_records(evaluations, maps, sub, rows, labels, predictions, model,
                                     geometry, config.precision, explainers[method])
            for target in {t for t, _ in groups}:
                caches[method].write(target, indices, maps[target].detach().float().cpu().numpy())
            if caches:
                caches[method].flush()
            for (m, (target, _)), stream in streams.items():
                if m == method:
                    stream.add(names, stream_labels, inputs, maps[target], indices,
                               predictions.tolist())
            if unit == 0:
                _save_examples(os.path.join(config.out, "examples"), method, maps, inputs,
                               names, predictions, geometry)
        record_log.append({
            "method": method, "unit": unit, "indices": indices, "names": names,
            "labels": labels, "predictions": [] if predictions is None else predictions.tolist(),
            "unreadable": unreadable, "seconds": time.perf_counter() - tick,
            "predict_seconds": predict_seconds, "records": records,
            "cached": sorted({t for t, _ in groups})})
    if bar is not None:
        bar.update(len(unit_indices))


def _save_examples(directory: str, method: str, maps, inputs, names, predictions,
                   geometry) -> None:
    """The first images' predicted-class maps and the images themselves, for the report."""
    import numpy as np

    os.makedirs(directory, exist_ok=True)
    count = min(EXAMPLE_IMAGES, len(names))
    raw = maps.get("predicted", maps.get("label"))[:count]
    mean = np.asarray(geometry.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(geometry.std, dtype=np.float32).reshape(1, 3, 1, 1)
    images = inputs[:count].detach().float().cpu().numpy() * std + mean
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    path = os.path.join(directory, f"{method}.npz")
    np.savez_compressed(path + ".tmp.npz", maps=raw.detach().float().cpu().numpy(),
                        images=images, predictions=predictions[:count].cpu().numpy(),
                        names=np.array(names[:count]))
    os.replace(path + ".tmp.npz", path)


def method_lines(out: str, methods: Sequence[str]) -> Dict[str, List[Dict[str, Any]]]:
    """Every method's record lines in ``out``, in unit order (a unit done twice: the same)."""
    by_method: Dict[str, Dict[int, Dict[str, Any]]] = {m: {} for m in methods}
    for line in RecordLog.read_all(out):
        if line["method"] in by_method:
            by_method[line["method"]][line["unit"]] = line
    return {m: [units[u] for u in sorted(units)] for m, units in by_method.items()}


def record_context(lines: Sequence[Dict[str, Any]], **context) -> Dict[str, Any]:
    """What :meth:`Evaluation.summarize` reads beside the records: every evaluated image's index,
    name, label and prediction, and the unreadable images, from a method's record lines."""
    return dict(context,
                indices=[i for line in lines for i in line["indices"]],
                names=[n for line in lines for n in line["names"]],
                labels=[v for line in lines for v in (line["labels"] or
                                                      [-1] * len(line["indices"]))],
                predictions=[p for line in lines for p in line["predictions"]],
                unreadable=[tuple(u[:3]) for line in lines for u in line["unreadable"]])


def method_records(out: str, method: str, evaluation: str, **context):
    """``(context, records)`` of one method's plain (not re-scoring) evaluation in ``out``."""
    lines = method_lines(out, [method])[method]
    return (record_context(lines, method=method, **context),
            [r for line in lines for r in line["records"][evaluation]])


def collect(config: RunConfig, source: Source, evaluations: Sequence[Evaluation],
            skipped: Dict[str, str], geometry, explainers,
            curve_records: Dict[str, Dict[str, Dict[int, Any]]], report: bool = True
            ) -> Dict[str, Any]:
    """Summaries of every method and evaluation from the records on disk and the re-scoring
    streams' records (rank 0), and the report written into ``config.out``."""
    from agcam.report import build_results, write_report

    all_lines = method_lines(config.out, config.methods)
    summaries: Dict[str, Dict[str, Any]] = {}
    seconds: Dict[str, float] = {}
    evaluated = 0
    for method in config.methods:
        lines = all_lines[method]
        seconds[method] = sum(line["seconds"] for line in lines)
        context = record_context(lines, method=method, model=config.model,
                                 dataset=source.name, prefix=source.prefix, geometry=geometry)
        evaluated = len(context["indices"])
        summaries[method] = {}
        for ev in evaluations:
            if isinstance(ev, CurveEvaluation):
                by_index = curve_records.get(method, {}).get(ev.name, {})
                records = [by_index[i] for i in context["indices"]]
            else:
                records = [r for line in lines for r in line["records"][ev.name]]
            if ev.needs.correct_only or records:
                summaries[method][ev.name] = ev.summarize(records, context)
    predict_seconds = sum(line.get("predict_seconds", 0.0)
                          for line in all_lines[config.methods[0]])
    cache_bytes = RecordLog.size(config.out) + sum(
        os.path.getsize(os.path.join(config.out, "cache", n))
        for n in (os.listdir(os.path.join(config.out, "cache"))
                  if os.path.isdir(os.path.join(config.out, "cache")) else []))
    results = build_results(config, source, evaluations, skipped, summaries, seconds,
                            predict_seconds, evaluated, cache_bytes, geometry, explainers)
    if report:
        write_report(config.out, results)
    return results


def resolve_evaluations(names: Sequence[str]) -> List[str]:
    """``--eval`` as given (names or ``all``) -> the evaluation names, checked (UsageError)."""
    names = [names] if isinstance(names, str) else list(names)
    known = available_evaluations()
    if "all" in names:
        if len(names) > 1:
            raise UsageError(f"--eval {' '.join(names)}: all cannot be combined with names")
        return list(known)
    for name in names:
        if name not in known:
            raise UsageError(f"--eval {name}: unknown evaluation; choose from "
                             f"{', '.join(known)} or all")
    return list(dict.fromkeys(names))


def evaluate(model="vit_agcam_learnt", methods="all", evals="all", dataset: str = "ilsvrc",
             data_root: Optional[str] = None, out: str = "evaluation",
             checkpoint: Optional[str] = None, precision: str = "fp32", batch_size: int = 16,
             score_batch_size: int = 64, limit: Optional[int] = None, split: Optional[str] = None,
             device: Optional[str] = None, progress: bool = False, **options
             ) -> Dict[str, Any]:
    """Every method x every evaluation in one run, in Python: ``agcam evaluate``'s work.

    ``model``: a timm name (created with ``checkpoint`` if given) or a model object; ``methods``
    and ``evals``: names or ``"all"``; ``options``: ``thresholds``, ``maxboxacc_step``,
    ``auc``, ``rise_step``. Writes the report into ``out`` and returns ``results.json``'s
    content. Resumes a run already in ``out``.
    """
    import torch

    from agcam.runtime import resolve_methods
    from models.vit import create_model, file_digest

    if isinstance(model, str):
        name = model
        target = torch.device(device) if device else torch.device("cpu")
        model = create_model(name, checkpoint=checkpoint, device=target)
    else:
        name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__) \
            if hasattr(model, "default_cfg") else type(model).__name__
    if data_root is None:
        raise UsageError("data_root: required (the folder holding the data set)")
    config = RunConfig(methods=resolve_methods(methods, precision),
                       evaluations=resolve_evaluations(evals), model=name, dataset=dataset,
                       data_root=os.path.abspath(data_root), out=out, checkpoint=checkpoint,
                       checkpoint_sha256=file_digest(checkpoint) if checkpoint else "",
                       split=split, limit=limit, batch_size=batch_size,
                       score_batch_size=score_batch_size, precision=precision,
                       progress=progress, options=dict(options))
    return run(config, model, log=lambda *a, **k: None)
