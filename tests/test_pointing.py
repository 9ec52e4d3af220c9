"""The pointing game and the energy-based pointing game (agcam/evaluation/pointing.py): hand-made
heatmaps and boxes whose answer is obvious, TAM's ``energy_point_game`` (fixture made by
``tests/fixtures/pointing/make_references.py``; never imported here), and ``agcam evaluate``."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agcam.evaluation.base import EvalBatch, get_evaluation
from agcam.evaluation.pointing import box_mask, energy_share, pointing_hit, tam_energy_scores

FIXTURE = Path(__file__).parent / "fixtures" / "pointing" / "references.npz"


def test_box_mask_is_the_union_with_exclusive_ends():
    mask = box_mask([(1, 2, 3, 4), (2, 3, 5, 5)], (6, 6))
    expected = np.zeros((6, 6), dtype=bool)
    expected[2:4, 1:3] = True
    expected[3:5, 2:5] = True
    assert np.array_equal(mask, expected)


def test_pointing_hit_inside_within_tolerance_and_outside():
    heat = np.zeros((100, 100))
    heat[50, 50] = 1.0                                   # the maximum at x = 50, y = 50
    assert pointing_hit(heat, [(40, 40, 60, 60)])
    assert pointing_hit(heat, [(65, 50, 70, 60)], tolerance=15)        # 15 px to the left
    assert not pointing_hit(heat, [(66, 50, 70, 60)], tolerance=15)    # 16 px
    assert pointing_hit(heat, [(59, 59, 70, 70)], tolerance=13)        # diagonal 9*sqrt(2)
    assert not pointing_hit(heat, [(60, 60, 70, 70)], tolerance=14)    # diagonal 10*sqrt(2)
    assert not pointing_hit(heat, [(50, 50, 50, 60)], tolerance=0)     # empty box
    assert pointing_hit(heat, [(0, 0, 5, 5), (50, 50, 51, 51)], tolerance=0)


def test_energy_and_tam_scores_by_hand():
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 1.0, 0.5
    mask = box_mask([(0, 0, 2, 2)], (4, 4))
    assert energy_share(heat, mask) == pytest.approx(1 / 1.5, rel=1e-15)
    assert energy_share(np.zeros((4, 4)), mask) == 0.0
    # binarised at 0.3: two pixels on, one inside the 4-pixel box
    precision, recall, f1 = tam_energy_scores(heat, mask)
    assert (precision, recall) == (0.5, 0.25)
    assert f1 == pytest.approx(2 * 0.5 * 0.25 / (0.75 + 1e-6), rel=1e-15)


def batch_of(maps, boxes, size=(224, 224)):
    return EvalBatch(indices=list(range(len(maps))), names=[str(i) for i in range(len(maps))],
                     labels=[0] * len(maps), predictions=[0] * len(maps), inputs=None,
                     maps=maps, model=None, geometry=SimpleNamespace(input_size=size),
                     boxes=boxes)


def test_tam_scores_equal_tams_energy_point_game():
    ref = dict(np.load(FIXTURE))
    evaluation = get_evaluation("pointing")
    records = evaluation.score(batch_of(torch.from_numpy(ref["maps"]),
                                        [[tuple(b)] for b in ref["boxes"].tolist()]))
    for key in ("precision", "recall", "f1"):
        ours = np.array([r[f"tam_{key}"] for r in records])
        assert np.abs(ours - ref[key]).max() < 1e-12, key
    summary = evaluation.summarize(records, {})
    assert summary["num_images"] == len(records)
    assert summary["tam_f1"] == pytest.approx(float(np.mean(ref["f1"])), abs=1e-12)
    assert 0 <= summary["pointing"] <= 100 and 0 <= summary["energy"] <= 1


def test_agcam_evaluate_runs_the_pointing_game(tmp_path):
    from agcam.__main__ import entry
    from tests.helpers import GOLDEN_MODEL_NAME, GOLDEN_WEIGHTS
    from tests.helpers.golden import GOLDEN_ILSVRC
    argv = ["evaluate", "--model", GOLDEN_MODEL_NAME, "--checkpoint", str(GOLDEN_WEIGHTS),
            "--device", "cpu", "--num_workers", "0", "--no_progress", "--method", "agcam",
            "--eval", "pointing", "--data_root", str(GOLDEN_ILSVRC), "--out", str(tmp_path)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert entry(argv) == 0
    text = (tmp_path / "results.json").read_text()
    results = json.loads(text)
    assert "pointing" in text and "tam_f1" in text and results
