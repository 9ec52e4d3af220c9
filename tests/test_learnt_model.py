"""The learnt model (``vit_agcam_learnt``) and what the methods do on it.

Equality to the released code cannot show that a method finds an object; a model that has learnt
something, with boxes known by construction, can. Fast: the localization and ABPC checks use a
handful of held-out images (two per class); the full table is ``agcam study``
(docs/learnt.md).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from agcam.datasets.ilsvrc import find_samples
from agcam.datasets.synthetic import CLASSES, HELDOUT_SEED, PAIR_SCALE, SCALE, WNIDS, sample_image
from agcam.maps import to_heatmap
from agcam.registry import get_explainer, method_class, ordered_methods
from agcam.study.behaviour import (
    abpc_score,
    box_ious,
    centred_box,
    explain_all,
    fixed_box_ious,
    own_object_preferred,
    pair_heatmaps,
    peak_hits,
)
from agcam.study.heldout import HELDOUT_ROOT, PAIRS_ROOT, load_heldout
from models.learnt import LEARNT_LOG, LEARNT_MODEL, LEARNT_WEIGHTS
from models.vit import create_model, model_geometry

#: images per class in the fast checks
PER_CLASS = 2
#: the claims of the issue, as numbers: the held-out accuracy the model must reach, and how far
#: AGCAM's mean IoU must lie above the centred box's ("well above": a tenth of the IoU scale)
MIN_ACCURACY = 0.95
IOU_MARGIN = 0.1
#: "most two-object images": the share on which both of AGCAM's class maps prefer their object
PAIR_MAJORITY = 0.75


@pytest.fixture(scope="module")
def model():
    # No --checkpoint: the registered name alone loads the committed weights (timm's
    # pretrained_cfg "file"), offline.
    return create_model(LEARNT_MODEL)


@pytest.fixture(scope="module")
def heldout(model):
    return load_heldout(model, HELDOUT_ROOT)


@pytest.fixture(scope="module")
def handful(model, heldout):
    """The first ``PER_CLASS`` images of every class, with the model's predictions."""
    rows = [i for label in range(len(CLASSES))
            for i in np.flatnonzero(heldout.labels.numpy() == label)[:PER_CLASS]]
    part = type(heldout)([heldout.samples[i] for i in rows], heldout.images[rows],
                         heldout.labels[rows], [heldout.boxes[i] for i in rows],
                         [heldout.box_classes[i] for i in rows])
    with torch.no_grad():
        predictions = model(part.images).argmax(1)
    return part, (predictions == part.labels).numpy()


def test_registered_model_carries_its_preprocessing(model):
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 112, 112)
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5) and tuple(cfg["std"]) == (0.5, 0.5, 0.5)
    assert os.path.samefile(cfg["file"], LEARNT_WEIGHTS)
    geometry = model_geometry(model)
    assert geometry.grid == (7, 7) and geometry.num_prefix_tokens == 1
    assert geometry.input_size == (112, 112)
    assert model.num_classes == len(CLASSES) == len(WNIDS)
    assert tuple(cfg["label_names"]) == CLASSES
    assert os.path.getsize(LEARNT_WEIGHTS) <= 5 * 2 ** 20


def test_checkpoint_flag_loads_the_same_weights(model):
    other = create_model(LEARNT_MODEL, checkpoint=LEARNT_WEIGHTS)
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name


def test_reader_labels_are_the_heads_classes(heldout):
    # The ILSVRC reader maps folder i (the i-th sorted ImageNet wnid) to label i == output i.
    for sample in heldout.samples:
        assert WNIDS[sample.label] == sample.wnid
    counts = np.bincount(heldout.labels.numpy(), minlength=len(CLASSES))
    assert (counts == counts[0]).all() and counts[0] > 0


