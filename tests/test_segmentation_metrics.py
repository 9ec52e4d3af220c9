"""Chefer's segmentation metrics (agcam.evaluation.segmentation): hand-worked maps and masks,
sklearn's average precision, and the original's channel-argmax + histogram counting."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from agcam.evaluation.segmentation import (
    EPS,
    SegmentationScores,
    average_precision,
    confusion,
    score_image,
    threshold_at_mean,
)

# 4x4 heatmap, mean 5/16: the seven pixels above it are the prediction
R4 = np.array([[1.0, 0.9, 0.0, 0.0],
               [0.8, 0.7, 0.0, 0.0],
               [0.6, 0.0, 0.5, 0.0],
               [0.0, 0.0, 0.0, 0.5]], dtype=np.float32)
G4 = np.array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 0, 1]])


def test_4x4_by_hand():
    """Prediction: (0,0) (0,1) (1,0) (1,1) (2,0) (2,2) (3,3). Foreground: TP 5, FP 2, FN 0.
    Background: 9 agree. Pixel accuracy 14/16; IoU fg 5/7, bg 9/11."""
    assert R4.mean() == pytest.approx(5 / 16, abs=1e-7)   # no pixel within 0.1 of it
    predicted = threshold_at_mean(R4)
    assert np.count_nonzero(predicted) == 7
    counts = confusion(predicted, G4.astype(bool))
    assert counts["correct"] == 14 and counts["labeled"] == 16
    assert counts["intersection"].tolist() == [9, 5]
    assert counts["union"].tolist() == [11, 7]
    scores = SegmentationScores()
    scores.add(0, R4, G4)
    result = scores.compute()
    assert result["pixel_accuracy"] == 14 / (EPS + 16)
    assert result["iou"] == {"background": 9 / (EPS + 11), "foreground": 5 / (EPS + 7)}
    assert result["miou"] == (9 / (EPS + 11) + 5 / (EPS + 7)) / 2


def test_threshold_is_strict():
    """Pixels equal to the mean are background: [0, 0.5, 0.5, 1] has mean 0.5."""
    r = np.array([[0.0, 0.5], [0.5, 1.0]], dtype=np.float32)
    assert threshold_at_mean(r).tolist() == [[False, False], [False, True]]


def test_ap_by_hand():
    """r = [[.9, .1], [.6, .3]], g = [[1, 0], [0, 1]]: scores concat(1 - r, r) = .1 .9 .4 .7
    .9 .1 .6 .3 for labels 0 1 1 0 1 0 0 1. Descending: .9 (2 positives), .7 (0), .6 (0),
    .4 (1), .3 (1), .1 (0, 0): AP = 0.5 * 1 + 0.25 * 3/5 + 0.25 * 4/6."""
    r = np.array([[0.9, 0.1], [0.6, 0.3]])
    g = np.array([[1, 0], [0, 1]])
    assert average_precision(r, g) == pytest.approx(0.5 + 0.25 * 3 / 5 + 0.25 * 4 / 6,
                                                    abs=1e-15)


def step_ap(scores, labels):
    """Average precision written out: sum over distinct scores (descending) of the recall
    gained times the precision there (ties form one step), sklearn's definition."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    positives = labels.sum()
    ap, tp, seen, recall_before = 0.0, 0, 0, 0.0
    for value in np.unique(scores)[::-1]:
        block = scores == value
        tp += labels[block].sum()
        seen += block.sum()
        recall = tp / positives
        ap += (recall - recall_before) * tp / seen
        recall_before = recall
    return ap


def test_ap_agrees_with_sklearn_and_the_written_out_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = np.round(rng.random((6, 7)), 1)            # rounded: ties included
        g = (rng.random((6, 7)) < 0.4).astype(int)
        scores = np.concatenate([1 - r.ravel(), r.ravel()])
        labels = np.concatenate([1 - g.ravel(), g.ravel()])
        ours = average_precision(r, g)
        assert ours == average_precision_score(labels, scores)
        assert ours == pytest.approx(step_ap(scores, labels), abs=1e-12)


def test_constant_map_predicts_background_and_scores_half():
    """The original's NaN path: every pixel background, every score equal, AP = 1/2 (half of
    concat(1 - g, g) is positive)."""
    zeros = np.zeros((4, 4), dtype=np.float32)
    image = score_image(0, zeros, G4)
    assert image.correct == 16 - 5
    assert image.ap == 0.5


def test_two_images_are_pooled_not_averaged():
    """Image A (4 pixels): all right. Image B (16 pixels): predicted foreground 8, true
    foreground 2, overlap 2. Pooled: accuracy (4 + 10) / 20; foreground IoU (1 + 2) / (1 + 8);
    background IoU (3 + 8) / (3 + 14). A mean of per-image values would differ."""
    ra = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    ga = np.array([[1, 0], [0, 0]])
    rb = np.zeros((4, 4), dtype=np.float32)
    rb[:2, :] = 1.0                                    # mean 0.5: the top 8 pixels
    gb = np.zeros((4, 4), dtype=int)
    gb[0, :2] = 1
    scores = SegmentationScores()
    scores.add(1, rb, gb)                              # any order
    scores.add(0, ra, ga)
    result = scores.compute()
    assert result["pixel_accuracy"] == 14 / (EPS + 20)
    assert result["iou"]["foreground"] == 3 / (EPS + 9)
    assert result["iou"]["background"] == 11 / (EPS + 17)
    assert result["miou"] == (3 / (EPS + 9) + 11 / (EPS + 17)) / 2
    per_image = np.mean([(1 / 1 + 2 / 8) / 2, (3 / 3 + 8 / 14) / 2])
    assert abs(result["miou"] - per_image) > 0.05
    assert result["map"] == np.mean([average_precision(ra, ga), average_precision(rb, gb)])


def histogram_counts(r, g):
    """The original's way, written independently: channels (r <= mean, r > mean), argmax over
    them, labels + 1, then np.histogram with 2 bins over [1, 2]."""
    channels = np.stack([r <= r.mean(), r > r.mean()]).astype(np.float32)
    predict = channels.argmax(0) + 1
    target = g + 1
    inter = predict * (predict == target)
    area_inter = np.histogram(inter, bins=2, range=(1, 2))[0]
    area_pred = np.histogram(predict, bins=2, range=(1, 2))[0]
    area_lab = np.histogram(target, bins=2, range=(1, 2))[0]
    return (np.sum(predict == target), area_inter, area_pred + area_lab - area_inter)


def test_counts_agree_with_channel_argmax_and_histograms():
    rng = np.random.default_rng(2)
    scores = SegmentationScores()
    correct, inter, union = 0, np.zeros(2, np.int64), np.zeros(2, np.int64)
    for i in range(10):
        r = rng.random((9, 11)).astype(np.float32)
        g = (rng.random((9, 11)) < 0.3).astype(int)
        scores.add(i, r, g)
        c, a, u = histogram_counts(r, g)
        correct, inter, union = correct + c, inter + a, union + u
    result = scores.compute()
    assert result["pixel_accuracy"] == np.float64(1.0) * correct / (EPS + 10 * 99)
    assert result["miou"] == float((np.float64(1.0) * inter / (EPS + union)).mean())


def test_bad_masks():
    with pytest.raises(ValueError, match="0 or 1"):
        score_image(0, R4, G4 * 2)
    with pytest.raises(ValueError, match="shape"):
        score_image(0, R4[:3], G4)
    assert np.isnan(SegmentationScores().compute()["map"])
