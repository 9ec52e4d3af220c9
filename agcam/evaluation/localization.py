"""Weakly-supervised localization (ILSVRC, VOC, CUB): the evaluation loop under ``localization.py``.

For every image the model classifies correctly (as released: the map of a wrong prediction
explains another class), the raw map of the predicted class is upsampled to the input size,
min-max normalised, thresholded, boxed (:mod:`agcam.evaluation.boxes`) and compared with the
union of the ground-truth boxes (:mod:`agcam.evaluation.box_metrics`). Maps are computed once
per batch; the boxes once per threshold.

Means are float32 running sums, as released, over the counted images in the order the released
code visits them where directory listings come sorted (Windows, where it was run): by class
folder, then by name; so they do not depend on batching or on the number of processes. The
order moves the last float32 bit of a mean (docs/localization.md: the reference fixture was
made on Linux, whose ``glob`` listed one folder's images in another order).
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from agcam.datasets.common import Sample
from agcam.evaluation.box_metrics import (
    METRICS,
    confusion_counts,
    localization_metrics,
    mean_metric,
)
from agcam.evaluation.boxes import boxes_to_mask, heatmap_to_boxes
from agcam.evaluation.wsol import BoxAccuracy, accumulate_maps, label_maps
from agcam.explainer import Explainer
from agcam.maps import to_heatmap

COUNTED, MISCLASSIFIED, UNREADABLE = "counted", "misclassified", "unreadable"


def threshold_key(threshold: float) -> str:
    """How a threshold names its results (``0.5`` -> ``"0.5"``)."""
    return repr(float(threshold))


@dataclass
class ImageResult:
    """One image: its prediction and, when counted, the five metrics per threshold."""

    index: int
    name: str
    label: int
    prediction: Optional[int]
    status: str
    #: threshold key -> the values of :data:`agcam.evaluation.box_metrics.METRICS` (float32
    #: values as floats)
    metrics: Dict[str, List[float]] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        return self.status == COUNTED


@dataclass
class Timer:
    """Seconds spent per stage of the loop (to show that boxes and metrics are not the cost).

    ``boxes`` is the work of boxes and metrics (done in a background thread, overlapping the
    next batch's maps); ``boxes_wait`` the time the loop stood waiting for that thread.
    """

    data: float = 0.0
    explain: float = 0.0
    boxes: float = 0.0
    boxes_wait: float = 0.0
    total: float = 0.0
    images: int = 0
    #: method -> seconds of its maps (``explain`` is their sum)
    per_method: Dict[str, float] = field(default_factory=dict)

    def share(self, seconds: float) -> float:
        return seconds / self.total if self.total > 0 else 0.0


def localize_batch(heatmaps: np.ndarray, boxes: Sequence[Sequence[Sequence[int]]],
                   thresholds: Sequence[float]) -> List[Dict[str, List[float]]]:
    """Metrics of ``[B, H, W]`` heatmaps in [0, 1] against their ground-truth boxes
    (model-input pixels), for each threshold: one ``{threshold key: [5 values]}`` per image."""
    size = heatmaps.shape[-2:]
    gt = np.stack([boxes_to_mask(b, size) for b in boxes])
    out: List[Dict[str, List[float]]] = [{} for _ in range(len(heatmaps))]
    for threshold in thresholds:
        predicted = np.stack([boxes_to_mask(heatmap_to_boxes(h, threshold), size)
                              for h in heatmaps])
        values = localization_metrics(*confusion_counts(predicted, gt))
        table = np.stack([values[m] for m in METRICS], axis=1).tolist()
        for i, row in enumerate(table):
            out[i][threshold_key(threshold)] = row
    return out


def _timed_wsol(accumulator, maps, source_boxes, sizes, input_size):
    tick = time.perf_counter()
    accumulate_maps(accumulator, maps, source_boxes, sizes, input_size)
    return None, time.perf_counter() - tick


def _timed_localize(heatmaps, boxes, thresholds):
    tick = time.perf_counter()
    per_image = localize_batch(heatmaps, boxes, thresholds)
    return per_image, time.perf_counter() - tick


def evaluate(explainer: Explainer, loader: Iterable[Dict[str, Any]], samples: Sequence[Sample],
             thresholds: Sequence[float], progress: bool = True, total: Optional[int] = None,
             timer: Optional[Timer] = None, warn=None, overlap: bool = True
             ) -> List[ImageResult]:
    """Localize every image ``loader`` yields with one method: :func:`evaluate_methods`'s list."""
    return evaluate_methods({"method": explainer}, loader, samples, thresholds, progress, total,
                            timer, warn, overlap)["method"]


def evaluate_methods(explainers: Mapping[str, Explainer], loader: Iterable[Dict[str, Any]],
                     samples: Sequence[Sample], thresholds: Sequence[float],
                     progress: bool = True, total: Optional[int] = None,
                     timer: Optional[Timer] = None, warn=None, overlap: bool = True,
                     wsol: Optional[Mapping[str, BoxAccuracy]] = None
                     ) -> Dict[str, List[ImageResult]]:
    """Localize every image ``loader`` yields (batches of
    :func:`agcam.datasets.common.collate`) with every
    method of ``explainers`` (name -> explainer): each batch is decoded once and explained by
    each method in turn.

    Returns per method one :class:`ImageResult` per image, in ``index`` order. Unreadable images
    are reported (once) through ``warn`` (default: a line on stderr) and kept as ``unreadable``;
    those the model misclassifies as ``misclassified``. With ``overlap`` the boxes and metrics of
    a batch are computed in a background thread while the device computes the next maps (OpenCV
    and NumPy release the GIL), so they cost no time unless they take longer than the maps; the
    numbers are the same either way.

    ``wsol`` (name -> :class:`agcam.evaluation.wsol.BoxAccuracy`): MaxBoxAcc / MaxBoxAccV2 in the
    same pass, every readable image counted with the map of its label class
    (:func:`agcam.evaluation.wsol.label_maps`: the predicted-class map where the prediction is
    right, the misclassified ones explained again); the accumulators are filled in place.
    """
    timer = timer if timer is not None else Timer()
    names = list(explainers)
    first = explainers[names[0]]
    device = first.device
    input_size = first.geometry.input_size
    results: Dict[str, List[ImageResult]] = {name: [] for name in names}
    pending: Deque[Tuple[str, Future, List[Tuple[int, str, int, int]]]] = deque()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localize") if overlap else None
    bar = tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True,
               file=sys.stderr, desc="localization")
    warn = warn or (lambda text: bar.write(text, file=sys.stderr))

    def collect(block: bool) -> None:
        while pending and (block or pending[0][1].done()):
            name, future, counted = pending.popleft()
            tick = time.perf_counter()
            per_image, seconds = future.result()
            timer.boxes_wait += time.perf_counter() - tick
            timer.boxes += seconds
            if counted is None:   # MaxBoxAcc counts, accumulated in place
                continue
            results[name].extend(ImageResult(index, sample_name, label, prediction, COUNTED,
                                             metrics)
                                 for (index, sample_name, label, prediction), metrics
                                 in zip(counted, per_image))

    start = time.perf_counter()
    mark = start
    try:
        for batch in loader:
            now = time.perf_counter()
            timer.data += now - mark
            indices = batch["index"].tolist()
            labels = batch["label"].tolist()
            valid = batch["valid"].numpy()
            for i in np.flatnonzero(~valid):
                sample = samples[indices[i]]
                warn(f"warning: skipping unreadable image {sample.path} ({batch['error'][i]})")
                for name in names:
                    results[name].append(ImageResult(indices[i], sample.name, labels[i], None,
                                                     UNREADABLE))
            rows = np.flatnonzero(valid)
            if len(rows):
                inputs = batch["input"].to(device, non_blocking=True)  # pinned: overlaps
                if len(rows) < len(valid):
                    inputs = inputs[torch.from_numpy(rows).to(device)]
                for name in names:
                    tick = time.perf_counter()
                    predicted, maps = explainers[name].explain(inputs)
                    predictions = predicted.cpu().tolist()
                    if wsol is not None:
                        label_map = label_maps(explainers[name], inputs, predicted, maps,
                                               [labels[row] for row in rows])
                        job = (_timed_wsol, wsol[name], label_map.cpu(),
                               [samples[indices[row]].boxes for row in rows],
                               [batch["size"][row].tolist() for row in rows], input_size)
                        if pool is not None:
                            future = pool.submit(*job)
                        else:
                            future = Future()
                            future.set_result(job[0](*job[1:]))
                        pending.append((name, future, None))
                    correct = []
                    for k, row in enumerate(rows):
                        index = indices[row]
                        if predictions[k] == labels[row]:
                            correct.append(k)
                        else:
                            results[name].append(ImageResult(index, samples[index].name,
                                                             labels[row], predictions[k],
                                                             MISCLASSIFIED))
                    if correct:
                        # Upsampling and normalising stay on the device; the copy synchronises.
                        heatmaps = to_heatmap(maps[correct], input_size).cpu().numpy()
                        boxes = [batch["boxes"][rows[k]] for k in correct]
                        counted = [(indices[rows[k]], samples[indices[rows[k]]].name,
                                    labels[rows[k]], predictions[k]) for k in correct]
                        if pool is not None:
                            future = pool.submit(_timed_localize, heatmaps, boxes, thresholds)
                        else:
                            future = Future()
                            future.set_result(_timed_localize(heatmaps, boxes, thresholds))
                        pending.append((name, future, counted))
                    seconds = time.perf_counter() - tick
                    timer.explain += seconds
                    timer.per_method[name] = timer.per_method.get(name, 0.0) + seconds
                    # a few batches in flight at most: bounded memory, results kept flowing
                    collect(block=len(pending) > 2)
            timer.images += len(indices)
            bar.update(len(indices))
            mark = time.perf_counter()
        collect(block=True)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        timer.total += time.perf_counter() - start
    for name in names:
        results[name].sort(key=lambda r: r.index)
    return results


