"""The perturbation engine (agcam/evaluation/curves.py): rankings, steps, substrates, scores and
AUCs on hand-worked tiny cases, the batched engine against a one-image-at-a-time loop written out
here, and ABPC as one of its settings."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import auc as sklearn_auc
from torch import nn

from agcam.evaluation.curves import (
    Blur,
    FunctionSubstrate,
    NormalizedConstant,
    PerturbationTest,
    Ranking,
    Steps,
    UnitConstant,
    chefer_auc,
    gkern,
    perturbation_curves,
    rise_auc,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PixelSum(nn.Module):
    """logits[c] = sum over pixels and channels of x * weight[c]: a model whose scores a test
    can compute by hand. float64."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.double())

    def forward(self, x):
        return torch.einsum("bchw,kchw->bk", x, self.weight)


def batch(images, heatmaps, labels, start=0):
    n = len(images)
    return SimpleNamespace(images=images, heatmaps=heatmaps,
                           labels=torch.as_tensor(labels), names=[f"i{start + i}" for i in
                                                                  range(n)],
                           indices=list(range(start, start + n)))


# ------------------------------------------------------------------------------ ranking

def test_sort_ranking_of_a_4x4_map_with_ties_takes_the_lower_index_first():
    # pixel values: row-major 0..15, with pixels 5 and 10 tied at the top (value 20)
    heat = torch.arange(16, dtype=torch.float32)
    heat[5] = heat[10] = 20.0
    masks = Ranking("sort").masks(heat.view(1, 4, 4), most_relevant=True)
    assert masks.mask(1)[0].nonzero()[:, 0].tolist() == [5]          # tie: lower index
    assert masks.mask(3)[0].nonzero()[:, 0].tolist() == [5, 10, 15]
    least = Ranking("sort").masks(heat.view(1, 4, 4), most_relevant=False)
    assert least.mask(4)[0].nonzero()[:, 0].tolist() == [0, 1, 2, 3]
    assert not least.mask(0).any() and least.mask(16).all()
    # nested: every step keeps what the previous one changed
    for k in range(15):
        assert (masks.mask(k) <= masks.mask(k + 1)).all()


def test_topk_ranking_with_offset_one_ties_values_closer_than_2_to_the_minus_23():
    heat = torch.tensor([[0.41219136, 0.41219145, 0.1, 0.9]])
    plain = Ranking("topk").masks(heat, most_relevant=True)
    assert plain.mask(2)[0].tolist() == [False, True, False, True]
    shifted = Ranking("topk", offset=1.0).masks(heat, most_relevant=True)
    assert shifted.mask(2)[0].sum() == 2 and shifted.mask(2)[0, 3]
    assert Ranking("topk").masks(heat, False).mask(1)[0].tolist() == [False, False, True, False]


def test_rankings_agree_without_ties():
    heat = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    for most in (True, False):
        a, b = Ranking("topk").masks(heat, most), Ranking("sort").masks(heat, most)
        for k in (0, 1, 7, 32, 63, 64):
            assert torch.equal(a.mask(k), b.mask(k))


def test_unknown_ranking_rule_is_refused():
    with pytest.raises(ValueError, match="ranking rule"):
        Ranking("argsort")


# -------------------------------------------------------------------------------- steps

def test_steps_from_fractions_truncate_as_the_scripts_do():
    chefer = Steps(fractions=tuple(i / 10 for i in range(1, 10)))
    assert chefer.counts(224 * 224) == [5017, 10035, 15052, 20070, 25088, 30105, 35123, 40140,
                                        45158]
    assert chefer.positions(224 * 224)[0] == 0.1


def test_steps_by_stride_run_from_nothing_to_everything():
    rise = Steps(stride=224 * 8).counts(224 * 224)
    assert len(rise) == 29 and rise[0] == 0 and rise[-1] == 224 * 224 and rise[1] == 1792
    assert Steps(stride=5).counts(16) == [0, 5, 10, 15, 16]       # RISE's ceil, last capped
    assert Steps(stride=4).positions(16) == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError):
        Steps()
    with pytest.raises(ValueError):
        Steps(fractions=(0.5,), stride=3)


