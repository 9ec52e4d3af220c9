"""The page's engine (agcam.app.engine) and the ``agcam app`` command, without a browser.

The maps the page shows are ``get_explainer``'s, computed independently here on a second copy of
the learnt model; images are refused from their header; a model is loaded once however many
requests ask for it; the threshold redraws from the page's maps; the class click computes only
the maps it has not cached. The page in a real browser: tests/test_app_browser.py.
"""
from __future__ import annotations

import argparse
import json
import os
import threading

import numpy as np
import pytest
import torch

from agcam.app.engine import (
    AppError,
    Engine,
    ModelSpec,
    list_samples,
    read_image,
)
from agcam.figures.heatmaps import explain_heatmaps, top_k
from agcam.registry import get_explainer
from models.vit import build_transform, create_model, load_image
from tests.helpers.app import avg_pool_checkpoint, header_only_png

PAIR = os.path.join("samples", "synthetic", "pairs", "Data", "CLS-LOC", "val",
                    "synth_pair_001.JPEG")


@pytest.fixture(scope="module")
def engine():
    return Engine()


@pytest.fixture(scope="module")
def reference():
    """An independent copy of the learnt model, its transform and the pair image's input."""
    model = create_model("vit_agcam_learnt")
    images = torch.stack([build_transform(model)(load_image(PAIR))])
    return model, images