def test_synthetic_data_set_of_the_scripts(tmp_path):
    from agcam.datasets import DATASETS, DataError, list_split
    spec = DATASETS["synthetic"]
    listing = list_split(spec, HELDOUT_ROOT)
    assert spec.num_classes == len(CLASSES) and listing.class_names == CLASSES
    assert len(listing.samples) == 160 and listing.dataset == "synthetic"
    # an ImageNet class outside the eight is refused, naming the file
    folder = tmp_path / "Data" / "CLS-LOC" / "val" / "n01530575"
    folder.mkdir(parents=True)
    sample = listing.samples[0]
    (folder / "x.JPEG").write_bytes(open(sample.path, "rb").read())
    (tmp_path / "Annotations" / "CLS-LOC" / "val").mkdir(parents=True)
    xml = os.path.join(HELDOUT_ROOT, "Annotations", "CLS-LOC", "val", sample.name + ".xml")
    (tmp_path / "Annotations" / "CLS-LOC" / "val" / "x.xml").write_text(open(xml).read())
    with pytest.raises(DataError, match="n01530575"):
        list_split(spec, str(tmp_path))


def test_committed_set_is_what_the_generator_draws():
    # Boxes of the first image of every class and of two pairs, regenerated, equal the XML files
    # (JPEG bytes may differ between Pillow versions; the boxes may not).
    samples = {s.name: s for s in find_samples(HELDOUT_ROOT)}
    per_class = len(samples) // len(CLASSES)
    for label in range(len(CLASSES)):
        index = label * per_class
        item = sample_image(HELDOUT_SEED, index, label=label)
        sample = samples[f"synth_{index:05d}"]
        assert sample.label == label
        assert [tuple(b) for b in sample.boxes] == [o.box for o in item.objects]
    pairs = find_samples(PAIRS_ROOT)
    assert all(len(s.boxes) == 2 for s in pairs)


def test_generator_is_seeded_and_boxes_are_tight():
    a, b = sample_image(5, 3, pair=True), sample_image(5, 3, pair=True)
    assert np.array_equal(a.pixels, b.pixels) and a.objects == b.objects
    assert not np.array_equal(a.pixels, sample_image(5, 4, pair=True).pixels)
    (x0, y0, x1, y1), (u0, v0, u1, v1) = (o.box for o in a.objects)
    assert a.objects[0].label != a.objects[1].label
    assert x1 < u0 or u1 < x0 or y1 < v0 or v1 < y0          # the two objects do not overlap
    size = a.pixels.shape[0]
    for item, scale in ((sample_image(1, 0), SCALE), (a, PAIR_SCALE)):
        for obj in item.objects:
            x0, y0, x1, y1 = obj.box
            assert 0 <= x0 < x1 < size and 0 <= y0 < y1 < size
            # a box is the object's drawn extent: within the scale range (and the aspect jitter)
            assert scale[0] * size * 0.85 <= max(x1 - x0 + 1, y1 - y0 + 1) <= scale[1] * size * 1.15


def test_heldout_accuracy(model, heldout):
    with torch.no_grad():
        logits = model(heldout.images)
    # No prediction is near a tie (float32 rounding moves these logits by ~1e-6), so the
    # accuracy is the same on every CPU and must equal the training log's to the image.
    top = logits.topk(2, dim=1).values
    assert float((top[:, 0] - top[:, 1]).min()) > 1e-3
    correct = int((logits.argmax(1) == heldout.labels).sum())
    accuracy = correct / len(heldout.samples)
    assert accuracy >= MIN_ACCURACY
    with open(LEARNT_LOG) as handle:
        log = json.load(handle)
    assert log["heldout_accuracy"] == accuracy      # the log is of the committed file


def test_agcam_localizes_better_than_centred_box_and_random_map(model, handful):
    data, correct = handful
    assert correct.sum() >= len(correct) - 2      # (the accuracy is tested on the full set)
    size = model_geometry(model).input_size
    boxes = [b for b, ok in zip(data.boxes, correct) if ok]
    _, maps = explain_all(get_explainer("agcam", model), data.images)
    agcam_iou = box_ious(to_heatmap(maps[correct], size).numpy(), boxes).mean()
    centre_iou = fixed_box_ious(centred_box(boxes, size), boxes, size).mean()
    _, noise = get_explainer("random", model).explain(data.images)
    random_iou = box_ious(to_heatmap(noise[correct], size).numpy(), boxes).mean()
    assert agcam_iou >= centre_iou + IOU_MARGIN, (agcam_iou, centre_iou)
    assert agcam_iou >= random_iou + IOU_MARGIN, (agcam_iou, random_iou)