# ---------------------------------------------------------------------------- substrates

def test_gkern_is_rises_kernel():
    k = gkern(11, 5)
    assert k.dtype == np.float32 and k.shape == (11, 11)
    assert round(float(k[5, 5]), 5) == 0.00883 and round(float(k[0, 0]), 5) == 0.00774
    assert abs(float(k.sum()) - 1.0) < 1e-6 and np.array_equal(k, k.T)
    assert np.array_equal(k, k[::-1]) and k[5, 5] == k.max() and k[0, 0] == k.min()


def test_blur_is_per_channel_with_zero_padding():
    k = gkern(11, 5).astype(np.float64)
    images = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    images[0, 1] = 1.0                                    # channel 1 all ones, others zero
    out = Blur().image(images)
    assert out.shape == images.shape and (out[0, [0, 2]] == 0).all()
    assert abs(float(out[0, 1, 8, 8]) - k.sum()) < 1e-12          # inside: the whole kernel
    assert abs(float(out[0, 1, 0, 0]) - k[5:, 5:].sum()) < 1e-12  # corner: a quarter + zeros


def test_constant_substrates():
    images = torch.zeros(2, 3, 4, 4)
    assert torch.equal(NormalizedConstant(0.0).image(images), torch.zeros(1, 3, 1, 1))
    black = UnitConstant(MEAN, STD, 0.0).image(images)[0, :, 0, 0]
    expected = (torch.zeros(3) - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.equal(black, expected)                          # float32, as normalize() does


# ------------------------------------------------------------------------------------ AUC

def test_rise_auc_hand_worked_and_as_a_trapezoid():
    assert rise_auc([1.0, 1.0, 1.0]) == 1.0
    assert rise_auc([0.0, 1.0]) == 0.5
    assert rise_auc([1.0, 0.5, 0.0, 0.0, 0.0]) == pytest.approx((1.5 - 0.5) / 4)
    a = np.random.default_rng(0).random(29)
    assert rise_auc(a) == pytest.approx(sklearn_auc(np.linspace(0, 1, 29), a), abs=1e-15)


def test_chefer_auc_conventions_against_sklearn():
    steps = [i / 10 for i in range(1, 10)]
    curve = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    x = [0.0] + steps + [1.0]
    y = [0.9] + curve + [0.0]
    assert chefer_auc(curve, steps, 0.9) == pytest.approx(100 * sklearn_auc(x, y), abs=1e-12)
    assert chefer_auc(curve, steps, 0.9, "trapezoid_0.1_0.9") == pytest.approx(
        100 * sklearn_auc(steps, curve), abs=1e-12)
    # by hand: a constant accuracy 1 over 0.1..0.9 is 80; with the two end segments
    # 0.1 * (1 + 1) / 2 + 80 / 100 + 0.1 * (1 + 0) / 2 = 0.95
    assert chefer_auc([1.0] * 9, steps, 1.0, "trapezoid_0.1_0.9") == pytest.approx(80.0)
    assert chefer_auc([1.0] * 9, steps, 1.0) == pytest.approx(95.0)
    with pytest.raises(ValueError, match="convention"):
        chefer_auc(curve, steps, 0.9, "simpson")


# --------------------------------------------------------------------------------- engine

def test_deletion_of_a_4x4_image_by_hand():
    """All-ones 4x4 image, heatmap = pixel index, logits = (sum of channel 0, 0): deleting the
    k most relevant pixels (to 0) leaves s = 16 - k, p = sigmoid(s)."""
    weight = torch.zeros(2, 3, 4, 4)
    weight[0, 0] = 1.0
    model = PixelSum(weight)
    images = torch.ones(1, 3, 4, 4, dtype=torch.float64)
    heat = torch.arange(16.0).view(1, 4, 4)
    test = PerturbationTest("deletion", Steps(stride=4), most_relevant=True,
                            ranking=Ranking("sort"))
    out = perturbation_curves(model, [batch(images, heat, [0])], [test], batch_size=2)
    expected = 1 / (1 + np.exp(-(16.0 - np.array([0, 4, 8, 12, 16]))))
    np.testing.assert_allclose(out.curves["deletion"][0], expected, rtol=1e-15)
    # the weights only see channel 0 and the heatmap ranks by index: least-first is the same
    # here, and top-1 correctness is 1 until the last step (logit 0 vs 0: argmax 0)
    top1 = PerturbationTest("top1", Steps(stride=4), score="top1")
    out = perturbation_curves(model, [batch(images, heat, [0])], [top1], batch_size=2)
    assert out.curves["top1"][0].tolist() == [1.0] * 5 and out.clean_correct == [1]


def reference_curve(model, image, heatmap, label, test, num_classes):
    """One image at a time, written out: the step images, one forward pass each."""
    _, height, width = image.shape
    n = height * width
    flat = heatmap.reshape(-1).double().numpy()
    with torch.no_grad():
        clean = model(image[None])[0]
    cls = int(clean.argmax()) if test.target == "predicted" else label
    start = image if test.start is None else test.start.image(image[None])[0].expand_as(image)
    finish = image if test.finish is None else test.finish.image(image[None])[0].expand_as(image)
    order = np.argsort(-flat if test.most_relevant else flat, kind="stable")
    values = []
    for k in test.steps.counts(n):
        changed = np.zeros(n, bool)
        changed[order[:k]] = True
        mask = torch.from_numpy(changed).view(1, height, width)
        x = torch.where(mask, finish, start)
        with torch.no_grad():
            logits = model(x[None])[0]
        if test.score == "top1":
            values.append(float(int(logits.argmax()) == label))
        else:
            values.append(float(logits.softmax(0)[cls]))
    return np.array(values)


def test_engine_equals_a_one_image_loop_for_every_kind_of_setting():
    gen = torch.Generator().manual_seed(0)
    classes, size = 5, 6
    model = PixelSum(torch.randn(classes, 3, size, size, generator=gen) * 0.3)
    images = torch.randn(7, 3, size, size, generator=gen, dtype=torch.float64)
    heat = torch.rand(7, size, size, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (7,), generator=gen).tolist()
    tests = [
        PerturbationTest("pos", Steps(fractions=(0.1, 0.5, 0.9)), True, Ranking("sort"),
                         finish=UnitConstant(MEAN, STD), score="top1"),
        PerturbationTest("neg", Steps(fractions=(0.1, 0.5, 0.9)), False, Ranking("sort"),
                         finish=UnitConstant(MEAN, STD), score="top1"),
        PerturbationTest("del", Steps(stride=5), True, Ranking("sort"),
                         finish=NormalizedConstant(0.0), target="predicted"),
        PerturbationTest("ins", Steps(stride=5), True, Ranking("sort"), start=Blur(3, 1.0),
                         finish=None, target="predicted"),
        PerturbationTest("half", Steps(stride=9), False, Ranking("sort"),
                         finish=FunctionSubstrate("half", lambda x: x / 2)),
    ]
    batches = [batch(images[:3], heat[:3], labels[:3], 0),
               batch(images[3:], heat[3:], labels[3:], 3)]
    out = perturbation_curves(model, batches, tests, batch_size=4)
    for test in tests:
        expected = np.stack([reference_curve(model, images[i], heat[i], labels[i], test,
                                             classes) for i in range(7)])
        np.testing.assert_allclose(out.curves[test.name], expected, rtol=0, atol=1e-12,
                                   err_msg=test.name)
    with torch.no_grad():
        predicted = model(images).argmax(1).tolist()
    assert out.predictions == predicted
    assert out.clean_correct == [int(p == lab) for p, lab in zip(predicted, labels)]
    # forward passes per image: the clean image, 3 + 3 masked (pos, neg); del: 9 points (36
    # pixels, stride 5) less the clean and the constant image = 7; ins: 9 less the clean = 8
    # (the blurred image and 7 mixed); half: 5 points less the clean = 4 (3 mixed and the whole
    # substrate); + 1 constant image for the run
    assert out.forward_passes == 7 * (1 + 3 + 3 + 7 + 8 + 4) + 1


def test_engine_batching_does_not_change_the_curves():
    gen = torch.Generator().manual_seed(1)
    model = PixelSum(torch.randn(4, 3, 5, 5, generator=gen))
    images = torch.randn(5, 3, 5, 5, generator=gen, dtype=torch.float64)
    heat = torch.rand(5, 5, 5, generator=gen, dtype=torch.float64)
    tests = [PerturbationTest("d", Steps(stride=3), target="predicted"),
             PerturbationTest("i", Steps(stride=3), start=Blur(3, 1.0), finish=None,
                              target="predicted")]
    runs = [perturbation_curves(model, [batch(images, heat, [0] * 5)], tests, batch_size=b)
            for b in (1, 3, 100)]
    for run in runs[1:]:
        for name in ("d", "i"):
            np.testing.assert_allclose(run.curves[name], runs[0].curves[name], rtol=0,
                                       atol=1e-14)


def test_engine_refuses_what_it_cannot_do():
    model = PixelSum(torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="no test"):
        perturbation_curves(model, [], [])
    test = PerturbationTest("a", Steps(stride=1))
    with pytest.raises(ValueError, match="distinct"):
        perturbation_curves(model, [], [test, test])
    with pytest.raises(ValueError, match="predicted"):
        perturbation_curves(model, [], [PerturbationTest("p", Steps(stride=1),
                                                         target="predicted")],
                            clean_forward=False)
    with pytest.raises(ValueError):
        PerturbationTest("x", Steps(stride=1), start=None, finish=None)
    with pytest.raises(ValueError, match="score"):
        PerturbationTest("x", Steps(stride=1), score="logit")


# ------------------------------------------------------------------------ ABPC, a setting

def test_abpc_setting_equals_the_released_loop_in_float64(golden_model64):
    """ABPC through the engine (:func:`agcam.evaluation.abpc.abpc_tests`) against the released
    procedure written out with its own pieces: 22 single-image forward passes, ``topk(m + 1)``
    per step, removed pixels 0; float64, where only the procedure can differ."""
    from agcam.evaluation.abpc import NUM_STEPS, abpc_curves, perturb, pixel_counts, removal_mask
    from agcam.store import open_store
    from tests.helpers import GOLDEN
    with open_store(str(GOLDEN / "h5" / "ILSVRC_rollout.hdf5")) as store:
        batches = list(store.batches(4, (0.5,) * 3, (0.5,) * 3))
    for b in batches:
        b.images = b.images.double()
    curves = abpc_curves(golden_model64, batches, batch_size=9)
    row = 0
    for b in batches:
        for image, heatmap, label in zip(b.images, b.heatmaps, b.labels.tolist()):
            for curve, most in ((curves.morf, True), (curves.lerf, False)):
                expected = []
                for k in pixel_counts(224 * 224):
                    x = perturb(image[None], removal_mask(heatmap.reshape(1, -1), k, most))
                    with torch.no_grad():
                        expected.append(float(golden_model64(x).softmax(1)[0, label]))
                np.testing.assert_allclose(curve[row], expected, rtol=0, atol=1e-12)
            row += 1
    assert row == 6 and curves.lerf.shape == (6, NUM_STEPS)
    assert curves.forward_passes == 6 * 19 + 1


def test_merge_results_orders_by_index_and_skips_empty_parts():
    from agcam.evaluation.curves import merge_results
    model = PixelSum(torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(2)))
    images = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    heat = torch.rand(4, 2, 2, dtype=torch.float64)
    test = PerturbationTest("d", Steps(stride=2), target="predicted")
    whole = perturbation_curves(model, [batch(images, heat, [0, 1, 2, 0])], [test])
    odd = perturbation_curves(model, [batch(images[1::2], heat[1::2], [1, 0], 0)], [test])
    even = perturbation_curves(model, [batch(images[::2], heat[::2], [0, 2], 0)], [test])
    odd.indices, even.indices = [1, 3], [0, 2]
    empty = perturbation_curves(model, [], [test])
    merged = merge_results([empty, odd, even])
    assert merged.indices == [0, 1, 2, 3] and merged.labels == [0, 1, 2, 0]
    np.testing.assert_allclose(merged.curves["d"], whole.curves["d"], rtol=0, atol=1e-15)
    assert merged.counts == whole.counts and merged.predictions == whole.predictions
