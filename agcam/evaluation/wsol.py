"""MaxBoxAcc and MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization
Methods Right", CVPR 2020), as clovaai/wsolevaluation computes them (``evaluation.py``,
``BoxEvaluator``; ``inference.py``, ``normalize_scoremap``).

For every image of the split, the score map ``s`` of the label class ("GT-known"; built by
:func:`agcam.maps.wsol_scoremap`: bicubic resize, min-max, zeros if constant) becomes the
8-bit image ``u = floor(255 s)``. For every threshold ``tau`` of the grid ``0, step, 2 step, ...
< 1`` (``np.arange(0, 1, step)``, step 0.01 by default, 0.001 as an option):

- the binary mask ``u > int(tau * max(u))`` (``cv2.threshold``, ``THRESH_BINARY``);
- its contours (``cv2.findContours``, ``RETR_TREE``, holes included, ``CHAIN_APPROX_SIMPLE``);
- a box per contour: ``cv2.boundingRect`` ``(x, y, w, h)`` -> ``(x, y, min(x + w, W - 1),
  min(y + h, H - 1))``; no contour gives the box ``[0, 0, 0, 0]``;
- IoU with every ground-truth box, pixel areas inclusive: ``(x1 - x0 + 1) (y1 - y0 + 1)``; a
  non-positive union gives 0.

The image is correct at ``(tau, delta)`` when the best IoU is ``>= delta``:

- **MaxBoxAcc**: only the box of the largest contour (``cv2.contourArea``, the first of equal
  ones), ``delta = 0.5``;
- **MaxBoxAccV2**: every contour's box against every ground-truth box, ``delta`` in
  {0.3, 0.5, 0.7}.

``BoxAcc(tau, delta)`` = 100 x correct images / all images; ``MaxBoxAcc(delta)`` is its maximum
over ``tau``, one threshold for the whole split; MaxBoxAccV2 is the mean of ``MaxBoxAcc(delta)``
over the three ``delta``. Every image counts, whatever the model predicts.

Counts per threshold are integers, so :class:`BoxAccuracy` accumulates over batches and over
processes (:meth:`BoxAccuracy.merge`) and gives the same numbers however the split is cut.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: ``delta`` of MaxBoxAccV2, in percent as wsolevaluation's ``--iou_threshold_list``
IOU_THRESHOLDS: Tuple[int, ...] = (30, 50, 70)
#: ``delta`` of MaxBoxAcc (percent)
MAXBOXACC_IOU = 50
#: the threshold steps wsolevaluation offers (its ``evaluation.py`` default, its ``main.py`` one)
CAM_CURVE_INTERVALS: Tuple[float, ...] = (0.01, 0.001)
#: the two box rules: the largest contour (MaxBoxAcc), every contour (MaxBoxAccV2)
LARGEST, ALL = "largest", "all"


def cam_thresholds(interval: float = 0.01) -> np.ndarray:
    """The threshold grid ``np.arange(0, 1, interval)`` (wsolevaluation's
    ``cam_threshold_list``)."""
    if not 0.0 < interval < 1.0:
        raise ValueError(f"threshold step {interval} outside (0, 1)")
    return np.arange(0, 1, interval)


def check_scoremap(scoremap: np.ndarray) -> np.ndarray:
    """A ``[H, W]`` float array in [0, 1] without NaN (wsolevaluation's
    ``check_scoremap_validity``); ``ValueError`` otherwise."""
    scoremap = np.asarray(scoremap)
    if scoremap.ndim != 2:
        raise ValueError(f"score map must be [H, W], got shape {scoremap.shape}")
    if not np.issubdtype(scoremap.dtype, np.floating):
        raise ValueError(f"score map must be floating point, got {scoremap.dtype}")
    if np.isnan(scoremap).any():
        raise ValueError("score map has NaN")
    if (scoremap < 0).any() or (scoremap > 1).any():
        raise ValueError(f"score map outside [0, 1]: [{scoremap.min()}, {scoremap.max()}]")
    return scoremap


def contour_boxes(binary: np.ndarray) -> Tuple[np.ndarray, int]:
    """Boxes of every contour (``RETR_TREE``) of a ``[H, W]`` binary mask, ``[n, 4]`` int64
    ``(x0, y0, x1, y1)`` with ``x1 = min(x + w, W - 1)``, ``y1 = min(y + h, H - 1)``, in
    ``findContours`` order, and the index of the largest contour by ``cv2.contourArea`` (the
    first of equal areas). No contour: ``[[0, 0, 0, 0]]`` and index 0."""
    binary = np.ascontiguousarray(binary, dtype=np.uint8)
    height, width = binary.shape
    # [-2]: (image, contours, hierarchy) in OpenCV 3, (contours, hierarchy) from OpenCV 4 on
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    if len(contours) == 0:
        return np.zeros((1, 4), dtype=np.int64), 0
    boxes = np.empty((len(contours), 4), dtype=np.int64)
    areas = np.empty(len(contours), dtype=np.float64)
    for i, contour in enumerate(contours):
        x, y, w, h = cv2.boundingRect(contour)
        boxes[i] = (x, y, min(x + w, width - 1), min(y + h, height - 1))
        areas[i] = cv2.contourArea(contour)
    return boxes, int(np.argmax(areas))   # argmax: the first maximum, as Python's max()


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """``[n, m]`` IoU of ``(x0, y0, x1, y1)`` boxes with inclusive pixel areas
    (``(x1 - x0 + 1) (y1 - y0 + 1)``); 0 where the union is not positive."""
    a = np.asarray(boxes_a, dtype=np.int64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.int64).reshape(-1, 4)[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
                         + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
                         + 1)
    inter = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - inter
    positive = union > 0
    return np.where(positive, inter / np.where(positive, union, 1), 0.0)


def best_ious(scoremap: np.ndarray, gt_boxes: Sequence[Sequence[int]],
              thresholds: Sequence[float]) -> Dict[str, np.ndarray]:
    """Per threshold, the best IoU of the estimated boxes with the ground-truth boxes:
    ``{"largest": [T], "all": [T]}`` (the largest contour's box; every contour's box).

    Thresholds that give the same integer cut ``int(tau * max(u))`` share one contour pass.
    """
    scoremap = check_scoremap(scoremap)
    gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    if len(gt) == 0:
        raise ValueError("an image without ground-truth box")
    image = (scoremap * 255).astype(np.uint8)
    peak = np.max(image)
    largest = np.empty(len(thresholds), dtype=np.float64)
    every = np.empty(len(thresholds), dtype=np.float64)
    done: Dict[int, Tuple[float, float]] = {}
    for k, tau in enumerate(thresholds):
        cut = int(tau * peak)   # float64 * uint8, truncated: cv2.threshold's thresh
        if cut not in done:
            boxes, top = contour_boxes(image > cut)
            ious = box_iou(boxes, gt).max(axis=1)
            done[cut] = (float(ious[top]), float(ious.max()))
        largest[k], every[k] = done[cut]
    return {LARGEST: largest, ALL: every}


class BoxAccuracy:
    """Counts of correct images per ``(delta, tau)`` for both box rules, accumulated over
    images, batches and processes.

    ``accumulate(scoremap, gt_boxes)`` per image (a :func:`agcam.maps.wsol_scoremap` map and its
    ground-truth boxes in the same pixels); :meth:`merge` adds another accumulator's counts (one
    per process under ``torchrun``); :meth:`compute` gives the percentages.
    """

    def __init__(self, interval: float = 0.01,
                 iou_thresholds: Sequence[int] = IOU_THRESHOLDS):
        self.interval = float(interval)
        self.thresholds = cam_thresholds(self.interval)
        self.iou_thresholds = tuple(int(d) for d in iou_thresholds)
        if MAXBOXACC_IOU not in self.iou_thresholds:
            raise ValueError(f"the IoU thresholds must include {MAXBOXACC_IOU} (MaxBoxAcc)")
        shape = (len(self.iou_thresholds), len(self.thresholds))
        self.correct = {LARGEST: np.zeros(shape, dtype=np.int64),
                        ALL: np.zeros(shape, dtype=np.int64)}
        self.num_images = 0

    def accumulate(self, scoremap: np.ndarray, gt_boxes: Sequence[Sequence[int]]) -> None:
        """Count one image."""
        ious = best_ious(scoremap, gt_boxes, self.thresholds)
        for rule in (LARGEST, ALL):
            for j, delta in enumerate(self.iou_thresholds):
                # delta / 100 as there: 30 / 100 is the double nearest 0.3
                self.correct[rule][j] += ious[rule] >= delta / 100
        self.num_images += 1

    def accumulate_batch(self, scoremaps: Iterable[np.ndarray],
                         gt_boxes: Iterable[Sequence[Sequence[int]]]) -> None:
        for scoremap, boxes in zip(scoremaps, gt_boxes):
            self.accumulate(scoremap, boxes)

    def merge(self, other: "BoxAccuracy") -> "BoxAccuracy":
        """Add ``other``'s counts (same grid and IoU thresholds) to these; returns self."""
        if (other.interval != self.interval or other.iou_thresholds != self.iou_thresholds):
            raise ValueError("cannot merge accumulators of different grids")
        for rule in (LARGEST, ALL):
            self.correct[rule] += other.correct[rule]
        self.num_images += other.num_images
        return self

    def accuracies(self, rule: str) -> np.ndarray:
        """``[delta, tau]`` BoxAcc in percent (``correct * 100 / images``, as there)."""
        if self.num_images == 0:
            return np.full(self.correct[rule].shape, np.nan)
        return self.correct[rule] * 100. / float(self.num_images)

    def compute(self) -> Dict[str, Any]:
        """``maxboxacc`` (largest contour, delta 0.5), ``maxboxacc_v2`` (every contour, mean over
        delta), the per-delta values of both rules (``maxboxacc_delta``, ``maxboxacc_v2_delta``,
        keyed ``"30"``, ``"50"``, ``"70"``), the threshold that attains each (the first of equal
        ones), the step and the number of images. Percent; NaN without images."""
        out: Dict[str, Any] = {"num_images": self.num_images,
                               "cam_curve_interval": self.interval}
        for rule, key in ((LARGEST, "maxboxacc"), (ALL, "maxboxacc_v2")):
            acc = self.accuracies(rule)
            per_delta: Dict[str, Optional[float]] = {}
            best_tau: Dict[str, Optional[float]] = {}
            for j, delta in enumerate(self.iou_thresholds):
                if self.num_images == 0:
                    per_delta[str(delta)], best_tau[str(delta)] = float("nan"), None
                    continue
                k = int(np.argmax(acc[j]))
                per_delta[str(delta)] = float(acc[j, k])
                best_tau[str(delta)] = float(self.thresholds[k])
            out[f"{key}_delta"] = per_delta
            out[f"{key}_threshold"] = best_tau
        out["maxboxacc"] = out["maxboxacc_delta"][str(MAXBOXACC_IOU)]
        out["maxboxacc_v2"] = float(np.mean([out["maxboxacc_v2_delta"][str(d)]
                                             for d in self.iou_thresholds]))
        return out

    def state(self) -> Dict[str, Any]:
        """Plain data (for gathering across processes): see :meth:`from_state`."""
        return {"interval": self.interval, "iou_thresholds": list(self.iou_thresholds),
                "num_images": self.num_images,
                "correct": {rule: counts.tolist() for rule, counts in self.correct.items()}}

    @classmethod
    def from_state(cls, state: Dict[str, Any]) -> "BoxAccuracy":
        acc = cls(state["interval"], state["iou_thresholds"])
        acc.num_images = int(state["num_images"])
        for rule, counts in state["correct"].items():
            acc.correct[rule] = np.asarray(counts, dtype=np.int64)
        return acc


