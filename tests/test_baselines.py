"""Attention Rollout and Transformer Attribution (LRP): the released numbers, batching, model
hygiene, the model variants and the relevance rules on tensors small enough to check by hand."""
from __future__ import annotations

import pytest
import torch

from agcam import get_explainer
from baselines import LRPError, Rollout, TransformerAttribution
from baselines.lrp import (
    branch_relevance,
    linear_relevance,
    residual_relevance,
    safe_divide,
    split_weight,
)
from baselines.rollout import discard_lowest, rollout_matrices
from models import create_model, model_geometry
from tests.helpers import relative_error


# -- the released numbers: tests/test_exactness.py (float64 exactly, float32 within the spread) --
def test_rollout_ignores_the_target(golden_model, golden_inputs, golden_reference):
    explainer = get_explainer("rollout", golden_model)
    _, maps = explainer.explain(golden_inputs[:2])
    _, targeted = explainer.explain(golden_inputs[:2], [5, 7])
    assert torch.equal(maps, targeted)


def test_rollout_row_normalisation_only_differs_after_discarding(golden_model64, golden_inputs,
                                                                 golden_reference64):
    inputs = golden_inputs.double()
    _, maps = Rollout(golden_model64, normalization="row").explain(inputs)
    for i in range(6):
        assert relative_error(maps[i], golden_reference64["rollout_mean_0.0_maps64"][i]) < 1e-12
    _, maps = Rollout(golden_model64, "max", 0.9, normalization="row").explain(inputs)
    assert min(relative_error(maps[i], golden_reference64["rollout_max_0.9_maps64"][i])
               for i in range(6)) > 1e-2


def test_lrp_forward_gives_the_models_logits(golden_model, golden_inputs):
    """With the model's own final-norm eps (the released eps: tests/test_exactness.py)."""
    with torch.no_grad():
        expected = golden_model(golden_inputs)
    logits = TransformerAttribution(golden_model, final_norm_eps="model").forward_tape(
        golden_inputs)[0]
    assert torch.allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(1), expected.argmax(1))


# -- batching and model hygiene -------------------------------------------------------------------
# -- the model variants at random init ------------------------------------------------------------
def test_variants_give_finite_maps_on_their_own_grid(variant):
    model, images, grid = variant
    batch = images.shape[0]
    with torch.no_grad():
        logits = model(images)
    own_eps = TransformerAttribution(model, final_norm_eps="model")
    assert torch.allclose(own_eps.forward_tape(images)[0], logits, rtol=1e-4, atol=1e-5)
    lrp = TransformerAttribution(model)      # the released final-norm eps: its own forward
    with torch.no_grad():
        lrp_logits = lrp.forward_tape(images)[0]
    for explainer, expected in ((Rollout(model), logits), (lrp, lrp_logits), (own_eps, logits)):
        predictions, maps = explainer.explain(images)
        assert torch.equal(predictions, expected.argmax(1))
        assert maps.shape == (batch, *grid)
        assert torch.isfinite(maps).all() and (maps != 0).any()


def test_register_tokens_and_unsupported_pooling():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", pretrained=False, reg_tokens=4, depth=2)
    assert model_geometry(model).num_prefix_tokens == 5
    images = torch.randn(2, 3, 224, 224)
    for explainer in (Rollout(model), TransformerAttribution(model)):
        _, maps = explainer.explain(images)
        assert maps.shape == (2, 14, 14) and torch.isfinite(maps).all()
    pooled = create_model("vit_tiny_patch16_224", pretrained=False, global_pool="avg", depth=1)
    with pytest.raises(LRPError, match="class-token pooling"):
        TransformerAttribution(pooled)


# -- rollout by hand ------------------------------------------------------------------------------
M = torch.tensor([[0.50, 0.30, 0.20],
                  [0.10, 0.60, 0.30],
                  [0.25, 0.15, 0.60]])   # rows sum to 1, no ties


def _rollout(matrices, **options):
    return rollout_matrices(torch.stack(matrices)[None, :, None], **options)[0]


def test_discard_keeps_index_0_and_drops_the_smallest():
    # int(9 * 0.34) = 3 smallest: 0.10, 0.15, 0.20
    kept = discard_lowest(M[None], 0.34)[0]
    assert torch.equal(kept, torch.tensor([[0.5, 0.3, 0.0], [0.0, 0.6, 0.3], [0.25, 0.0, 0.6]]))
    tiny_cls = M.clone()
    tiny_cls[0, 0] = 0.01                 # now index 0 is among the smallest and stays
    kept = discard_lowest(tiny_cls[None], 0.34)[0]
    assert kept[0, 0] == 0.01 and int((kept == 0).sum()) == 2
    assert torch.equal(discard_lowest(M[None], 0.0)[0], M)


