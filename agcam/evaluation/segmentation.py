"""Chefer et al.'s segmentation test (CVPR 2021, "Transformer Interpretability Beyond Attention
Visualization"), as ``baselines/ViT/imagenet_seg_eval.py`` and ``utils/metrices.py`` of
hila-chefer/Transformer-Explainability compute it on ImageNet-Segmentation.

Per image: the heatmap ``r`` in [0, 1] of the predicted class (:func:`agcam.maps.to_heatmap`,
recipe ``"localization"``: bilinear upsampling to the input, which is the original's
``F.interpolate(scale_factor=patch, mode="bilinear")``, then per-map min-max)
and the ground-truth mask ``g`` in {0, 1}, both at the model input size.

- prediction: foreground where ``r > mean(r)`` (strict), background elsewhere;
- pixel accuracy: correct pixels / all pixels, **pooled** over the set (sums of int64 counts,
  then ``correct / (eps + labelled)``);
- mIoU: per class c in {background, foreground}, ``I_c = |pred = c and g = c|``, ``U_c = |pred =
  c| + |g = c| - I_c``, both **summed over the set** before ``I_c / (eps + U_c)``; the mean of
  the two;
- mAP: per image, ``sklearn.metrics.average_precision_score`` of the scores ``concat(1 - r, r)``
  against the labels ``concat(1 - g, g)`` (the two classes' one-hot channels, flattened); the
  mean over images.

``eps = np.spacing(1)`` (2.2e-16) as there. A constant map (NaN after the original's 0/0
normalisation, zeros after ours) predicts background everywhere and scores every pixel alike
(the original zeroes its NaNs), whose AP is the positive rate 1/2, as there.

Not reproduced: the published mF1, which runs ``f1_score`` once per image *row* (its
``get_f1_scores`` reshapes the map to ``[rows, -1]``) and so is not the F1 of the image.

Results are fractions in [0, 1]; the script reports them in percent, as the papers' tables do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence

import numpy as np
from sklearn.metrics import average_precision_score

#: the original's ``np.spacing(1, dtype=np.float64)``
EPS = float(np.spacing(1, dtype=np.float64))
#: class order of the intersections and unions: background, foreground
CLASSES = ("background", "foreground")


def check_mask(mask: np.ndarray) -> np.ndarray:
    """A ``[H, W]`` mask with values in {0, 1} as bool; ``ValueError`` otherwise."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError("mask values must be 0 or 1")
    return mask.astype(bool)


def threshold_at_mean(heatmap: np.ndarray) -> np.ndarray:
    """Foreground where the heatmap is strictly above its mean (``Res.gt(Res.mean())``); the mean
    is taken in the heatmap's own dtype."""
    heatmap = np.asarray(heatmap)
    return heatmap > heatmap.mean(dtype=heatmap.dtype)


