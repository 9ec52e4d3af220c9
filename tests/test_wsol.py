"""MaxBoxAcc / MaxBoxAccV2 (agcam.evaluation.wsol): hand-worked maps whose boxes and accuracies
are known, and agreement with a literal one-threshold-at-a-time computation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agcam.datasets.common import gt_boxes
from agcam.evaluation.boxes import boxes_to_mask
from agcam.evaluation.wsol import (
    ALL,
    LARGEST,
    BoxAccuracy,
    best_ious,
    box_iou,
    cam_thresholds,
    contour_boxes,
    label_maps,
    merge_states,
    wsol_boxes,
)
from agcam.maps import wsol_scoremap

# A 4x4 score map: a 2x2 blob, brightest at (1, 1). floor(255 s) = 0, 255, 127, 51.
MAP4 = np.array([[0, 0, 0, 0],
                 [0, 1, 0.5, 0],
                 [0, 0.5, 0.2, 0],
                 [0, 0, 0, 0]], dtype=np.float64)


def test_4x4_map_boxes_by_hand():
    """tau < 0.5 (cut int(255 tau) < 127): the 2x2 blob (or its L of three pixels from tau 0.2
    on), boundingRect (1, 1, 2, 2) -> box (1, 1, 3, 3); tau >= 0.5: the single pixel (1, 1) ->
    box (1, 1, 2, 2). Against the ground truth (1, 1, 2, 2): IoU 4/9, then 1."""
    taus = cam_thresholds(0.01)
    ious = best_ious(MAP4, [(1, 1, 2, 2)], taus)
    expected = np.where(taus < 0.5, 4 / 9, 1.0)
    assert np.array_equal(ious[LARGEST], expected)
    assert np.array_equal(ious[ALL], expected)

    acc = BoxAccuracy()
    acc.accumulate(MAP4, [(1, 1, 2, 2)])
    result = acc.compute()
    assert result["maxboxacc"] == 100.0
    assert result["maxboxacc_threshold"]["50"] == 0.5
    # delta 0.3: 4/9 >= 0.3 from the first threshold on; delta 0.7: only tau >= 0.5
    assert result["maxboxacc_v2_delta"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert result["maxboxacc_v2_threshold"] == {"30": 0.0, "50": 0.5, "70": 0.5}
    # the ground truth as the whole 4x4 image: IoU 9/16 below tau 0.5, 4/16 above
    acc = BoxAccuracy()
    acc.accumulate(MAP4, [(0, 0, 3, 3)])
    result = acc.compute()
    assert result["maxboxacc"] == 100.0 and result["maxboxacc_threshold"]["50"] == 0.0
    assert result["maxboxacc_v2_delta"]["70"] == 0.0
    assert result["maxboxacc_v2"] == pytest.approx((100 + 100 + 0) / 3, abs=0)


def test_two_blobs_largest_contour_against_every_contour():
    """A 2x2 blob at (1, 1) (score 1) and a 4x4 one at (5, 5)-(8, 8) (score 0.8: floor(204.0)).
    Below tau 0.8 both show; the largest contour is the 4x4 one (contourArea 9 against 1), box
    (5, 5, 9, 9); the ground truth is the small one. Every-contour boxes include (1, 1, 3, 3)."""
    s = np.zeros((10, 10))
    s[1:3, 1:3] = 1.0
    s[5:9, 5:9] = 0.8
    boxes, top = contour_boxes((s * 255).astype(np.uint8) > 0)
    assert sorted(map(tuple, boxes.tolist())) == [(1, 1, 3, 3), (5, 5, 9, 9)]
    assert tuple(boxes[top]) == (5, 5, 9, 9)
    taus = cam_thresholds(0.01)
    ious = best_ious(s, [(1, 1, 3, 3)], taus)
    assert np.array_equal(ious[ALL], np.ones(len(taus)))
    # int(0.8 * 255) = 204 is no longer below 204: from tau 0.8 on only the small blob
    assert np.array_equal(ious[LARGEST], np.where(taus >= 0.8, 1.0, 0.0))
    acc = BoxAccuracy()
    acc.accumulate(s, [(1, 1, 3, 3)])
    result = acc.compute()
    assert result["maxboxacc"] == 100.0 and result["maxboxacc_threshold"]["50"] == 0.8
    assert result["maxboxacc_v2_threshold"] == {"30": 0.0, "50": 0.0, "70": 0.0}


def test_box_clipped_at_the_last_pixel_and_holes_counted():
    """x + w past the edge is clipped to W - 1; RETR_TREE gives a hole its own contour."""
    binary = np.zeros((6, 10), dtype=np.uint8)
    binary[2:4, 7:10] = 1                 # boundingRect (7, 2, 3, 2): x + w = 10 -> 9
    boxes, _ = contour_boxes(binary)
    assert boxes.tolist() == [[7, 2, 9, 4]]
    ring = np.zeros((8, 8), dtype=np.uint8)
    ring[1:6, 1:6] = 1
    ring[3, 3] = 0                        # a one-pixel hole: boundingRect (2, 2, 3, 3)
    boxes, top = contour_boxes(ring)
    assert sorted(map(tuple, boxes.tolist())) == [(1, 1, 6, 6), (2, 2, 5, 5)]
    assert tuple(boxes[top]) == (1, 1, 6, 6)


def test_no_contour_gives_the_box_0000():
    """A constant map has no contour at any threshold: the box [0, 0, 0, 0], one pixel, which
    matches the ground truth (0, 0, 0, 0) exactly and (0, 0, 1, 1) with IoU 1/4."""
    zeros = np.zeros((5, 5))
    boxes, top = contour_boxes(zeros > 0)
    assert boxes.tolist() == [[0, 0, 0, 0]] and top == 0
    taus = cam_thresholds(0.01)
    assert np.array_equal(best_ious(zeros, [(0, 0, 0, 0)], taus)[LARGEST], np.ones(len(taus)))
    assert np.array_equal(best_ious(zeros, [(0, 0, 1, 1)], taus)[ALL], np.full(len(taus), 0.25))


def test_iou_inclusive_areas_against_filled_masks():
    """box_iou equals the IoU of the inclusively filled masks
    (agcam.evaluation.boxes.boxes_to_mask), and a box against itself is 1 even when it is one
    pixel."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, (30, 2))
    b = rng.integers(0, 20, (7, 2))
    boxes_a = np.concatenate([a, a + rng.integers(0, 10, (30, 2))], axis=1)
    boxes_b = np.concatenate([b, b + rng.integers(0, 10, (7, 2))], axis=1)
    ious = box_iou(boxes_a, boxes_b)
    for i, ba in enumerate(boxes_a):
        ma = boxes_to_mask([ba], (40, 40))
        for j, bb in enumerate(boxes_b):
            mb = boxes_to_mask([bb], (40, 40))
            assert ious[i, j] == np.count_nonzero(ma & mb) / np.count_nonzero(ma | mb)
    assert box_iou([(3, 3, 3, 3)], [(3, 3, 3, 3)])[0, 0] == 1.0


