"""``clip_agcam_learnt``: the small CLIP learnt here (committed weights; never trained in a test).

Its zero-shot accuracy on the committed held-out set (8 colour x texture classes, prompts
``agcam.datasets.captions.class_prompts``) is the one its training log records, and maps follow
the prompt: on two-object images whose objects differ in colour, texture and shape, the maps of
the two objects' colour words ("red", "blue") peak on their own object, where a class-agnostic map
(rollout) cannot tell the prompts apart. The committed model learnt colour only (texture and shape
zero-shot at chance, docs/clip.md), so its texture and shape prompts are measured there, not
asserted here.
"""
from __future__ import annotations

import functools
import json

import pytest
import torch

from agcam import get_explainer, zero_shot
from agcam.study.clip import PAIR_SPECS, behaviour_images
from models.clip import LEARNT_CLIP_LOG, LEARNT_CLIP_WEIGHTS, create_clip

#: maps (of 8 per prompt: 2 images per pair spec) that must peak on the prompt's object
MIN_HITS = 5


@functools.lru_cache(maxsize=None)
def clip():
    return create_clip("clip_agcam_learnt")


def test_committed_weights_are_small_and_load_offline():
    import os
    assert os.path.getsize(LEARNT_CLIP_WEIGHTS) <= 5 * 1024 * 1024
    model = clip()
    assert model.family == "learnt" and not model.training
    assert model.visual.patch_embed.grid_size == (7, 7)


def test_heldout_zero_shot_accuracy_is_the_logged_one():
    from agcam.train.clip import heldout_zero_shot
    log = json.loads(open(LEARNT_CLIP_LOG).read())
    accuracy, count = heldout_zero_shot(clip())
    assert count == 160 and accuracy == log["heldout_zero_shot_accuracy"]
    assert accuracy > 2 / 8          # chance is 1/8


def peak_object(heatmap, item, scale):
    """Index of the object whose box holds the heatmap's maximum, or None."""
    y, x = divmod(int(heatmap.argmax()), heatmap.shape[1])
    for index, obj in enumerate(item.objects):
        x0, y0, x1, y1 = (v * scale for v in obj.box)
        if x0 <= x <= x1 and y0 <= y <= y1:
            return index
    return None


@pytest.mark.parametrize("method", ["agcam"])
def test_colour_prompts_light_different_objects(method):
    from agcam.maps import to_heatmap
    from agcam.study.clip import _tensors
    items = behaviour_images(2)
    counts = {"first": 0, "second": 0, "rollout_same": 0}
    for spec in PAIR_SPECS:
        chosen = [i for i in items if i.objects[0].colour == spec[0][0]
                  and i.objects[1].colour == spec[1][0]]
        classifier = zero_shot(clip(), [spec[0][0], spec[1][0]])   # the two objects' colours
        images = _tensors(classifier, chosen)
        size = tuple(images.shape[-2:])
        scale = size[0] / chosen[0].pixels.shape[0]
        maps = {t: to_heatmap(get_explainer(method, classifier).explain(images, t)[1].float(),
                              size).numpy() for t in (0, 1)}
        for k, item in enumerate(chosen):
            counts["first"] += peak_object(maps[0][k], item, scale) == 0
            counts["second"] += peak_object(maps[1][k], item, scale) == 1
        with torch.no_grad():
            _, rollout = get_explainer("rollout", classifier).explain(images)
        _, again = get_explainer("rollout", classifier).explain(images, 1)
        counts["rollout_same"] += int(torch.equal(rollout, again))
    print(method, counts)
    assert counts["first"] >= MIN_HITS and counts["second"] >= MIN_HITS, counts
    assert counts["rollout_same"] == len(PAIR_SPECS)   # the floor: one map for every prompt