def confusion(predicted: np.ndarray, mask: np.ndarray) -> Dict[str, np.ndarray]:
    """Counts of one image: ``correct``, ``labeled`` (every pixel) and per class (background,
    foreground) ``intersection`` and ``union``, all int64."""
    predicted = np.asarray(predicted, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if predicted.shape != mask.shape:
        raise ValueError(f"prediction and mask differ in shape: {predicted.shape} vs {mask.shape}")
    fg_inter = np.count_nonzero(predicted & mask)
    bg_inter = np.count_nonzero(~predicted & ~mask)
    pred_fg, true_fg = np.count_nonzero(predicted), np.count_nonzero(mask)
    total = mask.size
    pred_area = np.array([total - pred_fg, pred_fg], dtype=np.int64)
    true_area = np.array([total - true_fg, true_fg], dtype=np.int64)
    inter = np.array([bg_inter, fg_inter], dtype=np.int64)
    return {"correct": np.int64(bg_inter + fg_inter), "labeled": np.int64(total),
            "intersection": inter, "union": pred_area + true_area - inter}


def average_precision(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """``average_precision_score(concat(1 - g, g), concat(1 - r, r))`` of one image, ``1 - r``
    computed in the heatmap's dtype as the original does on its float32 tensor; a constant heatmap
    scores every pixel 0 (the original's NaN set to 0)."""
    heatmap = np.asarray(heatmap).reshape(-1)
    if not np.issubdtype(heatmap.dtype, np.floating):
        heatmap = heatmap.astype(np.float64)
    truth = np.asarray(mask, dtype=np.int64).reshape(-1)
    if heatmap.size and heatmap.min() == heatmap.max():
        scores = np.zeros(2 * heatmap.size, dtype=heatmap.dtype)
    else:
        # 1 - r in the heatmap's own dtype (float32 there): the rounding decides ties in the ranking
        scores = np.concatenate([heatmap.dtype.type(1) - heatmap, heatmap])
    return float(average_precision_score(np.concatenate([1 - truth, truth]), scores))


@dataclass
class SegmentationImage:
    """One image's counts and AP (what the per-image CSV holds)."""

    index: int
    correct: int
    labeled: int
    intersection: List[int]
    union: List[int]
    ap: float
    #: the class the map explains (the model's prediction); -1 when not recorded
    prediction: int = -1

    @property
    def pixel_accuracy(self) -> float:
        return self.correct / (EPS + self.labeled)

    @property
    def iou(self) -> List[float]:
        return [i / (EPS + u) for i, u in zip(self.intersection, self.union)]


def score_image(index: int, heatmap: np.ndarray, mask: np.ndarray) -> SegmentationImage:
    """Threshold ``heatmap`` at its mean and compare with ``mask`` (both ``[H, W]``)."""
    mask = check_mask(mask)
    heatmap = np.asarray(heatmap)
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap and mask differ in shape: {heatmap.shape} vs {mask.shape}")
    counts = confusion(threshold_at_mean(heatmap), mask)
    return SegmentationImage(index=int(index), correct=int(counts["correct"]),
                             labeled=int(counts["labeled"]),
                             intersection=counts["intersection"].tolist(),
                             union=counts["union"].tolist(),
                             ap=average_precision(heatmap, mask))


@dataclass
class SegmentationScores:
    """The images scored so far; :meth:`compute` pools them. Images may come in any order and
    from several processes (:meth:`extend`): the sums are integers and the mean AP is taken in
    ``index`` order, so the result does not depend on batching or sharding."""

    images: List[SegmentationImage] = field(default_factory=list)

    def add(self, index: int, heatmap: np.ndarray, mask: np.ndarray) -> SegmentationImage:
        image = score_image(index, heatmap, mask)
        self.images.append(image)
        return image

    def extend(self, images: Sequence[SegmentationImage]) -> "SegmentationScores":
        self.images.extend(images)
        return self

    def compute(self) -> Dict[str, Any]:
        """``pixel_accuracy``, ``miou``, ``map`` (fractions), ``iou`` per class and
        ``num_images``; NaN without images."""
        images = sorted(self.images, key=lambda im: im.index)
        if not images:
            nan = float("nan")
            return {"pixel_accuracy": nan, "miou": nan, "map": nan,
                    "iou": dict.fromkeys(CLASSES, nan), "num_images": 0}
        correct = np.int64(sum(im.correct for im in images))
        labeled = np.int64(sum(im.labeled for im in images))
        inter = np.sum([im.intersection for im in images], axis=0, dtype=np.int64)
        union = np.sum([im.union for im in images], axis=0, dtype=np.int64)
        iou = np.float64(1.0) * inter / (EPS + union)
        return {"pixel_accuracy": float(np.float64(1.0) * correct / (EPS + labeled)),
                "miou": float(iou.mean()),
                "map": float(np.mean([im.ap for im in images])),
                "iou": {name: float(v) for name, v in zip(CLASSES, iou)},
                "num_images": len(images)}


def summarize(images: Sequence[SegmentationImage], method: str, extra=None) -> Dict[str, Any]:
    """The JSON summary of one method: ``pixel_accuracy``, ``miou``, ``map`` and the per-class
    IoUs in percent (the papers' unit), the number of images and ``extra``."""
    result = SegmentationScores(list(images)).compute()
    summary: Dict[str, Any] = {"method": method, "num_images": result["num_images"],
                               "unit": "percent",
                               "pixel_accuracy": 100 * result["pixel_accuracy"],
                               "miou": 100 * result["miou"], "map": 100 * result["map"],
                               "iou": {k: 100 * v for k, v in result["iou"].items()}}
    summary.update(extra or {})
    return summary


TABLE_COLUMNS = ("pixel_accuracy", "miou", "map")


def table_lines(summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """One row per method: images, pixel accuracy, mIoU, mAP (percent, two decimals)."""
    header = ["method", "images", "pixel_acc", "mIoU", "mAP"]
    rows = [[s["method"], str(s["num_images"])] + [f"{s[c]:.2f}" for c in TABLE_COLUMNS]
            for s in summaries]
    cells = [header] + rows
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    return ["  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                      for j, (c, w) in enumerate(zip(row, widths))) for row in cells]


def write_outputs(output_dir: str, images: Sequence[SegmentationImage], summary: Dict[str, Any]
                  ) -> List[str]:
    """``segmentation_<method>.csv`` (per image: prediction, pixel accuracy, IoUs, AP, as
    fractions) and ``segmentation_<method>.json`` (the summary)."""
    import csv
    import json
    import math
    import os

    os.makedirs(output_dir, exist_ok=True)
    method = summary["method"]
    csv_path = os.path.join(output_dir, f"segmentation_{method}.csv")
    json_path = os.path.join(output_dir, f"segmentation_{method}.json")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "prediction", "pixel_accuracy", "iou_background",
                         "iou_foreground", "ap"])
        for im in sorted(images, key=lambda im: im.index):
            writer.writerow([im.index, im.prediction, repr(im.pixel_accuracy),
                             repr(im.iou[0]), repr(im.iou[1]), repr(im.ap)])

    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return None if isinstance(value, float) and math.isnan(value) else value

    with open(json_path, "w") as handle:
        json.dump(clean(summary), handle, indent=2)
        handle.write("\n")
    return [csv_path, json_path]


def write_table(output_dir: str, summaries: Sequence[Dict[str, Any]]) -> List[str]:
    """``segmentation_table.csv`` (full precision) and ``segmentation_table.md``."""
    import csv
    import os

    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, "segmentation_table.csv")
    md_path = os.path.join(output_dir, "segmentation_table.md")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "images", *TABLE_COLUMNS])
        for s in summaries:
            writer.writerow([s["method"], s["num_images"]] + [repr(s[c]) for c in TABLE_COLUMNS])
    with open(md_path, "w") as handle:
        handle.write("| method | images | pixel accuracy | mIoU | mAP |\n"
                     "|---|---:|---:|---:|---:|\n")
        for s in summaries:
            handle.write(f"| {s['method']} | {s['num_images']} | "
                         + " | ".join(f"{s[c]:.2f}" for c in TABLE_COLUMNS) + " |\n")
    return [csv_path, md_path]


