"""The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016)
and the energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020; in the form of TAM's
``energy_point_game.py``), on the data set's ground-truth boxes. Higher is better for every
number.

Every image counts, with the map of its label class, made a heatmap by the localization recipe
(:func:`agcam.maps.to_heatmap`: bilinear to the input size, min-max to [0, 1]). Boxes are in
model-input pixels (``x1, y1, x2, y2``, the end exclusive, as ``gt[y1:y2, x1:x2] = 1`` in TAM's
code); an image's ground truth is the union of its boxes.

* **Pointing game**: a hit when the heatmap's maximum (the first in row-major order) lies within
  ``tolerance`` pixels (Euclidean, to the nearest box pixel; Zhang et al.: 15) of a box.
  Reported: hits / images, percent.
* **Energy** (Score-CAM): the share of the heatmap's sum inside the boxes,
  ``sum(h * gt) / sum(h)``; mean over images.
* **TAM's energy point game**: the heatmap binarised at ``0.3 * max`` (``h > 0.3 max``),
  precision ``|b * gt| / |b|``, recall ``|b * gt| / |gt|`` and
  ``F1 = 2PR / (P + R + 1e-6)``; means over images. (TAM's function unions the boxes of the
  whole batch and sums over it; run with one image per batch, as here, it is per image.)
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from agcam.evaluation.base import Column, EvalBatch, Evaluation, Needs, register_evaluation

#: Zhang et al.'s tolerance, in pixels
TOLERANCE = 15
#: TAM's binarisation threshold, a fraction of the heatmap's maximum
TAM_THRESHOLD = 0.3


def box_mask(boxes: Sequence[Sequence[int]], size: Tuple[int, int]) -> np.ndarray:
    """The union of ``boxes`` as a boolean ``[H, W]`` mask (``mask[y1:y2, x1:x2]``)."""
    mask = np.zeros(tuple(int(s) for s in size), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        mask[max(int(y1), 0):max(int(y2), 0), max(int(x1), 0):max(int(x2), 0)] = True
    return mask


def pointing_hit(heatmap: np.ndarray, boxes: Sequence[Sequence[int]],
                 tolerance: float = TOLERANCE) -> bool:
    """Whether the heatmap's maximum is within ``tolerance`` pixels of a box."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    for x1, y1, x2, y2 in boxes:
        if x2 <= x1 or y2 <= y1:
            continue
        dx = max(x1 - x, 0, x - (x2 - 1))
        dy = max(y1 - y, 0, y - (y2 - 1))
        if dx * dx + dy * dy <= tolerance * tolerance:
            return True
    return False


def energy_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Score-CAM's energy-based pointing game: ``sum(h * gt) / sum(h)`` (0 for an all-zero map)."""
    total = float(heatmap.sum())
    return float(heatmap[mask].sum()) / total if total > 0 else 0.0


def tam_energy_scores(heatmap: np.ndarray, mask: np.ndarray,
                      threshold: float = TAM_THRESHOLD) -> Tuple[float, float, float]:
    """TAM's ``energy_point_game`` on one image: precision, recall and F1 of the heatmap
    binarised at ``threshold * max`` against the box mask."""
    binary = heatmap > threshold * heatmap.max()
    hit = float(np.logical_and(binary, mask).sum())
    precision = hit / float(binary.sum()) if binary.any() else 0.0
    recall = hit / float(mask.sum()) if mask.any() else 0.0
    return precision, recall, (2 * precision * recall) / (precision + recall + 1e-6)


@register_evaluation
class PointingGame(Evaluation):
    """Pointing game and energy-based pointing game on the ground-truth boxes (see the module
    docstring). Option ``pointing_tolerance`` (pixels, default 15)."""

    name = "pointing"
    label = "Pointing game"
    needs = Needs(target="label", labels=True, boxes=True)
    columns = (Column("pointing", "Pointing %"), Column("energy", "Energy"),
               Column("tam_precision", "TAM P"), Column("tam_recall", "TAM R"),
               Column("tam_f1", "TAM F1"))

    def __init__(self, pointing_tolerance: float = TOLERANCE, **options):
        super().__init__(**options)
        self.tolerance = float(pointing_tolerance)

    def describe(self) -> str:
        return ("every image, map of the label class, bilinear + min-max; pointing: maximum "
                f"within {self.tolerance:g} px of a box; energy: share of the heatmap in the "
                f"boxes; TAM: heatmap > {TAM_THRESHOLD:g} max vs the boxes (P, R, F1)")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        from agcam.maps import to_heatmap

        size = tuple(batch.geometry.input_size)
        heatmaps = to_heatmap(batch.maps, size).detach().cpu().double().numpy()
        records = []
        for heatmap, boxes in zip(heatmaps, batch.boxes):
            mask = box_mask(boxes, size)
            precision, recall, f1 = tam_energy_scores(heatmap, mask)
            records.append({"hit": pointing_hit(heatmap, boxes, self.tolerance),
                            "energy": energy_share(heatmap, mask), "tam_precision": precision,
                            "tam_recall": recall, "tam_f1": f1})
        return records

    def summarize(self, records, context) -> Dict[str, Any]:
        if not records:
            return {"num_images": 0}
        summary = {"num_images": len(records),
                   "pointing": 100.0 * sum(r["hit"] for r in records) / len(records)}
        for key in ("energy", "tam_precision", "tam_recall", "tam_f1"):
            summary[key] = float(np.mean([r[key] for r in records]))
        return summary
