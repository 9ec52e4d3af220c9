"""Completeness (agcam/evaluation/completeness.py): a linear model whose Input x Gradient map is
complete by construction, and captum's Integrated Gradients on the golden model."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from agcam.evaluation.base import EvalBatch, get_evaluation


class Linear(nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return x.flatten(1) @ self.weight + self.bias


def batch_of(model, inputs, maps, predictions):
    return EvalBatch(indices=list(range(len(inputs))), names=["x"] * len(inputs), labels=None,
                     predictions=predictions, inputs=inputs, maps=maps, model=model,
                     geometry=SimpleNamespace(input_size=tuple(inputs.shape[-2:])))


def test_a_linear_models_input_x_gradient_is_complete_and_its_bias_is_the_gap():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(3, 3, 4, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(48, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(5, generator=g, dtype=torch.float64)
    model = Linear(weight, bias)
    classes = model(inputs).argmax(1)
    maps = (inputs * weight[:, classes].t().reshape(3, 3, 4, 4)).sum(1)     # x * dy_c/dx
    evaluation = get_evaluation("completeness")
    records = evaluation.score(batch_of(model, inputs, maps, classes.tolist()))
    summary = evaluation.summarize(records, {"method": "ig"})
    assert summary["claims"] == "logit - baseline"
    assert summary["error_ig"] < 1e-14                     # sum = y(x) - y(0) = y(x) - b_c
    logits = model(inputs).gather(1, classes[:, None])[:, 0]
    expected = (bias[classes].abs() / logits.abs()).mean().item()
    assert summary["error"] == pytest.approx(expected, rel=1e-12)
    assert evaluation.summarize(records, {"method": "gae"})["claims"] == ""


def test_integrated_gradients_on_the_golden_model_is_nearly_complete(golden_model64,
                                                                       golden_inputs):
    from agcam import get_explainer
    inputs = golden_inputs[:2].double()
    predictions, maps = get_explainer("ig", golden_model64).explain(inputs)
    evaluation = get_evaluation("completeness")
    summary = evaluation.summarize(
        evaluation.score(batch_of(golden_model64, inputs, maps, predictions.tolist())),
        {"method": "ig"})
    assert summary["error_ig"] < 0.05 and summary["error_ig"] < summary["error"]
