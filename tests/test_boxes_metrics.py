"""Boxes and localization metrics on hand-made arrays whose answers are obvious."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agcam.evaluation.box_metrics import (
    METRICS,
    confusion_counts,
    localization_metrics,
    mask_metrics,
    mean_metric,
)
from agcam.evaluation.boxes import (
    boxes_to_mask,
    heatmap_to_boxes,
    mask_to_boxes,
    predicted_mask,
)


def test_two_blobs_give_two_boxes():
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[2:6, 3:9] = 1.0       # rows 2..5, cols 3..8
    heat[20:30, 15:18] = 0.8   # rows 20..29, cols 15..17
    boxes = sorted(heatmap_to_boxes(heat, 0.5))
    # boundingRect (x, y, w, h) -> (x, y, x + w, y + h), as released: one past the last pixel
    assert boxes == [(3, 2, 9, 6), (15, 20, 18, 30)]


def test_threshold_is_strict():
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[1:3, 1:3] = 0.5
    heat[5, 5] = 0.6
    assert heatmap_to_boxes(heat, 0.5) == [(5, 5, 6, 6)]
    assert sorted(heatmap_to_boxes(heat, 0.49)) == [(1, 1, 3, 3), (5, 5, 6, 6)]


def test_nested_region_gives_one_external_box():
    binary = np.zeros((20, 20), dtype=np.uint8)
    binary[2:18, 2:18] = 1
    binary[6:14, 6:14] = 0     # a hole: its inner contour is not external
    assert mask_to_boxes(binary) == [(2, 2, 18, 18)]


def test_boxes_to_mask_is_inclusive_union():
    mask = boxes_to_mask([(1, 1, 2, 3), (2, 2, 4, 2)], (6, 6))
    expected = np.zeros((6, 6), dtype=bool)
    expected[1:4, 1:3] = True
    expected[2:3, 2:5] = True
    assert mask.dtype == bool and (mask == expected).all()
    assert not boxes_to_mask([], (6, 6)).any()
    # past the edge is cut, below 0 clipped
    assert boxes_to_mask([(-3, -3, 10, 10)], (6, 6)).all()


def test_map_equal_to_box_gives_iou_one():
    box = (4, 6, 19, 25)   # inclusive mask rows 6..25, cols 4..19
    gt = boxes_to_mask([box], (32, 32))
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[6:25, 4:19] = 1.0   # the contour's box adds one row and column: exactly the gt mask
    predicted = predicted_mask(heat, 0.5, (32, 32))
    assert (predicted == gt).all()
    values = mask_metrics(predicted[None], gt[None])
    for name in METRICS:
        assert values[name][0] == pytest.approx(1.0, abs=1e-7)


def test_empty_prediction():
    gt = boxes_to_mask([(0, 0, 9, 9)], (20, 20))   # 100 pixels of 400
    predicted = np.zeros((20, 20), dtype=bool)
    tp, fp, fn, tn = confusion_counts(predicted, gt)
    assert (tp, fp, fn, tn) == (0, 0, 100, 300)
    values = localization_metrics(tp, fp, fn, tn)
    assert values["iou"] == pytest.approx(0.0, abs=1e-6)
    assert values["dice"] == pytest.approx(0.0, abs=1e-6)
    assert values["recall"] == pytest.approx(0.0, abs=1e-6)
    assert values["precision"] == pytest.approx(1.0)   # eps / eps: nothing predicted, no error
    assert values["pixel_acc"] == pytest.approx(0.75, abs=1e-6)


def test_constant_map_gives_empty_mask():
    for raw in (np.zeros((14, 14)), np.full((14, 14), 3.5, dtype=np.float32),
                torch.ones(7, 7)):
        for threshold in (0.0, 0.5, 1.0):
            mask = predicted_mask(raw, threshold, (224, 224))
            assert mask.shape == (224, 224) and not mask.any()


def test_raw_map_is_upsampled_and_normalised():
    raw = torch.zeros(14, 14)
    raw[3:5, 6:8] = 10.0
    raw[0, 0] = -1.0
    mask = predicted_mask(raw, 0.5, (224, 224))
    rows, cols = np.nonzero(mask)
    # the blob covers patches 3..4 x 6..7 (pixels 48..79 x 96..127); bilinear spreads it a bit
    assert 40 <= rows.min() <= 56 and 72 <= rows.max() <= 88
    assert 88 <= cols.min() <= 104 and 120 <= cols.max() <= 136
    assert predicted_mask(raw * 7 + 3, 0.5, (224, 224)).tolist() == mask.tolist()


def test_all_inside_and_all_outside():
    gt = boxes_to_mask([(0, 0, 4, 4)], (10, 10))                 # 25 pixels
    inside = boxes_to_mask([(1, 1, 2, 2)], (10, 10))             # 4 pixels inside
    outside = boxes_to_mask([(6, 6, 9, 9)], (10, 10))            # 16 pixels outside
    values = mask_metrics(np.stack([inside, outside]), np.stack([gt, gt]))
    assert values["precision"][0] == pytest.approx(1.0)
    assert values["recall"][0] == pytest.approx(4 / 25, abs=1e-6)
    assert values["iou"][0] == pytest.approx(4 / 25, abs=1e-6)
    assert values["precision"][1] == pytest.approx(0.0, abs=1e-6)
    assert values["iou"][1] == pytest.approx(0.0, abs=1e-6)
    assert values["pixel_acc"][1] == pytest.approx((100 - 25 - 16) / 100, abs=1e-6)


def test_metrics_are_float32_with_released_formulas():
    tp, fp, fn, tn = (np.float32(v) for v in (30, 10, 20, 40))
    values = localization_metrics(tp, fp, fn, tn)
    eps = np.float32(1e-5)
    assert values["dice"].dtype == np.float32
    assert values["dice"] == (2 * tp + eps) / (2 * tp + fp + fn + eps)
    assert values["pixel_acc"] == pytest.approx(0.7)
    assert values["iou"] == pytest.approx(0.5)
    assert values["precision"] == pytest.approx(0.75)
    assert values["recall"] == pytest.approx(0.6)


def test_mean_is_a_float32_running_sum():
    values = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    total = np.float32(0)
    for v in values:
        total = np.float32(total + v)
    assert mean_metric(values) == float(total / np.float32(4))
    assert np.isnan(mean_metric([]))
