"""TAM, Beyond Intuition (BT-H, BT-T), TokenTM, ViT-CX and the LibraGrad variants against their
references, in float64, on the tiny random ViT of ``tests/fixtures/new_methods/references.npz``
(made by the authors' own code, or for TokenTM by the decompv reimplementation, with
``make_references.py`` beside it; the tests never import that code). Shapes, batches, targets and
model hygiene are the contract test's (tests/test_contract.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agcam import get_explainer
from tests.helpers import relative_error

FIXTURE = Path(__file__).parent / "fixtures" / "new_methods" / "references.npz"
#: float64 agreement with the reference code (measured: 1e-16 to 1e-15 relative)
EXACT = 1e-12


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def tiny(reference):
    """``(model, images, classes)``: the fixture's float64 timm ViT, its images and classes."""
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(**json.loads(str(reference["config"]))).double().eval()
    model.load_state_dict({k[2:]: torch.from_numpy(v) for k, v in reference.items()
                           if k.startswith("w.")})
    with torch.no_grad():
        logits = model(torch.from_numpy(reference["images"]))
    assert torch.allclose(logits, torch.from_numpy(reference["logits"]), rtol=0, atol=1e-12)
    return model, torch.from_numpy(reference["images"]), torch.from_numpy(reference["classes"])


@pytest.mark.parametrize("method", ["tam", "bt_h", "bt_t", "tokentm", "libra_ixg", "vitcx"])
def test_maps_equal_the_authors_code_in_float64(method, reference, tiny):
    model, images, classes = tiny
    predictions, maps = get_explainer(method, model).explain(images, classes)
    assert torch.equal(predictions, classes)
    expected = reference[method].reshape(maps.shape)
    for i in range(len(images)):
        assert relative_error(maps[i], expected[i]) < EXACT, (method, i)


def test_tam_and_bt_options(tiny):
    model, images, _ = tiny
    _, first = get_explainer("tam", model, first_state=True, steps=3).explain(images[:1])
    _, chain = get_explainer("tam", model, start_layer=7, steps=3).explain(images[:1])
    assert torch.allclose(first, chain, rtol=0, atol=1e-15)   # no block between: the same state
    with pytest.raises(ValueError, match="start_layer"):
        get_explainer("tam", model, start_layer=9)
    with pytest.raises(ValueError, match="steps"):
        get_explainer("bt_h", model, steps=1)
    # a start layer past the last block keeps the last block (not an all-zero map)
    _, late = get_explainer("bt_t", model, start_layer=20, steps=2).explain(images[:1])
    _, last = get_explainer("bt_t", model, start_layer=8, steps=2).explain(images[:1])
    assert torch.equal(late, last) and (late != 0).any()


# -- TokenTM: each equation on hand-worked cases ------------------------------------------------
def test_tokentm_lengths_and_necc_by_hand():
    from baselines.tokentm import necc, token_lengths
    before = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]], dtype=torch.float64)
    assert torch.equal(token_lengths(before), torch.tensor([[5.0, 1.0]], dtype=torch.float64))
    # same directions: cosine 1 for both tokens, NECC uniform
    assert torch.allclose(necc(before, 2 * before), torch.full((1, 2), 0.5, dtype=torch.float64))
    # token 0 keeps its direction (cos 1), token 1 reverses (cos -1): softmax([1, -1])
    after = torch.tensor([[[6.0, 8.0], [-2.0, 0.0]]], dtype=torch.float64)
    e = np.e
    expected = torch.tensor([[e / (e + 1 / e), (1 / e) / (e + 1 / e)]], dtype=torch.float64)
    assert torch.allclose(necc(before, after), expected, rtol=1e-15, atol=0)


def test_tokentm_transformation_weights_and_updates_by_hand():
    from baselines.tokentm import (
        LENGTH_EPSILON,
        attention_update,
        mlp_update,
        transformation_weights,
    )
    before = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]], dtype=torch.float64)
    after = torch.tensor([[[6.0, 8.0], [-2.0, 0.0]]], dtype=torch.float64)
    e = np.e
    coherence = [e / (e + 1 / e), (1 / e) / (e + 1 / e)]
    w = [10 / (5 + LENGTH_EPSILON) * coherence[0], 2 / (1 + LENGTH_EPSILON) * coherence[1]]
    assert torch.allclose(transformation_weights(before, after),
                          torch.tensor([w], dtype=torch.float64), rtol=1e-15, atol=0)
    # U_mlp = I + diag(W)
    assert torch.allclose(mlp_update(before, after),
                          torch.tensor([[[1 + w[0], 0], [0, 1 + w[1]]]], dtype=torch.float64),
                          rtol=1e-15, atol=0)
    # U_attn = I + (Abar diag(W)) * mean_h relu(G): two heads, the second's gradient negative
    attention = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]],
                               [[0.75, 0.25], [0.5, 0.5]]]], dtype=torch.float64)
    gradient = torch.tensor([[[[2.0, 2.0], [2.0, 0.0]],
                              [[-1.0, -1.0], [-1.0, -1.0]]]], dtype=torch.float64)
    mean_a = [[0.5, 0.5], [0.5, 0.5]]
    mean_g = [[1.0, 1.0], [1.0, 0.0]]
    expected = [[1 + mean_a[0][0] * w[0] * mean_g[0][0], mean_a[0][1] * w[1] * mean_g[0][1]],
                [mean_a[1][0] * w[0] * mean_g[1][0], 1 + mean_a[1][1] * w[1] * mean_g[1][1]]]
    assert torch.allclose(attention_update(attention, gradient, before, after),
                          torch.tensor([expected], dtype=torch.float64), rtol=1e-15, atol=0)