def merge_states(states: Iterable[Dict[str, Any]]) -> BoxAccuracy:
    """One accumulator from the :meth:`BoxAccuracy.state` of every process."""
    states = list(states)
    if not states:
        raise ValueError("no accumulator to merge")
    total = BoxAccuracy.from_state(states[0])
    for state in states[1:]:
        total.merge(BoxAccuracy.from_state(state))
    return total


def wsol_boxes(boxes: Iterable[Sequence[float]], image_size: Tuple[int, int],
               input_size: Tuple[int, int]) -> List[Tuple[int, int, int, int]]:
    """Ground-truth boxes in original pixels -> model-input pixels as wsolevaluation's
    ``resize_bbox`` does it: ``int(x * W_in / W)`` (``image_size = (W, H)``, ``input_size =
    (H_in, W_in)``).

    The multiplication comes first there, the division first in the paper's
    :func:`agcam.datasets.common.gt_boxes`; the two can differ by one pixel where the exact value is
    a whole number, so each protocol keeps its own."""
    width, height = float(image_size[0]), float(image_size[1])
    in_h, in_w = float(input_size[0]), float(input_size[1])
    return [(int(float(x0) * in_w / width), int(float(y0) * in_h / height),
             int(float(x1) * in_w / width), int(float(y1) * in_h / height))
            for x0, y0, x1, y1 in boxes]


