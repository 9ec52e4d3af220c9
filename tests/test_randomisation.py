"""Model-parameter randomisation (agcam/evaluation/randomisation.py) against Quantus' MPRT (fixture
made by ``tests/fixtures/randomisation/make_references.py`` in its own environment; Quantus is
never imported here): the cascade's modules, order and randomised weights, the similarities on
Quantus' own map pairs, and the whole evaluation; then the check's verdict on a model-independent
map (fails) and on Input x Gradient (passes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agcam.evaluation.base import EvalBatch, get_evaluation
from agcam.evaluation.randomisation import (
    cascade,
    checkpoints,
    normalise,
    randomise,
    spearman,
    ssim,
)
from agcam.registry import get_explainer

FIXTURE = Path(__file__).parent / "fixtures" / "randomisation" / "references.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIXTURE))


def fixture_model(ref):
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=24, depth=3, num_heads=2,
                              num_classes=5).double().eval()
    state = {k[len("param/"):]: torch.from_numpy(v) for k, v in ref.items()
             if k.startswith("param/")}
    model.load_state_dict(state)
    return model


def checksum(model):
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return [float(flat.sum()), float((flat ** 2).sum())]


def test_cascade_is_quantus_modules_order_and_weights(ref):
    """unit="module" is Quantus' step list; each step's randomised model has Quantus' weights
    (checksums to the last bits: the same draws); unit="layer" groups them head to patch
    embedding."""
    model = fixture_model(ref)
    steps = cascade(model, "module")
    assert [name for name, _ in steps] == list(ref["layers"])
    sums = [checksum(model)]
    for _, modules in steps:
        randomise(model, modules)
        sums.append(checksum(model))
    assert np.abs(np.array(sums) - ref["checksum"]).max() <= 1e-12 * np.abs(ref["checksum"]).max()
    layers = cascade(fixture_model(ref), "layer")
    assert [name for name, _ in layers] == ["head", "norm", "blocks.2", "blocks.1", "blocks.0",
                                            "patch_embed"]
    assert [m for _, modules in layers for m in modules] == list(ref["layers"])


def test_randomise_leaves_the_callers_random_state():
    model = torch.nn.Linear(3, 2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    randomise(model, [""])
    assert torch.equal(torch.rand(3), expected)


def test_similarities_equal_quantus_on_its_map_pairs(ref):
    """Spearman (MPRT's scores) and SSIM (Quantus' ssim on the 2-D maps) on the maps Quantus
    compared, float64."""
    maps = ref["maps"]
    first = [normalise(m) for m in maps[0]]
    ours_rho = [[spearman(a, normalise(b)) for a, b in zip(first, step)] for step in maps[1:]]
    ours_ssim = [[ssim(a, normalise(b)) for a, b in zip(first, step)] for step in maps[1:]]
    assert np.abs(np.array(ours_rho) - ref["spearman"]).max() < 1e-10
    assert np.abs(np.array(ours_ssim) - ref["ssim"]).max() < 1e-10


def explain_batch(model, method, images, targets=None):
    explainer = get_explainer(method, model)
    predictions, maps = explainer.explain(images, target=targets)
    return EvalBatch(indices=list(range(len(images))), names=[str(i) for i in range(len(images))],
                     labels=None, predictions=predictions.tolist(), inputs=images, maps=maps,
                     model=model, geometry=explainer.geometry, extra={"explainer": explainer})


def test_evaluation_equals_quantus_mprt(ref):
    """The whole evaluation, unit="module", with ``ixg`` (captum's Input x Gradient: the
    fixture's explanation) on the fixture model in float64: Quantus' MPRT scores at every third
    step (the weights of every step are checked above)."""
    model = fixture_model(ref)
    images = torch.from_numpy(ref["images"])
    batch = explain_batch(model, "ixg", images, torch.from_numpy(ref["targets"]))
    assert batch.predictions == ref["targets"].tolist()
    assert np.abs(batch.maps.numpy() - ref["maps"][0]).max() < 1e-12
    evaluation = get_evaluation("randomisation", randomisation_unit="module",
                                randomisation_steps=7)
    records = evaluation.score(batch)
    steps = checkpoints(len(ref["layers"]), 7)             # every third of the 21 steps
    assert steps == list(range(2, 21, 3))
    assert [r["layers"] for r in records] == [list(ref["layers"][steps])] * len(images)
    ours = np.array([r["spearman"] for r in records]).T
    assert np.abs(ours - ref["spearman"][steps]).max() < 1e-10
    assert np.abs(np.array([r["ssim"] for r in records]).T - ref["ssim"][steps]).max() < 1e-10


def test_a_model_independent_map_fails_and_ixg_passes(ref):
    """The ``random`` floor (seeded by the image's bytes) is the same map on every randomised
    model: Spearman 1 everywhere, reported as failing with a warning; Input x Gradient's maps
    change (a float32 model, three evenly spaced steps of six)."""
    model = fixture_model(ref).float()
    images = torch.from_numpy(ref["images"]).float()
    evaluation = get_evaluation("randomisation", randomisation_steps=3)
    floor = evaluation.summarize(evaluation.score(explain_batch(model, "random", images)), {})
    assert floor["layers"] == ["norm", "blocks.1", "patch_embed"]
    assert floor["curve"] == [1.0, 1.0, 1.0] and floor["ssim_curve"] == [1.0, 1.0, 1.0]
    assert floor["fails"] and "fails the randomisation check" in floor["warning"]
    ixg = evaluation.summarize(evaluation.score(explain_batch(model, "ixg", images)), {})
    assert not ixg["fails"] and "warning" not in ixg
    assert ixg["spearman_last"] < 0.5 and ixg["spearman"] < 0.5


def test_checkpoints_and_bad_options():
    assert checkpoints(6, 0) == list(range(6)) == checkpoints(6, 9)
    assert checkpoints(6, 3) == [1, 3, 5]        # after steps 2, 4 and 6
    assert checkpoints(7, 3) == [1, 3, 6]        # after steps 7 // 3, 14 // 3, 7
    assert checkpoints(15, 1) == [14]
    with pytest.raises(ValueError, match="randomisation_unit"):
        get_evaluation("randomisation", randomisation_unit="block")
    with pytest.raises(ValueError, match="randomisation_steps"):
        get_evaluation("randomisation", randomisation_steps=-1)


def test_similarity_conventions_by_hand():
    a = np.arange(16.0).reshape(4, 4)
    assert spearman(a, 2 * a + 1) == pytest.approx(1.0, abs=1e-15)
    assert spearman(a, -a) == pytest.approx(-1.0, abs=1e-15)
    assert np.isnan(spearman(np.ones((4, 4)), a))
    assert ssim(normalise(a), normalise(a)) == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(ssim(np.ones((4, 4)), np.ones((4, 4))))
    assert np.array_equal(normalise(np.array([[-2.0, 1.0]])), [[1.0, 0.5]])
    assert np.array_equal(normalise(np.array([[-2.0, 1.0]]), absolute=False), [[-1.0, 0.5]])
