"""``clip_agcam_learnt``: the small CLIP learnt here (committed weights; never trained in a test).

Its zero-shot accuracy on the committed held-out set (8 colour x texture classes, prompts
``agcam.datasets.captions.class_prompts``) and per attribute on fresh images is the one its
training log records, and maps follow the prompt: on two-object images whose objects differ in
colour, texture and shape (``agcam.study.clip.behaviour_images``), the two objects' words of one
kind light their own objects where rollout (one map for every prompt) cannot, and "red",
"striped" and "circle" each light the object they name, with the method the behaviour table of
docs/clip.md finds for it: AGCAM follows colour words, LeGrad's CLIP recipe texture words and
GAE shape words (AGCAM's maps of texture and shape words do not prefer their object; the table
says so).
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from agcam.study.clip import behaviour_images
from models.clip import LEARNT_CLIP_LOG, LEARNT_CLIP_WEIGHTS, create_clip


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


def test_fresh_zero_shot_accuracy_per_attribute_is_the_logged_one():
    """Colour, texture and shape, each as its own zero-shot task on 1,000 fresh one-object
    images: the log's numbers (to 5 images in 1,000: an image at a tie may flip on another
    CPU), each far above chance."""
    from agcam.train.clip import fresh_zero_shot
    log = json.loads(open(LEARNT_CLIP_LOG).read())
    measured = fresh_zero_shot(clip(), log["fresh_images"])
    for kind, chance in (("colour", 1 / 4), ("texture", 1 / 2), ("shape", 1 / 4)):
        assert abs(measured[kind] - log["fresh_zero_shot_accuracy"][kind]) <= 0.005, kind
        assert measured[kind] > chance + 0.2, (kind, measured[kind])


#: per prompt kind, a method whose two maps prefer their own object on most images, and the
#: images (of 16) where they must (measured on the committed weights, docs/clip.md: AGCAM 14 and
#: GAE 16 for colour, LeGrad's CLIP recipe 9 for texture, GAE 10 for shape); rollout, whose map
#: is the same for every prompt, never can
BOTH_PREFERRED = {("colour", "agcam"): 12, ("colour", "gae"): 14,
                  ("texture", "legrad_clip"): 7, ("shape", "gae"): 8}
#: the issue's three words, a method each, and the maps (of 16) that must prefer the word's
#: object (measured: 8 of 8 of every image with a red object, 15 of 16, 8 of 8)
WORD_PREFERRED = {"red": ("agcam", 8, 7), "striped": ("legrad_clip", 16, 13),
                  "circle": ("gae", 8, 7)}


@functools.lru_cache(maxsize=None)
def kind_maps(method, kind):
    from agcam.study.clip import kind_heatmaps
    return kind_heatmaps(method, clip(), behaviour_images(4), kind)


@pytest.mark.parametrize("kind, method", list(BOTH_PREFERRED))
def test_two_prompts_of_one_kind_light_their_own_objects(kind, method):
    """On each two-object image the two objects' words of one kind ("red" and "blue", "plain"
    and "striped", "square" and "circle") are explained one by one: on most images both maps
    have the higher mean inside their own object's box, which a map that ignores the prompt
    (rollout) never has."""
    from agcam.study.behaviour import own_object_preferred
    maps, boxes, _ = kind_maps(method, kind)
    preferred = own_object_preferred(maps, boxes)
    print(kind, method, preferred)
    assert preferred >= BOTH_PREFERRED[kind, method], preferred
    floor, floor_boxes, _ = kind_maps("rollout", kind)
    assert all(np.array_equal(first, second) for first, second in floor)
    assert own_object_preferred(floor, floor_boxes) == 0


@pytest.mark.parametrize("word", list(WORD_PREFERRED))
def test_red_striped_and_circle_light_their_object(word):
    """"red", "striped" and "circle" each light the object they name (the other object differs
    in colour, texture and shape), with the method that the behaviour table finds for it."""
    from agcam.datasets.captions import KIND_NAMES
    from agcam.study.clip import EXAMPLE_WORDS, word_preferred
    method, total, minimum = WORD_PREFERRED[word]
    kind = KIND_NAMES[EXAMPLE_WORDS.index(word)]
    hits, count = word_preferred(*kind_maps(method, kind), word)
    print(word, method, hits, count)
    assert count == total and hits >= minimum, (hits, count)
