"""AGCAM against the authors' released numbers, batching, the gradient cut and model hygiene."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agcam import AGCAM, get_explainer
from agcam.explainer import resolve_target
from models.attention import AttentionRecorder, AttentionRecordingError
from tests.helpers import relative_error


def test_without_gradient_cut_the_maps_are_wrong(golden_model, golden_inputs, golden_reference):
    # The released model detaches every attention's input; the full gradient differs by ~100%.
    _, maps = AGCAM(golden_model, gradient_cut=False).explain(golden_inputs)
    errors = [relative_error(maps[i], golden_reference["agcam_maps"][i]) for i in range(6)]
    assert max(errors) > 0.5
    assert min(errors) > 1e-2


@pytest.mark.parametrize("fusion", ["mean", "max"])
def test_fusion_options(golden_model, golden_inputs, fusion):
    _, summed = AGCAM(golden_model).explain(golden_inputs[:2])
    _, fused = AGCAM(golden_model, head_fusion=fusion, layer_fusion=fusion).explain(
        golden_inputs[:2])
    L = len(golden_model.blocks)
    H = golden_model.blocks[0].attn.num_heads
    if fusion == "mean":
        torch.testing.assert_close(fused * (L * H), summed, rtol=1e-5, atol=1e-7)
    else:
        assert torch.all(fused <= summed + 1e-7) and torch.all(fused * L * H >= summed - 1e-6)
    with pytest.raises(ValueError):
        AGCAM(golden_model, head_fusion="median")


def test_fused_attention_restored(golden_model, golden_inputs):
    attn = golden_model.blocks[0].attn
    original = attn.fused_attn
    attn.fused_attn = True
    try:
        with AttentionRecorder(golden_model) as recorder:
            assert attn.fused_attn is False
            golden_model(golden_inputs[:1])
            assert recorder.stacked("probs").shape == (1, 4, 3, 197, 197)
        assert attn.fused_attn is True and "forward" not in attn.__dict__
    finally:
        attn.fused_attn = original


def test_recorded_probabilities_are_softmax_of_scores(golden_model, golden_inputs):
    with torch.no_grad(), AttentionRecorder(golden_model) as recorder:
        golden_model(golden_inputs[:1])
    scores, probs = recorder.stacked("scores"), recorder.stacked("probs")
    torch.testing.assert_close(probs, scores.softmax(-1))
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))


def test_clear_error_when_nothing_recorded(golden_model, golden_inputs, monkeypatch):
    # A forward that bypasses the blocks records nothing: say so instead of explaining garbage.
    monkeypatch.setattr(golden_model, "forward_features",
                        lambda x, **kw: golden_model.norm(golden_model._pos_embed(
                            golden_model.patch_embed(x))))
    with pytest.raises(AttentionRecordingError, match="no attention was recorded"):
        get_explainer("agcam", golden_model).explain(golden_inputs[:1])
    monkeypatch.undo()
    assert "forward" not in golden_model.blocks[0].attn.__dict__


def test_clear_error_for_unsupported_attention(golden_inputs):
    from models import create_model
    model = create_model("vit_agcam_tiny_patch16_224", pretrained=False)
    model.blocks[1].attn = torch.nn.Identity()
    with pytest.raises(AttentionRecordingError, match="block 1"):
        get_explainer("agcam", model).explain(golden_inputs[:1])
    assert all("forward" not in b.attn.__dict__ for b in model.blocks)


def test_bad_inputs_to_explain(golden_model, golden_inputs):
    explainer = get_explainer("agcam", golden_model)
    with pytest.raises(ValueError, match="model takes"):
        explainer.explain(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="entries"):
        explainer.explain(golden_inputs[:2], [1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        explainer.explain(golden_inputs[:1], 5000)


def test_resolve_target():
    assert resolve_target(None, 3, torch.device("cpu")) is None
    assert resolve_target(7, 3, torch.device("cpu")).tolist() == [7, 7, 7]
    assert resolve_target(np.array([1, 2]), 2, torch.device("cpu")).tolist() == [1, 2]


@pytest.mark.parametrize("name", ["vit_agcam_tiny_patch16_224", "deit_tiny_distilled_patch16_224",
                                  "deit3_small_patch16_224"])
def test_class_token_fast_path_equals_full_autograd(name):
    """The recorder's class-token fast path gives the gradient of plain autograd over the full
    attention matrices (same cut), on plain, distilled (2 prefix tokens) and layer-scale ViTs."""
    from agcam.explainer import class_scores
    from models import create_model
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).double()    # float64: the same math to 1e-12
    images = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    _, fast = AGCAM(model).explain(images)
    with torch.enable_grad(), AttentionRecorder(model, detach_input=True, rows="all",
                                                grad=True) as recorder:
        logits = model(images)
        _, _, score = class_scores(logits, None)
        grads = recorder.gradients(score)[:, :, :, 0, model.num_prefix_tokens:]
        scores = recorder.stacked("scores")[:, :, :, 0, model.num_prefix_tokens:].detach()
    slow = (torch.sigmoid(scores) * torch.relu(grads)).sum(dim=(1, 2)).reshape(fast.shape)
    assert relative_error(fast, slow) < 1e-12
    with torch.no_grad():
        assert torch.allclose(logits, model(images), rtol=0, atol=1e-12)