def label_maps(explainer, inputs, predictions, maps, labels):
    """The raw maps of the label class ("GT-known") of a batch, from the maps of the predicted
    class that the paper's metrics already computed: where the prediction is the label (or the
    method's map does not depend on the class, ``class_specific = False``) the same map; the other
    images are explained again for their label, in one call."""
    import torch

    labels = torch.as_tensor(labels, dtype=torch.long)
    predictions = torch.as_tensor(predictions, dtype=torch.long).cpu()
    wrong = torch.nonzero(predictions != labels).flatten()
    if len(wrong) == 0 or not getattr(explainer, "class_specific", True):
        return maps
    maps = maps.clone()
    rows = wrong.to(inputs.device)
    _, again = explainer.explain(inputs[rows], target=labels[wrong].to(inputs.device))
    maps[rows.to(maps.device)] = again.to(maps.dtype).to(maps.device)
    return maps


def accumulate_maps(accumulator: BoxAccuracy, raw_maps, source_boxes, image_sizes,
                    input_size: Tuple[int, int]) -> None:
    """Count a batch: raw ``[B, h, w]`` maps of the label class, each image's boxes in original
    pixels and its real ``(width, height)``; the score maps (:func:`agcam.maps.wsol_scoremap`) and
    the boxes (:func:`wsol_boxes`) at ``input_size``."""
    from agcam.maps import wsol_scoremap

    raw_maps = raw_maps.detach().cpu().double().numpy() if hasattr(raw_maps, "detach") else \
        np.asarray(raw_maps, dtype=np.float64)
    for raw, boxes, size in zip(raw_maps, source_boxes, image_sizes):
        accumulator.accumulate(wsol_scoremap(raw, input_size),
                               wsol_boxes(boxes, tuple(size), input_size))