def test_tokentm_aggregation_by_hand():
    from baselines.tokentm import attention_update, mlp_update, tokentm_relevance
    g = torch.Generator().manual_seed(0)
    tokens = [torch.randn(1, 3, 4, generator=g, dtype=torch.float64) for _ in range(5)]
    attention = torch.rand(1, 2, 3, 3, generator=g, dtype=torch.float64).softmax(-1)
    gradient = torch.randn(1, 2, 3, 3, generator=g, dtype=torch.float64)
    tapes = [dict(attn=attention, x_in=tokens[0], x_mid=tokens[1], x_out=tokens[2]),
             dict(attn=attention.flip(-1), x_in=tokens[2], x_mid=tokens[3], x_out=tokens[4])]
    grads = [gradient, -gradient]
    C = torch.diag_embed(tokens[0].norm(dim=-1))                    # C_0 = diag(L(E^0))
    for tape, grad in zip(tapes, grads):                            # C_l = U_mlp U_attn C_{l-1}
        C = mlp_update(tape["x_mid"], tape["x_out"]) @ attention_update(
            tape["attn"], grad, tape["x_in"], tape["x_mid"]) @ C
    assert torch.allclose(tokentm_relevance(tokens[0], tapes, grads), C, rtol=1e-15, atol=0)
    # with no positive gradient the attention contributes nothing: U_attn = I
    flat = tokentm_relevance(tokens[0], tapes[:1], [-gradient.abs()])
    assert torch.allclose(flat, mlp_update(tokens[1], tokens[2])
                          @ torch.diag_embed(tokens[0].norm(dim=-1)), rtol=1e-15, atol=0)


# -- LibraGrad -----------------------------------------------------------------------------------
def test_libra_ops_keep_the_forward_and_change_the_backward(tiny):
    from baselines.libragrad import LIBRA
    from models import forward
    model, images, classes = tiny
    x = images.clone().requires_grad_(True)
    libra_logits = forward.forward(model, x, ops=LIBRA)
    with torch.no_grad():
        assert torch.equal(libra_logits, forward.forward(model, images))
    (libra,) = torch.autograd.grad(libra_logits.gather(1, classes[:, None]).sum(), x)
    plain_logits = forward.forward(model, x)
    (plain,) = torch.autograd.grad(plain_logits.gather(1, classes[:, None]).sum(), x)
    assert relative_error(libra, plain) > 1e-3                   # the backward differs


def test_libra_gelu_rule_by_hand():
    from baselines.libragrad import gelu_gate_detached
    x = torch.tensor([-1.5, 0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    y = gelu_gate_detached(torch.nn.GELU(), x)
    assert torch.equal(y, torch.nn.functional.gelu(x))
    (grad,) = torch.autograd.grad(y.sum(), x)
    phi = 0.5 * (1 + torch.erf(x.detach() / np.sqrt(2)))         # the gate, no x * pdf(x) term
    assert torch.allclose(grad, phi, rtol=1e-15, atol=0)


def test_libra_ig_is_integrated_libra_gradients(tiny):
    model, images, classes = tiny
    # one Gauss-Legendre step: IG = x * grad(x / 2) = 2 * IxG at x / 2 (zero baseline)
    _, ig = get_explainer("libra_ig", model, steps=1).explain(images[:2], classes[:2])
    _, ixg = get_explainer("libra_ixg", model).explain(images[:2] / 2, classes[:2])
    assert relative_error(ig, 2 * ixg) < EXACT


def test_libra_refuses_what_it_has_no_rule_for():
    from timm.models.vision_transformer import VisionTransformer

    from baselines.libragrad import LibraGradError
    tanh = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=3,
                             num_classes=4, act_layer=lambda: torch.nn.GELU(approximate="tanh"))
    with pytest.raises(LibraGradError, match="exact GELU"):
        get_explainer("libra_ixg", tanh)
    qk = VisionTransformer(img_size=32, patch_size=8, embed_dim=24, depth=1, num_heads=3,
                           num_classes=4, qk_norm=True)
    with pytest.raises(LibraGradError, match="LibraGrad: block 0: q_norm"):
        get_explainer("libra_ig", qk)


# -- ViT-CX ----------------------------------------------------------------------------------------
def test_vitcx_is_seeded_and_leaves_the_global_generator(tiny):
    model, images, classes = tiny
    state = torch.random.get_rng_state()
    _, a = get_explainer("vitcx", model).explain(images[:1], classes[:1])
    assert torch.equal(torch.random.get_rng_state(), state)
    _, b = get_explainer("vitcx", model).explain(images[:1], classes[:1])
    _, c = get_explainer("vitcx", model, seed=1).explain(images[:1], classes[:1])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_vitcx_clustering_by_hand():
    from baselines.vitcx import cluster_masks
    # rows 0 and 1 point the same way (distance 0), row 2 is orthogonal to them (distance 1)
    masks = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                         dtype=torch.float64)
    clustered = cluster_masks(masks, 0.1)
    assert sorted(map(tuple, clustered.tolist())) == [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0)]
    one = cluster_masks(masks, 2.0)                              # one cluster: (3, 0, 1) scaled
    assert torch.allclose(one, torch.tensor([[1.0, 0.0, 1 / 3]], dtype=torch.float64))
