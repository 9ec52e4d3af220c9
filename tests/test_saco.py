"""SaCo (agcam/evaluation/saco.py): the pairwise aggregation against the released
``compute_SaCo`` (fixture made by ``tests/fixtures/saco/make_references.py``; never imported
here), hand-made cases, and a model whose faithful map is known."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from agcam.evaluation.base import EvalBatch, get_evaluation
from agcam.evaluation.saco import saco_coefficient, salience_groups

FIXTURE = Path(__file__).parent / "fixtures" / "saco" / "references.npz"


@pytest.mark.parametrize("suffix", ["", "5"])
def test_aggregation_equals_the_released_code(suffix):
    ref = dict(np.load(FIXTURE))
    ours = [saco_coefficient(s, p) for s, p in zip(ref[f"s{suffix}"], ref[f"pred{suffix}"])]
    assert np.abs(np.array(ours) - ref[f"F{suffix}"]).max() < 1e-12


def test_aggregation_by_hand():
    s = [3.0, 2.0, 1.0]
    assert saco_coefficient(s, [0.5, 0.2, 0.1]) == 1.0        # drops follow the salience
    assert saco_coefficient(s, [0.1, 0.2, 0.5]) == -1.0       # drops against it
    # drops (0.5, 0.1, 0.2): pairs (1,2) +1, (1,3) +2, (2,3) -1 -> (1 + 2 - 1) / 4
    assert saco_coefficient(s, [0.5, 0.1, 0.2]) == pytest.approx(0.5, rel=1e-15)
    assert np.isnan(saco_coefficient([1.0, 1.0], [0.3, 0.1]))  # all weights zero


def test_groups_are_equal_and_ordered():
    heat = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.7, 0.2]], dtype=torch.float64)
    groups = salience_groups(heat, 3)
    assert [g.tolist() for g in groups] == [[1, 4], [2, 3], [5, 0]]


class HalfPlane(nn.Module):
    """Two classes; class 0's logit is the weighted sum of the input (positive weights)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        z = (x * self.weight).flatten(1).sum(1)
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def test_the_faithful_map_scores_one_and_its_reverse_minus_one():
    g = torch.Generator().manual_seed(0)
    weight = torch.rand(3, 8, 8, generator=g, dtype=torch.float64) * 0.1
    inputs = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    model = HalfPlane(weight)
    faithful = (inputs * weight).sum(1)                    # each pixel's share of the logit

    def batch(maps):
        return EvalBatch(indices=[0, 1], names=["a", "b"], labels=None, predictions=[0, 0],
                         inputs=inputs, maps=maps, model=model,
                         geometry=SimpleNamespace(input_size=(8, 8)))
    evaluation = get_evaluation("saco", saco_groups=4)
    assert [r["saco"] for r in evaluation.score(batch(faithful))] == [1.0, 1.0]
    assert [r["saco"] for r in evaluation.score(batch(-faithful))] == [-1.0, -1.0]
    summary = evaluation.summarize(evaluation.score(batch(torch.zeros(2, 8, 8,
                                                                      dtype=torch.float64))), {})
    assert summary["undefined"] == 2 and np.isnan(summary["saco"])