def literal_maxboxacc(scoremaps, gts, interval):
    """wsolevaluation's loop as its README describes it, one threshold at a time, with
    cv2.threshold and mask IoUs: the accuracy per (rule, delta, tau)."""
    taus = list(np.arange(0, 1, interval))
    correct = {rule: np.zeros((3, len(taus))) for rule in (LARGEST, ALL)}
    for s, gt in zip(scoremaps, gts):
        u = np.expand_dims((s * 255).astype(np.uint8), 2)
        h, w = s.shape
        gt_mask = [boxes_to_mask([g], (h, w)) for g in gt]
        for k, tau in enumerate(taus):
            _, binary = cv2.threshold(u, int(tau * np.max(u)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            boxes = []
            for c in contours:
                x, y, bw, bh = cv2.boundingRect(c)
                boxes.append((x, y, min(x + bw, w - 1), min(y + bh, h - 1)))
            if not boxes:
                boxes, largest = [(0, 0, 0, 0)], [(0, 0, 0, 0)]
            else:
                largest = [boxes[max(range(len(contours)),
                                     key=lambda i: cv2.contourArea(contours[i]))]]
            for rule, chosen in ((LARGEST, largest), (ALL, boxes)):
                best = max(np.count_nonzero(boxes_to_mask([b], (h, w)) & g)
                           / np.count_nonzero(boxes_to_mask([b], (h, w)) | g)
                           for b in chosen for g in gt_mask)
                for j, delta in enumerate((30, 50, 70)):
                    correct[rule][j, k] += best >= delta / 100
    return {rule: c * 100. / len(scoremaps) for rule, c in correct.items()}


@pytest.mark.parametrize("interval", [0.01, 0.05])
def test_agrees_with_the_literal_loop_and_with_any_batching(interval):
    """Smooth random maps with several blobs, one to three ground-truth boxes: the accumulated
    accuracies equal the literal loop's at every (delta, tau); split in two accumulators and
    merged (two processes), or through state() (torchrun's gather), nothing changes."""
    rng = np.random.default_rng(1)
    maps, gts = [], []
    for _ in range(8):
        raw = rng.random((7, 7)) ** 3
        maps.append(wsol_scoremap(raw, (48, 48)))
        corners = rng.integers(0, 30, (rng.integers(1, 4), 2))
        gts.append([(x, y, x + rng.integers(4, 18), y + rng.integers(4, 18)) for x, y in corners])
    reference = literal_maxboxacc(maps, gts, interval)
    whole = BoxAccuracy(interval)
    whole.accumulate_batch(maps, gts)
    for rule in (LARGEST, ALL):
        assert np.array_equal(whole.accuracies(rule), reference[rule])
    first, second = BoxAccuracy(interval), BoxAccuracy(interval)
    first.accumulate_batch(maps[:3], gts[:3])
    second.accumulate_batch(maps[3:], gts[3:])
    merged = merge_states([first.state(), second.state()])
    assert merged.compute() == whole.compute()
    result = whole.compute()
    assert result["maxboxacc"] == reference[LARGEST][1].max()
    assert result["maxboxacc_v2"] == np.mean([reference[ALL][j].max() for j in range(3)])


def test_scoremap_recipe():
    """Bicubic resize in float64, then min-max; constant or NaN maps give zeros."""
    raw = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    s = wsol_scoremap(raw, (8, 6))
    assert s.shape == (8, 6) and s.dtype == np.float64
    cubic = cv2.resize(raw.double().numpy(), (6, 8), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(s, (cubic - cubic.min()) / (cubic - cubic.min()).max())
    assert s.min() == 0.0 and s.max() == 1.0
    assert not wsol_scoremap(np.full((3, 3), 7.0), (6, 6)).any()
    assert not wsol_scoremap(np.array([[np.nan, 1.0], [0.0, 2.0]]), (4, 4)).any()


def test_box_scaling_multiplies_first_as_wsolevaluation():
    """x = 183 in a 336-pixel-wide image: 183 * 224 / 336 = 122 exactly, 183 / 336 * 224 rounds
    to 121.99999999999999: wsolevaluation's resize_bbox gives 122, the paper's formula 121."""
    assert wsol_boxes([(183, 0, 183, 0)], (336, 336), (224, 224)) == [(122, 0, 122, 0)]
    assert gt_boxes([(183, 0, 183, 0)], 336, 336, (224, 224)) == [(121, 0, 121, 0)]


def test_bad_input():
    acc = BoxAccuracy()
    with pytest.raises(ValueError, match="outside"):
        acc.accumulate(MAP4 * 2, [(0, 0, 1, 1)])
    with pytest.raises(ValueError, match="ground-truth"):
        acc.accumulate(MAP4, [])
    with pytest.raises(ValueError, match="step"):
        cam_thresholds(0.0)
    with pytest.raises(ValueError, match="different grids"):
        BoxAccuracy(0.01).merge(BoxAccuracy(0.001))
    assert np.isnan(BoxAccuracy().compute()["maxboxacc"])


class CountingExplainer:
    """Maps that name their class: map = class id everywhere; records each call's targets."""

    class_specific = True

    def __init__(self):
        self.calls = []

    def explain(self, images, target=None):
        self.calls.append(None if target is None else target.tolist())
        classes = torch.as_tensor(target)
        return classes, classes.float()[:, None, None].expand(-1, 2, 2).clone()


def test_label_maps_explain_only_the_misclassified_images_again():
    explainer = CountingExplainer()
    inputs = torch.zeros(4, 3, 8, 8)
    predicted = torch.tensor([5, 6, 7, 8])
    maps = predicted.float()[:, None, None].expand(-1, 2, 2).clone()
    out = label_maps(explainer, inputs, predicted, maps, [5, 1, 7, 2])
    assert explainer.calls == [[1, 2]]                      # one call, the two wrong images
    assert out[:, 0, 0].tolist() == [5, 1, 7, 2]             # every map is the label's
    assert maps[:, 0, 0].tolist() == [5, 6, 7, 8]            # the caller's maps untouched
    explainer.calls.clear()
    assert label_maps(explainer, inputs, predicted, maps, [5, 6, 7, 8]) is maps
    explainer.class_specific = False                          # Rollout: the same map for all
    assert label_maps(explainer, inputs, predicted, maps, [0, 0, 0, 0]) is maps
    assert explainer.calls == []