# -- the evaluation interface (agcam.evaluation.base) ---------------------------------------------

from agcam.evaluation.base import (  # noqa: E402
    Column,
    EvalBatch,
    Evaluation,
    Needs,
    register_evaluation,
)


def _bits(flags: np.ndarray) -> str:
    """A boolean vector as a hexadecimal string (one bit per threshold), for a small record."""
    return format(int("".join("1" if f else "0" for f in flags) or "0", 2), "x")


def _unbits(text: str, length: int) -> np.ndarray:
    value = bin(int(text, 16))[2:].zfill(length)
    return np.array([c == "1" for c in value[-length:]], dtype=np.int64)


@register_evaluation
class MaxBoxAcc(Evaluation):
    """MaxBoxAcc and MaxBoxAccV2 (Choe et al., CVPR 2020) as ``localization.py --maxboxacc``:
    every image, the map of its label class, wsolevaluation's score map and contours; the
    best threshold over the split. Option ``maxboxacc_step`` (0.01 or 0.001). The record of an
    image is whether it is correct at each threshold, per box rule and IoU, as bits."""

    name = "maxboxacc"
    label = "MaxBoxAcc"
    needs = Needs(target="label", labels=True, boxes=True)
    columns = (Column("maxboxacc", "MaxBoxAcc"), Column("maxboxacc_v2", "MaxBoxAccV2"))

    def __init__(self, maxboxacc_step: float = 0.01, **options):
        super().__init__(**options)
        self.step = float(maxboxacc_step)

    def describe(self) -> str:
        return ("every image, map of the label class; bicubic score map, contours "
                f"(wsolevaluation); threshold step {self.step:g}; percent")

    def score(self, batch: EvalBatch) -> List[Dict[str, Any]]:
        from agcam.maps import wsol_scoremap

        accumulator = BoxAccuracy(self.step)
        input_size = tuple(batch.geometry.input_size)
        raw = batch.maps.detach().cpu().double().numpy()
        records = []
        for k in range(len(batch.indices)):
            ious = best_ious(wsol_scoremap(raw[k], input_size),
                             wsol_boxes(batch.source_boxes[k], tuple(batch.sizes[k]),
                                        input_size), accumulator.thresholds)
            records.append({rule: {str(d): _bits(ious[rule] >= d / 100)
                                   for d in accumulator.iou_thresholds}
                            for rule in (LARGEST, ALL)})
        return records

    def accumulator(self, records) -> BoxAccuracy:
        accumulator = BoxAccuracy(self.step)
        length = len(accumulator.thresholds)
        for record in records:
            for rule in (LARGEST, ALL):
                for j, delta in enumerate(accumulator.iou_thresholds):
                    accumulator.correct[rule][j] += _unbits(record[rule][str(delta)], length)
            accumulator.num_images += 1
        return accumulator

    def summarize(self, records, context) -> Dict[str, Any]:
        result = self.accumulator(records).compute()
        out = {key: result[key] for key in ("maxboxacc", "maxboxacc_v2", "maxboxacc_delta",
                                            "maxboxacc_v2_delta", "maxboxacc_threshold",
                                            "maxboxacc_v2_threshold")}
        out.update(method=context["method"], num_images=result["num_images"],
                   maxboxacc_step=result["cam_curve_interval"])
        return out