@pytest.fixture(scope="module")
def random_abpc(model, handful):
    data, _ = handful
    _, noise = get_explainer("random", model).explain(data.images)
    return abpc_score(model, data, noise)


#: Methods measured below a random map on this model: Grad-CAM on the last block's norm1 tokens
#: (pytorch-grad-cam's ViT recipe) and Grad-ECLIP (made for CLIP's image-text score) remove,
#: most relevant first, pixels the class does not need
#: (agcam study, docs/learnt.md). Strict: should it pass, this line must go.
BELOW_RANDOM = {"gradcam_tokens": "measured: ABPC below that of a random map on vit_agcam_learnt",
                "grad_eclip": "measured: ABPC below that of a random map on these 16 images "
                              "(-0.135 against 0.053; on all 160, docs/learnt.md: 0.045 "
                              "against 0.000)"}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=BELOW_RANDOM[n]))
    if n in BELOW_RANDOM else n for n in ordered_methods()
    if not getattr(method_class(n), "floor", False)])
def test_method_has_abpc_above_a_random_map(model, handful, random_abpc, name):
    data, _ = handful
    _, maps = explain_all(get_explainer(name, model), data.images, data.labels)
    abpc = abpc_score(model, data, maps)
    print(f"{name}: ABPC {abpc:.4f}, random map {random_abpc:.4f}")
    assert abpc > random_abpc, (name, abpc, random_abpc)


def test_two_objects_give_class_specific_agcam_maps_that_peak_on_each_object(model):
    pairs = load_heldout(model, PAIRS_ROOT)
    heatmaps = pair_heatmaps(get_explainer("agcam", model), pairs)
    hits, total = peak_hits(heatmaps, pairs.boxes)
    assert total == 2 * len(pairs.samples)
    # A map that ignores the class peaks in the same place for both classes of an image, so at
    # most one of its two maps can peak inside its own box (the boxes do not overlap).
    assert hits > total // 2, (hits, total)
    # Both maps of an image prefer their own object (a class-agnostic map never does): on most
    # images (the claim; the table gives the count).
    preferred = own_object_preferred(heatmaps, pairs.boxes)
    assert preferred >= PAIR_MAJORITY * len(pairs.samples), (preferred, len(pairs.samples))


def test_training_script_runs_and_writes_loadable_weights(tmp_path, monkeypatch):
    from agcam.cli import train_learnt as learnt
    out = tmp_path / "w.safetensors"
    monkeypatch.setattr(sys, "argv", ["learnt"])
    args = learnt.get_args_parser().parse_args(
        ["--steps", "2", "--batch_size", "4", "--workers", "0", "--fresh_images", "4",
         "--log_every", "1", "--out", str(out), "--threads", str(torch.get_num_threads())])
    assert learnt.main(args) == 0
    log = json.loads((tmp_path / "w.json").read_text())
    assert log["images_seen"] == 8 and log["heldout_images"] == 160
    assert 0.0 <= log["heldout_accuracy"] <= 1.0
    first = create_model(LEARNT_MODEL, checkpoint=str(out)).state_dict()
    # seeded: the same arguments train the same weights
    assert learnt.main(args) == 0
    again = create_model(LEARNT_MODEL, checkpoint=str(out)).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_figure_command_writes_small_pngs(tmp_path):
    from agcam.study.figures import DEFAULT_IMAGES, FIGURES, SIDECAR, read_sidecar, render
    paths = render(str(tmp_path), images=DEFAULT_IMAGES[:1], methods=["agcam", "rollout"],
                   log=lambda line: None)
    assert [os.path.basename(p) for p in paths] == list(FIGURES)
    for path in paths:
        assert 0 < os.path.getsize(path) <= 300 * 1024
    shown = read_sidecar(str(tmp_path))["figures"]
    assert sorted(shown) == sorted(FIGURES) and (tmp_path / SIDECAR).exists()
    assert shown["learnt_methods.png"]["methods"] == ["agcam", "rollout"]
    assert shown["learnt_agcam_pairs.png"]["methods"] == ["agcam"]
