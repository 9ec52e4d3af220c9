"""The exactness claims: every method's maps against the authors' released code.

Proven in float64, where the released code is not float-sensitive (golden README: multiplying its
inputs by 1 + 1e-13 moves its float64 LRP maps by at most 4e-10 relative, image 3: 3e-7), so the
same math agrees to ~1e-12 on any CPU, whatever its float32 kernels:

* AGCAM (predicted and given class) and the three Rollout settings: <= 1e-12 relative, every image;
* LRP (predicted and given class): <= 1e-10 on five images, <= 1e-7 on image 3;
* predictions equal.

In float32 the released LRP divides by near-zero sums and its own float32 maps are up to 0.17
away from its float64 maps, so a float32 comparison with ``reference.npz`` is bounded per image
by that spread plus an allowance for this machine's own float32 rounding
(:func:`tests.helpers.numerics.float32_bounds`); otherwise it asserts correlation, predictions and
finiteness. No threshold here depends on the CPU it was tried on.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agcam import get_explainer
from tests.helpers import (
    abs_error,
    correlation,
    float32_bounds,
    float32_spread,
    relative_error,
)
from tests.helpers.cases import (
    CASES,
    IDS,
    LRP_FLOAT32_CORRELATION,
    explain,
    float64_limits,
)


@pytest.fixture(scope="module")
def maps64(golden_model64, golden_inputs, golden_reference):
    cache = {}

    def get(method, options, key, targeted):
        if key not in cache:
            cache[key] = explain(golden_model64, golden_inputs, golden_reference, method,
                                 options, targeted)
        return cache[key]
    return get


# -- float64: the exactness claims ----------------------------------------------------------------
@pytest.mark.parametrize("method, options, key, targeted", CASES, ids=IDS)
def test_float64_maps_equal_the_released_float64_maps(maps64, golden_reference,
                                                      golden_reference64, method, options, key,
                                                      targeted):
    predictions, maps = maps64(method, options, key, targeted)
    assert maps.dtype == torch.float64 and maps.shape == (6, 14, 14)
    errors = [relative_error(maps[i], golden_reference64[key + "64"][i]) for i in range(6)]
    assert all(e <= limit for e, limit in zip(errors, float64_limits(method))), errors
    pred_key = "lrp_pred64" if method in ("lrp", "rollout") else "agcam_pred64"
    assert predictions.tolist() == golden_reference64[pred_key].tolist()


def test_float64_lrp_with_the_models_own_final_norm_eps_is_another_forward(
        golden_model64, golden_inputs, golden_reference64):
    """The released LRP's final norm uses eps=1e-5 (timm: 1e-6). With the model's own eps the
    maps are 2e-5 to 1e-4 away from the released float64 maps: a difference in the math, not in
    the rounding (it survives float64)."""
    _, maps = get_explainer("lrp", golden_model64, final_norm_eps="model").explain(
        golden_inputs.double())
    errors = [relative_error(maps[i], golden_reference64["lrp_maps64"][i]) for i in range(6)]
    assert min(errors) > 1e-6, errors


def test_lrp_final_norm_eps_is_used_only_inside_its_forward(golden_model64, golden_inputs):
    """The released eps changes LRP's own forward only: the model keeps its eps and its logits,
    and LRP's logits are the model's with a final LayerNorm of eps=1e-5."""
    from baselines.lrp import TransformerAttribution
    model = golden_model64
    images = golden_inputs[:2].double()
    eps = model.norm.eps
    with torch.no_grad():
        expected = model(images)
        x = model.forward_features(images)  # ends with the model's own final norm
        tokens = model.blocks(model.norm_pre(model._pos_embed(model.patch_embed(images))))
        released = model.forward_head(torch.nn.functional.layer_norm(
            tokens, model.norm.normalized_shape, model.norm.weight, model.norm.bias, 1e-5))
    assert eps == 1e-6 and torch.allclose(model.norm(tokens), x, rtol=0, atol=1e-12)
    for mode, logits in (("model", expected), ("released", released)):
        lrp = TransformerAttribution(model, final_norm_eps=mode)
        tape_logits = lrp.forward_tape(images)[0].detach()
        assert relative_error(tape_logits, logits) < 1e-12, mode
    assert relative_error(released, expected) > 1e-9      # the two forwards do differ
    assert model.norm.eps == eps
    with pytest.raises(ValueError, match="final_norm_eps"):
        TransformerAttribution(model, final_norm_eps="1e-5")


# -- float32: only what holds on any CPU ----------------------------------------------------------
@pytest.mark.parametrize("method, options, key, targeted", CASES, ids=IDS)
def test_float32_maps_within_the_released_float32_spread(golden_model, golden_inputs,
                                                         golden_reference, golden_reference64,
                                                         maps64, method, options, key, targeted):
    predictions, maps = explain(golden_model, golden_inputs, golden_reference, method, options,
                                targeted)
    assert maps.dtype == torch.float32 and maps.shape == (6, 14, 14)
    assert torch.isfinite(maps).all()
    pred_key = "lrp_pred" if method in ("lrp", "rollout") else "agcam_pred"
    assert predictions.tolist() == golden_reference[pred_key].tolist()
    own = None
    if method == "lrp":
        own = float32_spread(maps, maps64(method, options, key, targeted)[1])
        correlations = [correlation(maps[i], golden_reference[key][i]) for i in range(6)]
        assert min(correlations) >= LRP_FLOAT32_CORRELATION, correlations
    bounds = float32_bounds(golden_reference, golden_reference64, key, own)
    errors = np.array([abs_error(maps[i], golden_reference[key][i]) for i in range(6)])
    assert (errors <= bounds).all(), (errors / bounds).tolist()