def test_rollout_released_normalisation_divides_columns_by_row_sums():
    P = torch.tensor([[0.75, 0.15, 0.0], [0.0, 0.8, 0.15], [0.125, 0.0, 0.8]])  # (M' + I) / 2
    row_sums = torch.tensor([0.9, 0.95, 0.925])
    released = _rollout([M], discard_ratio=0.34)
    row = _rollout([M], discard_ratio=0.34, normalization="row")
    assert torch.allclose(released, P / row_sums[None, :])
    assert torch.allclose(row, P / row_sums[:, None])
    assert torch.allclose(released[0, 1:], torch.tensor([0.15 / 0.95, 0.0]))
    assert torch.allclose(row[0, 1:], torch.tensor([0.15 / 0.9, 0.0]))
    # without discarding every row of P sums to 1 and both are (M + I) / 2
    assert torch.allclose(_rollout([M]), (M + torch.eye(3)) / 2)
    assert torch.allclose(_rollout([M], normalization="row"), _rollout([M]))


def test_rollout_multiplies_in_forward_order():
    first, second = M, M.T / M.T.sum(-1, keepdim=True)
    eye = torch.eye(3)
    expected = ((second + eye) / 2) @ ((first + eye) / 2)
    assert torch.allclose(_rollout([first, second]), expected)
    assert not torch.allclose(_rollout([second, first]), expected)


# -- LRP rules by hand ----------------------------------------------------------------------------
def test_safe_divide():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([0.0, 1.0, -1e-9, -2.0])
    out = safe_divide(a, b)
    assert out[0] == 0                                  # b == 0 -> 0
    assert torch.isclose(out[1], torch.tensor(2.0))
    assert torch.isclose(out[2], torch.tensor(3e9))     # b + 1e-9 == 0 -> divide by 1e-9
    assert torch.isclose(out[3], torch.tensor(-2.0))


def test_residual_rule_shares_relevance_by_absolute_totals():
    # y = u + v = [1, 0]; R = [1, 1]. z-rule: R_u = [3, 0], R_v = [-2, 0] (y = 0 gets nothing);
    # a = 3, b = -2, sum R = 2: R_u *= (3/5 * 2) / 3, R_v *= (2/5 * 2) / -2.
    u, v, R = torch.tensor([[3.0, -1.0]]), torch.tensor([[-2.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    R_u, R_v = residual_relevance(R, u, v)
    assert torch.allclose(R_u, torch.tensor([[1.2, 0.0]]))
    assert torch.allclose(R_v, torch.tensor([[0.8, 0.0]]))
    # a branch whose z-rule share sums to 0 gets nothing: a = 2, b = 0
    R_u, R_v = residual_relevance(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 3.0]]),
                                  torch.tensor([[1.0, -1.0]]))
    assert torch.allclose(R_u, torch.tensor([[0.5, 1.5]])) and torch.equal(R_v, torch.zeros(1, 2))
    # the sums are per image: a batch of both gives each its own result
    R_u, R_v = residual_relevance(torch.tensor([[1.0, 1.0], [1.0, 1.0]]),
                                  torch.tensor([[3.0, -1.0], [1.0, 3.0]]),
                                  torch.tensor([[-2.0, 1.0], [1.0, -1.0]]))
    assert torch.allclose(R_u, torch.tensor([[1.2, 0.0], [0.5, 1.5]]))
    assert torch.allclose(R_v, torch.tensor([[0.8, 0.0], [0.0, 0.0]]))


def test_linear_rule_alpha_1_beta_0():
    # X+ = [2, 0], X- = [0, -1]; W+ = [[1, 0], [2, 0]], W- = [[0, -1], [0, -3]]
    # Z = X+ W+^T + X- W-^T = [2, 4] + [1, 3] = [3, 7]; R = Z -> S = 1
    # R_in = X+ * (S W+) + X- * (S W-) = [2, 0] * [3, 0] + [0, -1] * [0, -4] = [6, 4]
    X, W = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, -1.0], [2.0, -3.0]])
    R_in = linear_relevance(torch.tensor([[3.0, 7.0]]), X, split_weight(W))
    assert torch.allclose(R_in, torch.tensor([[6.0, 4.0]]))
    # an output with Z = 0 passes nothing on
    R_in = linear_relevance(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]]),
                            split_weight(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])))
    assert torch.allclose(R_in, torch.tensor([[1.0, 0.0]]))


def test_branch_rule():
    x = torch.tensor([[2.0, 0.0, -1.0]])
    R = branch_relevance(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[0.5, 2.0, -1.0]]), x)
    assert torch.allclose(R, torch.tensor([[1.5, 0.0, 0.0]]))
