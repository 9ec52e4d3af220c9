"""Chefer et al.'s segmentation test (CVPR 2021, "Transformer Interpretability Beyond Attention
Visualization"), as ``baselines/ViT/imagenet_seg_eval.py`` and ``utils/metrices.py`` of
hila-chefer/Transformer-Explainability compute it on ImageNet-Segmentation.

Per image: the heatmap ``r`` in [0, 1] (:func:`agcam.maps.chefer_heatmap` of the predicted class)
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
    """``average_precision_score(concat(1 - g, g), concat(1 - r, r))`` of one image; a constant
    heatmap scores every pixel 0 (the original's NaN set to 0)."""
    heatmap = np.asarray(heatmap, dtype=np.float64).reshape(-1)
    truth = np.asarray(mask, dtype=np.int64).reshape(-1)
    if heatmap.size and heatmap.min() == heatmap.max():
        scores = np.zeros(2 * heatmap.size)
    else:
        scores = np.concatenate([1.0 - heatmap, heatmap])
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