# -- the evaluation interface (agcam.evaluation.base) ---------------------------------------------

from agcam.evaluation.base import (  # noqa: E402
    Column,
    EvalBatch,
    Evaluation,
    Needs,
    register_evaluation,
)


@register_evaluation
class Segmentation(Evaluation):
    """Chefer et al.'s segmentation test as ``segmentation.py``: the map of the predicted class,
    bilinear x patch + min-max, thresholded at its mean, against the foreground mask."""

    name = "segmentation"
    label = "Segmentation"
    needs = Needs(target="predicted", masks=True)
    columns = (Column("pixel_accuracy", "pixel acc."), Column("miou", "mIoU"),
               Column("map", "mAP"))
    convention = ("map of the predicted class, bilinear + min-max, threshold at its mean; pixel "
                  "accuracy, mIoU (background, foreground), mAP; percent")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        from agcam.maps import to_heatmap

        heatmaps = to_heatmap(batch.maps, batch.geometry.input_size, "localization")
        heatmaps = heatmaps.cpu().numpy()
        masks = np.asarray(batch.masks)
        out = []
        for k, index in enumerate(batch.indices):
            image = score_image(index, heatmaps[k], masks[k])
            out.append({"correct": image.correct, "labeled": image.labeled,
                        "intersection": image.intersection, "union": image.union,
                        "ap": image.ap})
        return out

    def images(self, records, context) -> List[SegmentationImage]:
        return [SegmentationImage(index=index, prediction=prediction, **record)
                for index, prediction, record in zip(context["indices"], context["predictions"],
                                                     records)]

    def summarize(self, records, context) -> Dict[str, Any]:
        return summarize(self.images(records, context), context["method"])
