"""The one written-out timm forward (models/forward.py) against timm's own, for every model
variant, in float64; its users (the recorder, the class-token path, LRP's tape) read it; and a
clear error on a timm release it was not written for."""
from __future__ import annotations

import copy

import pytest
import timm
import torch

from models import create_model, forward
from tests.helpers import relative_error

#: every variant of tests.helpers.variants plus a register-token model and a gated-MLP one
EXTRA = ("vit_base_patch16_reg4_gap_256", "vit_small_patch14_reg4_dinov2")


@pytest.fixture(scope="module", params=EXTRA)
def extra_variant(request):
    torch.manual_seed(0)
    kwargs = {"depth": 2} if "base" in request.param else {"depth": 2, "img_size": 112}
    model = create_model(request.param, pretrained=False, **kwargs) \
        if "gap" not in request.param else timm.create_model(request.param, pretrained=False,
                                                             **kwargs).eval()
    size = model.patch_embed.img_size
    return model, torch.randn(2, 3, *size)


def check_equal(model, images):
    model64 = copy.deepcopy(model).double().eval()
    x = images.double()
    with torch.no_grad():
        expected = model64(x)
        tapes = []
        ours = forward.forward(model64, x, tapes=tapes)
    assert relative_error(ours, expected) < 1e-12
    assert len(tapes) == len(model64.blocks)
    assert set(tapes[0]) >= {"x_in", "h1", "q", "k", "v", "qk", "attn", "av", "proj_in",
                             "attn_branch", "x_mid", "h2", "fc2_in", "mlp_branch", "x_out"}


def test_forward_equals_timm_for_every_variant(variant):
    model, images, _ = variant
    check_equal(model, images)


def test_forward_equals_timm_with_registers_avg_pool_and_gated_mlp(extra_variant):
    check_equal(*extra_variant)


def test_rows_restricted_block_equals_the_full_block(variant):
    model, images, _ = variant
    model64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        x = forward.embed(model64, images.double())
        blk = model64.blocks[0]
        full = blk(x)
        assert relative_error(forward.block_forward(blk, x, rows=2), full[:, :2]) < 1e-12
        gate, q, k, v = forward.project_qkv(blk.attn, x, query_rows=1)
        _, q_all, k_all, v_all = forward.project_qkv(blk.attn, x)
        assert relative_error(q, q_all[:, :, :1]) < 1e-12 and torch.equal(k, k_all)
        assert gate is None


def test_an_unknown_timm_release_is_refused_with_a_clear_message():
    forward.check_timm_version("1.0.31")
    for version in ("0.6.12", "2.0.0", "dev"):
        with pytest.raises(forward.ForwardError, match=r"written for timm 1\.0\.x"):
            forward.check_timm_version(version)


def test_ops_replace_an_operation():
    """An :class:`Ops` subclass changes the forward where it says (here: softmax -> uniform
    attention) and nowhere else."""
    class Uniform(forward.Ops):
        def softmax(self, scores):
            return torch.full_like(scores, 1.0 / scores.shape[-1])

    torch.manual_seed(0)
    model = create_model("vit_agcam_tiny_patch16_224", pretrained=False).double()
    images = torch.randn(1, 3, 224, 224, dtype=torch.float64)
    tapes = []
    with torch.no_grad():
        forward.forward(model, images, ops=Uniform(), tapes=tapes)
    attn = tapes[0]["attn"]
    assert torch.allclose(attn, torch.full_like(attn, 1.0 / attn.shape[-1]))
