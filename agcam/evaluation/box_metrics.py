"""Localization metrics between a predicted mask and the ground-truth mask (higher is better).

Pure functions of pixel counts, vectorised over images. From TP, FP, FN, TN with ``eps = 1e-5``:

    pixel accuracy  (TP + TN + eps) / (TP + TN + FP + FN + eps)
    IoU             (TP + eps) / (TP + FP + FN + eps)
    Dice            (2 TP + eps) / (2 TP + FP + FN + eps)
    precision       (TP + eps) / (TP + FP + eps)
    recall          (TP + eps) / (TP + FN + eps)

The released code computes these on float32 tensors and sums the per-image values in float32
before dividing by the number of images; so do we, in the same order of operations: per-image
values agree with the released ones to the last bit (counts below 2**24 are exact in float32),
means up to the order in which the images are summed (see :mod:`agcam.evaluation.localization`).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

EPS = 1e-5
#: the metrics, in the order the script prints them
METRICS: Tuple[str, ...] = ("pixel_acc", "iou", "dice", "precision", "recall")


def confusion_counts(predicted: np.ndarray, target: np.ndarray
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(TP, FP, FN, TN)`` pixel counts per image of ``[B, H, W]`` (or ``[H, W]``) masks,
    as float32 arrays of shape ``[B]`` (or scalars)."""
    predicted = np.asarray(predicted, dtype=bool)
    target = np.asarray(target, dtype=bool)
    if predicted.shape != target.shape:
        raise ValueError(f"masks differ in shape: {predicted.shape} vs {target.shape}")
    axes = (-2, -1)
    total = predicted.shape[-2] * predicted.shape[-1]
    tp = np.count_nonzero(predicted & target, axis=axes)
    pred = np.count_nonzero(predicted, axis=axes)
    true = np.count_nonzero(target, axis=axes)
    fp, fn = pred - tp, true - tp
    tn = total - tp - fp - fn
    return tuple(np.asarray(c, dtype=np.float32) for c in (tp, fp, fn, tn))


def localization_metrics(tp, fp, fn, tn, eps: float = EPS) -> Dict[str, np.ndarray]:
    """The five metrics (float32) of the counts; the expressions keep the released order of
    additions, which matters in the last bit of a float32."""
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float32) for c in (tp, fp, fn, tn))
    e = np.float32(eps)
    two = np.float32(2)
    return {
        "pixel_acc": (tp + tn + e) / (tp + tn + fp + fn + e),
        "iou": (tp + e) / (tp + fp + fn + e),
        "dice": (two * tp + e) / (two * tp + fp + fn + e),
        "precision": (tp + e) / (tp + fp + e),
        "recall": (tp + e) / (tp + fn + e),
    }


def mask_metrics(predicted: np.ndarray, target: np.ndarray, eps: float = EPS
                 ) -> Dict[str, np.ndarray]:
    """The five metrics of predicted vs target masks, ``[B, H, W]`` -> ``[B]`` each."""
    return localization_metrics(*confusion_counts(predicted, target), eps=eps)


def mean_metric(values: Sequence[float]) -> float:
    """Mean over images as released: a float32 running sum, divided by the count in float32.

    Summed one image after another (``np.cumsum`` keeps that order; ``np.sum`` would pair
    them up), so the result does not depend on how the images were batched or sharded.
    """
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.size == 0:
        return float("nan")
    total = np.cumsum(values, dtype=np.float32)[-1]
    return float(total / np.float32(values.size))
