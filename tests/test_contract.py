"""The contract every registered explanation method keeps, tested over ``available_methods()``: a
new method is tested by registering it (as timm tests every registered model).

For each method: shapes and finiteness on every model variant (tests/helpers/variants.py: 7x7,
14x14 and 24x24 grids, DeiT's two prefix tokens, layer scale), at random init; a batch gives
each image its single-image map (float64, where rounding cannot decide it); the model is left as
it was (mode, parameters, gradients, hooks, patched forwards, fused-attention flags); targets
(``None`` = the predicted class; one per image; a class-agnostic method ignores them); the
precisions it refuses are refused with a reason, the others run and return float32 maps. What is
particular to a method (its maps against a reference) is in its own test module.
"""
from __future__ import annotations

import copy

import pytest
import torch

from agcam import available_methods, get_explainer
from agcam.precision import PRECISIONS
from agcam.registry import method_class, method_label, ordered_methods, paper_methods
from tests.helpers import relative_error

METHODS = available_methods()
#: float64 batch vs single: every method's per-image arithmetic is independent of the batch up to
#: float64 rounding; LRP's divisions by near-zero sums amplify it (golden README: a 1e-15
#: relative input change moves its float64 maps by up to 3e-7), hence not tighter.
BATCH_TOLERANCE = 1e-5


def expected_shape(method, model, batch):
    from models import model_geometry
    geometry = model_geometry(model)
    pixel = getattr(method_class(method), "resolution", "patch") == "pixel"
    return (batch, *(geometry.input_size if pixel else geometry.grid))


def model_state(model):
    """Everything an explainer could leave behind on a model."""
    return ([(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
              len(m._backward_pre_hooks), "forward" in m.__dict__, getattr(m, "fused_attn", None),
              m.training) for name, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def assert_untouched(model, before, images, logits):
    (modules, parameters) = before
    now_modules, now_parameters = model_state(model)
    assert now_modules == modules
    assert all(torch.equal(now_parameters[k], v) for k, v in parameters.items())
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(images), logits)


def test_registry_metadata():
    assert {"agcam", "rollout", "lrp"} <= set(METHODS)
    assert paper_methods() == ["agcam", "lrp", "rollout"]
    assert ordered_methods()[:3] == paper_methods() and sorted(ordered_methods()) == list(METHODS)
    for name in METHODS:
        cls = method_class(name)
        assert cls.name == name and cls.label and method_label(name) == cls.label
        assert set(cls.precisions) <= set(PRECISIONS) and "fp32" in cls.precisions
    assert method_label("agcam") == "AGCAM" and method_label("rollout") == "Attention Rollout"
    with pytest.raises(ValueError, match="unknown method 'nope'; choose from .*agcam"):
        method_class("nope")


#: options that keep a method's contract cheap where its defaults run the model many times an
#: image (the integration steps of TAM, Beyond Intuition and Libra IG, ViT-CX's masks); the
#: contract does not depend on them; each method's own test module checks its defaults against
#: its reference
CHEAP_OPTIONS = {"tam": dict(steps=2), "bt_h": dict(steps=2), "bt_t": dict(steps=2),
                 "libra_ig": dict(steps=2), "vitcx": dict(distance_threshold=1.5),
                 "ig": dict(steps=4), "smoothgrad": dict(samples=4)}


def explainer_for(method, model, **kwargs):
    return get_explainer(method, model, **CHEAP_OPTIONS.get(method, {}), **kwargs)


#: the variant sweep runs every method (the many-pass ones with CHEAP_OPTIONS)
VARIANT_METHODS = list(METHODS)


@pytest.mark.parametrize("method", VARIANT_METHODS)
def test_on_every_model_variant(method, variant):
    model, images, _ = variant
    batch = images.shape[0]
    before = model_state(model)
    with torch.no_grad():
        logits = model(images)
    predictions, maps = explainer_for(method, model).explain(images)
    assert predictions.shape == (batch,) and predictions.dtype == torch.long
    assert ((predictions >= 0) & (predictions < logits.shape[1])).all()
    assert maps.shape == expected_shape(method, model, batch)
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all() and (maps != 0).any()
    assert_untouched(model, before, images, logits)


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_explains_each_image_as_alone(method, golden_model64, golden_inputs,
                                              golden_reference):
    explainer = explainer_for(method, golden_model64)
    inputs = golden_inputs.double()
    targets = torch.from_numpy(golden_reference["class_specific_targets"])
    predictions, batched = explainer.explain(inputs, targets)
    for i in range(len(inputs)):
        prediction, single = explainer.explain(inputs[i:i + 1], int(targets[i]))
        assert prediction.item() == predictions[i].item()
        assert relative_error(single[0], batched[i]) < BATCH_TOLERANCE, (method, i)


@pytest.mark.parametrize("method", METHODS)
def test_targets_and_model_hygiene_on_the_golden_model(method, golden_model, golden_inputs):
    images = golden_inputs[:3]
    before = model_state(golden_model)
    with torch.no_grad():
        logits = golden_model(images)
    explainer = explainer_for(method, golden_model)
    predictions, maps = explainer.explain(images)
    _, same = explainer.explain(images, predictions)
    assert torch.equal(same, maps)                    # None means the predicted class
    other = (predictions + 1) % logits.shape[1]
    _, changed = explainer.explain(images, other)
    _, one_class = explainer.explain(images, int(other[0]))
    assert torch.equal(one_class[0], changed[0])      # an int is that class for every image
    if explainer.class_specific:
        assert not torch.equal(changed, maps)
    else:
        assert torch.equal(changed, maps)
    with pytest.raises(ValueError, match="target"):
        explainer.explain(images, [0, 1])
    if explainer.class_specific:
        with pytest.raises(ValueError, match="target class outside"):
            explainer.explain(images, logits.shape[1])
    golden_model.train()
    try:
        explainer.explain(images)
        assert golden_model.training                  # the caller's mode is given back
    finally:
        golden_model.eval()
    assert_untouched(golden_model, before, images, logits)


@pytest.mark.parametrize("method", METHODS)
def test_precisions_are_run_or_refused_with_a_reason(method, golden_model, golden_inputs):
    cls = method_class(method)
    for precision in PRECISIONS:
        if precision in cls.precisions:
            predictions, maps = explainer_for(method, golden_model, precision=precision).explain(
                golden_inputs[:2])
            assert maps.dtype == torch.float32 and torch.isfinite(maps).all(), precision
        else:
            with pytest.raises(ValueError, match=f"cannot run at precision {precision}: "
                                                 f"{cls.refusal[:20]}"):
                explainer_for(method, golden_model, precision=precision)


def test_a_caller_model_in_float64_gives_float64_maps(golden_model64, golden_inputs):
    model = copy.deepcopy(golden_model64)
    for method in METHODS:
        _, maps = explainer_for(method, model).explain(golden_inputs[:1].double())
        assert maps.dtype == torch.float64, method
