"""What is particular to the methods of issue 18 (attnlrp, cplrp, legrad, ig, ixg, smoothgrad):
their resolution, LeGrad's layer option, the LRP variants' patch level and refusals, register
tokens with average pooling, the pixel-level store, and the wiring of the captum methods (IG's
completeness within captum's own convergence delta, Input x Gradient = x * dy/dx, SmoothGrad
with no noise = |dy/dx|, seeded noise). The contract every method keeps (variants, batch = single,
the model untouched, targets, precisions) is ``tests/test_contract.py``; agreement with the
reference packages is ``tests/test_lrp_legrad_references.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients
from timm.models.vision_transformer import VisionTransformer

from agcam import available_methods, get_explainer
from agcam.maps import to_heatmap, upsample, wsol_scoremap

PIXEL = ("attnlrp", "cplrp", "ig", "ixg", "smoothgrad")
METHODS = PIXEL + ("legrad",)


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    options = dict(img_size=32, patch_size=8, embed_dim=24, depth=2, num_heads=3, num_classes=7)
    options.update(kwargs)
    return VisionTransformer(**options).double().eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_vit(), torch.randn(3, 3, 32, 32, dtype=torch.float64,
                                   generator=torch.Generator().manual_seed(1))


def test_registered_with_their_resolution():
    assert set(METHODS) <= set(available_methods())
    from agcam.registry import REGISTRY
    assert all(REGISTRY[m].resolution == "pixel" for m in PIXEL)
    assert REGISTRY["legrad"].resolution == "patch"


def test_smoothgrad_is_seeded_and_leaves_the_rng_alone(tiny):
    model, images = tiny
    explainer = get_explainer("smoothgrad", model, samples=3)
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    first = explainer.explain(images)[1]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(explainer.explain(images)[1], first)
    other = get_explainer("smoothgrad", model, samples=3, seed=1).explain(images)[1]
    assert not torch.equal(other, first)


def test_smoothgrad_without_noise_is_the_absolute_gradient(tiny):
    model, images = tiny
    x = images.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1)[:, None]).sum(), x)
    maps = get_explainer("smoothgrad", model, sigma=0.0, samples=2).explain(images)[1]
    assert torch.allclose(maps, grad.abs().sum(1), rtol=1e-12, atol=0)


def test_input_x_gradient_is_x_times_the_gradient(tiny):
    model, images = tiny
    x = images.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1)[:, None]).sum(), x)
    maps = get_explainer("ixg", model).explain(images)[1]
    assert torch.allclose(maps, (images * grad).sum(1), rtol=1e-12, atol=0)


@pytest.mark.parametrize("baseline", [0.0, 0.25])
def test_integrated_gradients_completeness(tiny, baseline):
    """sum(map) = y_c(x) - y_c(b) up to the convergence delta captum reports (the map is the
    channel sum of captum's attributions, nothing rescaled); b = 0 is the default."""
    model, images = tiny
    options = {} if baseline == 0.0 else {"baseline": baseline}
    explainer = get_explainer("ig", model, **options)            # 50 steps
    predictions, maps = explainer.explain(images)
    reference = torch.full_like(images, baseline)
    _, delta = IntegratedGradients(model).attribute(
        images, baselines=reference, target=predictions, n_steps=50,
        return_convergence_delta=True)
    with torch.no_grad():
        gap = (model(images) - model(reference)).gather(1, predictions[:, None])
    error = maps.sum(dim=(1, 2)) - gap[:, 0]
    assert torch.allclose(error, delta, rtol=1e-9, atol=1e-12)
    assert (delta.abs() <= 0.05 * gap[:, 0].abs()).all()


def test_legrad_layers_option(tiny):
    model, images = tiny
    all_layers = get_explainer("legrad", model).explain(images)[1]
    last = get_explainer("legrad", model, layers=[-1]).explain(images)[1]
    first = get_explainer("legrad", model, layers=[0]).explain(images)[1]
    assert torch.allclose(all_layers, (first + last) / 2, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="layers"):
        get_explainer("legrad", model, layers=[2])


def test_lrp_patch_level_sums_each_patch(tiny):
    model, images = tiny
    for method in ("attnlrp", "cplrp"):
        pixels = get_explainer(method, model).explain(images)[1]
        patches = get_explainer(method, model, level="patch").explain(images)[1]
        assert patches.shape == (3, 4, 4)
        expected = pixels.reshape(3, 4, 8, 4, 8).sum(dim=(2, 4))
        assert torch.allclose(patches, expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="level"):
        get_explainer("attnlrp", model, level="token")


def test_lrp_refuses_bf16_and_models_it_has_no_rule_for():
    model = tiny_vit()
    for method in ("attnlrp", "cplrp"):
        with pytest.raises(ValueError, match="bf16"):
            get_explainer(method, model, precision="bf16")
    with pytest.raises(RuntimeError, match="gated MLP"):
        from timm.layers import SwiGLUPacked
        get_explainer("attnlrp", tiny_vit(mlp_layer=SwiGLUPacked))
    with pytest.raises(RuntimeError, match="attention pooling"):
        get_explainer("cplrp", tiny_vit(global_pool="map"))


def test_pixel_maps_pass_the_heatmap_recipes_unchanged(tiny):
    model, images = tiny
    maps = get_explainer("ixg", model).explain(images)[1]
    for antialias in (False, True):
        assert torch.equal(upsample(maps, (32, 32), antialias=antialias), maps.float())
    scoremap = wsol_scoremap(maps[0].numpy(), (32, 32))          # MaxBoxAcc's recipe
    m = maps[0].numpy()
    assert np.abs(scoremap - (m - m.min()) / (m.max() - m.min())).max() <= 1e-12
    heat = to_heatmap(maps, (32, 32))
    assert heat.shape == (3, 32, 32) and float(heat.min()) == 0.0 and float(heat.max()) == 1.0


def test_store_records_the_map_size_of_pixel_methods():
    from agcam.store import StoreMeta
    from agcam.store.export import store_meta
    model = tiny_vit().float()
    pixel = store_meta("ixg", model, "tiny", None, 2)
    patch = store_meta("legrad", model, "tiny", None, 2)
    assert pixel.map_size == (32, 32) and patch.map_size == (4, 4) == patch.grid
    assert StoreMeta.from_attrs(pixel.attrs()) == pixel
    assert tuple(pixel.attrs()["heatmap_resolution"]) == (32, 32)
    assert [d.split()[0] for d in pixel.differences(patch)] == ["method", "map_size"]
    old = {k: v for k, v in patch.attrs().items() if k != "map_size"}     # written before
    assert StoreMeta.from_attrs(old).map_size == (4, 4)


def test_register_tokens_and_average_pooling():
    """Register tokens and ``global_pool='avg'`` (``fc_norm`` instead of the final norm): the
    LRP ops reach fc_norm, LeGrad's mean token goes through the model's own head."""
    model = tiny_vit(reg_tokens=2, global_pool="avg")
    assert model.num_prefix_tokens == 3 and not isinstance(model.fc_norm, torch.nn.Identity)
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(images).argmax(1)
    for method in METHODS:
        options = {"ig": {"steps": 4}, "smoothgrad": {"samples": 2}}.get(method, {})
        explainer = get_explainer(method, model, **options)
        predictions, maps = explainer.explain(images)
        assert torch.equal(predictions, expected), method
        assert maps.shape == (2, *explainer.map_size()) and torch.isfinite(maps).all(), method
        single = explainer.explain(images[1:])[1]
        assert torch.allclose(single[0], maps[1], rtol=1e-10, atol=1e-14), method