def test_images_refused_in_one_line(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all\n")
    huge = header_only_png(tmp_path / "huge.png", 20000, 20000)
    cases = [(str(empty), "empty.png: empty file"), (str(text), "notes.jpg: not an image"),
             (huge, "huge.png: 400 MP is over the page's limit of 40 MP; refused before "
                    "decoding"),
             (str(tmp_path / "gone.png"), "gone.png: cannot read the file"),
             (None, "no image")]
    for path, message in cases:
        with pytest.raises(AppError) as caught:
            read_image(path)
        assert str(caught.value).startswith(message), str(caught.value)
        assert "\n" not in str(caught.value)
    # under PIL's decompression-bomb limit, the page's own limit speaks, from the header
    wide = header_only_png(tmp_path / "wide.png", 20000, 4000)
    with pytest.raises(AppError, match=r"^wide.png: 20000 x 4000 pixels \(80 MP\) is over the "
                                       "page's limit of 40 MP; refused before decoding$"):
        read_image(wide)
    # a raised page limit leaves PIL's, still before decoding
    with pytest.raises(AppError, match="refused by PIL's decompression-bomb limit"):
        read_image(huge, max_pixels=10**9)
    # under both limits the decoder runs, and finds no pixels in the header-only file
    with pytest.raises(AppError, match="^wide.png: cannot decode the image"):
        read_image(wide, max_pixels=10**9)
    assert read_image(PAIR).mode == "RGB"


def test_samples_listed():
    samples = dict(list_samples())
    assert "cat_and_coffee.jpg" in samples
    assert os.path.join("synthetic", "pairs", "Data", "CLS-LOC", "val", "synth_pair_001.JPEG") \
        in samples
    assert all(os.path.isfile(path) for path in samples.values())
    assert list_samples("/nonexistent") == []


def test_maps_are_get_explainers_and_cached(engine, reference):
    model, images = reference
    explanation = engine.explain(PAIR, ModelSpec(), ["agcam", "rollout"])
    top = top_k(model, images, 5)[0]
    assert explanation.top == top and explanation.target == top[0][0]
    for method in ("agcam", "rollout"):
        explainer = get_explainer(method, model)
        _, maps = explainer.explain(images, explanation.target)
        np.testing.assert_array_equal(explanation.raw[method], maps[0].numpy())
        _, heatmaps = explain_heatmaps(explainer, images, explanation.target)
        np.testing.assert_array_equal(explanation.heatmaps[method], heatmaps[0])
    # the raw maps travel as JSON exactly
    sent = json.loads(json.dumps(explanation.as_json()))
    np.testing.assert_array_equal(
        np.asarray(sent["maps"]["agcam"]["values"], np.float32).reshape(
            sent["maps"]["agcam"]["shape"]), explanation.raw["agcam"])

    computed = engine.counts["maps_computed"]
    first = engine.render(explanation, 0.5)
    other = engine.render(explanation, 0.2)          # the slider: boxes redrawn, no map
    assert engine.counts["maps_computed"] == computed
    assert len(first) == 2 and first[0][0].shape == (400, 1200, 3)
    assert not np.array_equal(first[0][0], other[0][0])

    second = top[1][0]
    clicked = engine.explain(PAIR, ModelSpec(), ["agcam", "rollout"], target=second)
    # AGCAM is class-specific (one new map); Rollout has one map whatever the class (cached)
    assert engine.counts["maps_computed"] == computed + 1
    _, maps = get_explainer("agcam", model).explain(images, second)
    np.testing.assert_array_equal(clicked.raw["agcam"], maps[0].numpy())
    assert not np.array_equal(clicked.raw["agcam"], explanation.raw["agcam"])
    np.testing.assert_array_equal(clicked.raw["rollout"], explanation.raw["rollout"])
    again = engine.explain(PAIR, ModelSpec(), ["agcam"], target=second)
    assert engine.counts["maps_computed"] == computed + 1
    np.testing.assert_array_equal(again.raw["agcam"], clicked.raw["agcam"])


def test_one_model_copy_under_concurrent_requests():
    engine = Engine()
    spec = ModelSpec("vit_agcam_learnt")
    models, errors = [], []

    def ask():
        try:
            models.append(engine.model(spec))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert engine.counts["model_loads"] == 1
    assert len({id(loaded.model) for loaded in models}) == 1
    assert engine.loaded_models() == [spec.key]


def test_bad_models_and_methods(engine, tmp_path):
    with pytest.raises(AppError, match="^model no_such_vit_model: unknown timm model"):
        engine.explain(PAIR, ModelSpec("no_such_vit_model"), ["agcam"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ this is not json")
    with pytest.raises(AppError, match=f"^checkpoint {broken}"):
        engine.explain(PAIR, ModelSpec(checkpoint=str(broken)), ["agcam"])
    with pytest.raises(AppError, match="no such file or folder"):
        engine.explain(PAIR, ModelSpec(checkpoint=str(tmp_path / "missing")), ["agcam"])
    with pytest.raises(AppError, match="unknown method nope"):
        engine.explain(PAIR, ModelSpec(), ["agcam", "nope"])
    with pytest.raises(AppError, match="no method ticked"):
        engine.explain(PAIR, ModelSpec(), [])
    path = avg_pool_checkpoint(tmp_path / "avg.pth")
    explanation = engine.explain(PAIR, ModelSpec("unused", path), ["agcam", "lrp"])
    assert list(explanation.heatmaps) == ["agcam"]
    assert explanation.refused == {"lrp": f"lrp refuses checkpoint {path}: lrp needs class-token "
                                          "pooling (global_pool='token', no attn_pool)"}


def test_command_line():
    from agcam.cli.app import add_arguments
    args = add_arguments(argparse.ArgumentParser()).parse_args([])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, "vit_agcam_learnt")
    from agcam.__main__ import entry
    # bad flags and an unknown model: one line, exit code 2, before anything is served
    assert entry(["app", "--port", "0"]) == 2
    assert entry(["app", "--model", "no_such_vit_model", "--port", "7999"]) == 2


def test_clip_prompts_explained_as_classes(engine):
    """Typed prompts make the zero-shot classifier of an image-text model (class i = prompt i);
    the page's maps are get_explainer's on agcam.clip's classifier."""
    from agcam.app.engine import parse_prompts, zero_shot_available
    if not zero_shot_available():
        pytest.skip("agcam.clip / models.clip are not in this version")
    from agcam.clip import zero_shot
    from models.clip import LEARNT_CLIP_WEIGHTS, create_clip
    if not os.path.isfile(LEARNT_CLIP_WEIGHTS):
        pytest.skip(f"the learnt CLIP's weights are not here ({LEARNT_CLIP_WEIGHTS})")
    prompts = parse_prompts("a red striped shape, a yellow plain shape, a blue shape")
    assert prompts == ("a red striped shape", "a yellow plain shape", "a blue shape")
    assert parse_prompts("a cat, sitting\na dog\n\n") == ("a cat, sitting", "a dog")
    explanation = engine.explain(PAIR, ModelSpec("clip_agcam_learnt", prompts=prompts),
                                 ["agcam"], target=0)
    classifier = zero_shot(create_clip("clip_agcam_learnt"), list(prompts))
    images = torch.stack([build_transform(classifier)(load_image(PAIR))])
    assert explanation.top == top_k(classifier, images, 5)[0]
    _, maps = get_explainer("agcam", classifier).explain(images, 0)
    np.testing.assert_array_equal(explanation.raw["agcam"], maps[0].numpy())
    assert explanation.class_label(0) == "a red striped shape (0)"
    with pytest.raises(AppError, match="image-text model: type its prompts"):
        engine.explain(PAIR, ModelSpec("clip_agcam_learnt"), ["agcam"])
    with pytest.raises(AppError, match="^model vit_agcam_learnt: not an image-text model"):
        engine.explain(PAIR, ModelSpec("vit_agcam_learnt", prompts=("a",)), ["agcam"])