def summarize(results: Sequence[ImageResult], thresholds: Sequence[float], method: str,
              model: str, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The JSON summary: counts and, per threshold, the mean of each metric over counted images."""
    counted = sorted((r for r in results if r.counted), key=lambda r: (r.label, r.name))
    summary: Dict[str, Any] = {
        "method": method,
        "model": model,
        "num_images": len(counted),
        "skipped": len(results) - len(counted),
        "misclassified": sum(r.status == MISCLASSIFIED for r in results),
        "unreadable": sum(r.status == UNREADABLE for r in results),
        "results": {},
    }
    for threshold in thresholds:
        key = threshold_key(threshold)
        summary["results"][key] = {
            metric: mean_metric([r.metrics[key][j] for r in counted])
            for j, metric in enumerate(METRICS)}
    if extra:
        summary.update(extra)
    return summary


def report_lines(summary: Dict[str, Any]) -> List[str]:
    """The released printout (number of images, threshold, five metrics to four decimals),
    once per threshold, and the number of skipped images."""
    lines = [f"number of images: {summary['num_images']}",
             f"skipped: {summary['skipped']} ({summary['misclassified']} misclassified, "
             f"{summary['unreadable']} unreadable)"]
    for key, means in summary["results"].items():
        lines.append(f"threshold: {key}")
        lines.extend(f"{metric}: {means[metric]:.4f}" for metric in METRICS)
    if "maxboxacc" in summary:
        lines.append(f"MaxBoxAcc / MaxBoxAccV2 (percent, all {summary['maxboxacc_images']} "
                     f"images, label class, threshold step {summary['maxboxacc_step']:g}):")
        lines.extend(f"{name}: {value:.2f}" for name, value in zip(WSOL_COLUMNS,
                                                                   wsol_values(summary)))
    return lines


#: the MaxBoxAcc columns of the table (``--maxboxacc``)
WSOL_COLUMNS = ("maxboxacc", "maxboxacc_v2", "v2@30", "v2@50", "v2@70")


def wsol_values(summary: Dict[str, Any]) -> List[float]:
    """The :data:`WSOL_COLUMNS` of one summary."""
    delta = summary["maxboxacc_v2_delta"]
    return [summary["maxboxacc"], summary["maxboxacc_v2"], delta["30"], delta["50"], delta["70"]]


def _json_number(value: float) -> Optional[float]:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_outputs(output_dir: str, results: Sequence[ImageResult], summary: Dict[str, Any],
                  thresholds: Sequence[float],
                  class_names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """``localization_<method>.csv`` (one row per image) and ``localization_<method>.json``; both
    name the data set (``summary["dataset"]``, default ``ilsvrc``). With the model's own
    ``class_names`` (a Hugging Face checkpoint's ``id2label``) the CSV ends with two more
    columns, ``label_name`` and ``prediction_name``."""
    os.makedirs(output_dir, exist_ok=True)
    method = summary["method"]
    dataset = summary.get("dataset", "ilsvrc")
    csv_path = os.path.join(output_dir, f"localization_{method}.csv")
    json_path = os.path.join(output_dir, f"localization_{method}.json")
    keys = [threshold_key(t) for t in thresholds]
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        names = ["label_name", "prediction_name"] if class_names is not None else []
        writer.writerow(["dataset", "name", "label", "prediction", "counted"]
                        + [f"{metric}@{key}" for key in keys for metric in METRICS] + names)
        for r in sorted(results, key=lambda r: r.index):
            values = [repr(v) for key in keys for v in r.metrics[key]] if r.counted else \
                [""] * (len(keys) * len(METRICS))
            if names:
                values += [class_names[r.label], "" if r.prediction is None else
                           class_names[r.prediction]]
            writer.writerow([dataset, r.name, r.label, "" if r.prediction is None else r.prediction,
                             int(r.counted)] + values)
    clean = {k: _json_number(v) for k, v in summary.items()}
    clean["results"] = {key: {m: _json_number(v) for m, v in means.items()}
                        for key, means in summary["results"].items()}
    with open(json_path, "w") as handle:
        json.dump(clean, handle, indent=2)
        handle.write("\n")
    return {"csv": csv_path, "json": json_path}


def table(summaries: Sequence[Dict[str, Any]]) -> Tuple[List[str], List[List[Any]]]:
    """One row per method's summary: method, counted images, then every metric per threshold
    (columns ``<metric>@<threshold>``, the per-image CSV's names)."""
    keys = list(summaries[0]["results"]) if summaries else []
    header = ["method", "images"] + [f"{metric}@{key}" for key in keys for metric in METRICS]
    rows = [[s["method"], s["num_images"]] + [s["results"][key][metric]
                                               for key in keys for metric in METRICS]
            for s in summaries]
    if summaries and "maxboxacc" in summaries[0]:   # --maxboxacc: percent, every image
        header += list(WSOL_COLUMNS)
        for row, s in zip(rows, summaries):
            row.extend(wsol_values(s))
    return header, rows


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def table_lines(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """The table as aligned text, four decimals (the released printout's precision)."""
    header, rows = table(summaries)
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]
    return ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                      for j, (c, w) in enumerate(zip(row, widths))) for row in cells]


def write_table(output_dir: str, summaries: Sequence[Dict[str, Any]]) -> Dict[str, str]:
    """``localization_table.csv`` (full precision) and ``localization_table.md`` (four
    decimals): one row per method."""
    os.makedirs(output_dir, exist_ok=True)
    header, rows = table(summaries)
    csv_path = os.path.join(output_dir, "localization_table.csv")
    md_path = os.path.join(output_dir, "localization_table.md")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([repr(v) if isinstance(v, float) else v for v in row] for row in rows)
    with open(md_path, "w") as handle:
        handle.write("| " + " | ".join(header) + " |\n")
        handle.write("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|\n")
        for row in rows:
            handle.write("| " + " | ".join(_cell(v) for v in row) + " |\n")
    return {"csv": csv_path, "md": md_path}


# -- the evaluation interface (agcam.evaluation.base) ---------------------------------------------

from agcam.evaluation.base import (  # noqa: E402  (below the loop it shares its functions with)
    Column,
    EvalBatch,
    Evaluation,
    Needs,
    register_evaluation,
)


@register_evaluation
class Localization(Evaluation):
    """The paper's box localization (Tables 1-3) as ``localization.py`` computes it: the map of
    the predicted class of every correctly classified image, upsampled (bilinear), min-max
    normalised, thresholded, boxed, against the union of the ground-truth boxes; float32 running
    means in the released order. Option ``thresholds`` (default ``[0.5]``)."""

    name = "localization"
    label = "Box localization"
    needs = Needs(target="predicted", labels=True, boxes=True, correct_only=True)
    columns = tuple(Column(m, m) for m in METRICS)

    def __init__(self, thresholds: Sequence[float] = (0.5,), **options):
        super().__init__(**options)
        self.thresholds = [float(t) for t in thresholds]
        first = threshold_key(self.thresholds[0])
        self.columns = tuple(Column(f"{m}@{first}" if len(self.thresholds) > 1 else m, m)
                             for m in METRICS)

    def describe(self) -> str:
        return ("correctly classified images; map of the predicted class, bilinear + min-max, "
                f"threshold {', '.join(f'{t:g}' for t in self.thresholds)}; boxes vs the union "
                "of the ground-truth boxes; float32 running means (as released)")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        correct = [k for k, (p, y) in enumerate(zip(batch.predictions, batch.labels)) if p == y]
        records: List[Dict[str, Any]] = [{"status": MISCLASSIFIED} for _ in batch.indices]
        if correct:
            heatmaps = to_heatmap(batch.maps[correct],
                                  batch.geometry.input_size).cpu().numpy()
            per_image = localize_batch(heatmaps, [batch.boxes[k] for k in correct],
                                       self.thresholds)
            for k, metrics in zip(correct, per_image):
                records[k] = {"status": COUNTED, "metrics": metrics}
        return records

    def image_results(self, records, context) -> List[ImageResult]:
        """The records as :class:`ImageResult` (the unreadable images of ``context`` too)."""
        results = [ImageResult(index, name, label, prediction, record["status"],
                               record.get("metrics", {}))
                   for index, name, label, prediction, record in zip(
                       context["indices"], context["names"], context["labels"],
                       context["predictions"], records)]
        results += [ImageResult(index, name, label, None, UNREADABLE)
                    for index, name, label in context.get("unreadable", [])]
        return sorted(results, key=lambda r: r.index)

    def summarize(self, records, context) -> Dict[str, Any]:
        summary = summarize(self.image_results(records, context), self.thresholds,
                            context["method"], context["model"])
        first = summary["results"][threshold_key(self.thresholds[0])]
        for metric in METRICS:   # the first threshold's means as the table's columns
            summary[f"{metric}@{threshold_key(self.thresholds[0])}"
                    if len(self.thresholds) > 1 else metric] = first[metric]
        return summary
