"""Image-text models (models/clip.py) and the zero-shot head (agcam/zero_shot.py).

Per family (transformers ``CLIPModel``, open_clip, the learnt CLIP), on tiny random models
(tests/fixtures/clip/make_tiny_clip.py): the converted image tower's float64 embeddings equal the
library's own, and the zero-shot classifier's float64 logits equal the library's
``logits_per_image`` (relative error ``max|a - b| / max|b|`` at most 1e-12). Every method runs
on the classifier through the registry (``get_explainer(name, zero_shot(...))``).
"""
from __future__ import annotations

import functools
import time

import pytest
import torch

from agcam.clip import CLIP_TEMPLATES, load_prompts, prompt_embeddings, zero_shot
from agcam.errors import UsageError
from models.clip import (
    ClipError,
    ImageTextModel,
    ZeroShotHead,
    create_clip,
    from_hf_clip,
    from_open_clip,
)
from tests.fixtures.clip.make_tiny_clip import tiny_hf_clip, tiny_open_clip, tiny_word_clip
from tests.helpers import relative_error

EXACT = 1e-12
PROMPTS = ["a photo of a cat", "a red dog", "striped"]


def images64(size=32, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def hf_pair(directory: str):
    """(the transformers model in float64, ours read from its folder in float64)."""
    hf, _ = tiny_hf_clip(directory)
    return hf.double().eval(), create_clip(checkpoint=directory, dtype=torch.float64)


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    return hf_pair(str(tmp_path_factory.mktemp("tiny_hf_clip")))


@functools.lru_cache(maxsize=None)
def open_clip_pair(quick_gelu: bool, layer_scale: bool):
    model, tokenizer = tiny_open_clip(quick_gelu=quick_gelu, layer_scale=layer_scale)
    model = model.double().eval()
    return model, tokenizer, from_open_clip(model, tokenizer)


# -- A: the image tower converts exactly ----------------------------------------------------------
def test_hf_clip_image_and_text_embeddings_float64(hf_models):
    hf, ours = hf_models
    assert isinstance(ours, ImageTextModel) and ours.family == "hf"
    x = images64()
    tokens = ours.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected_image = hf.get_image_features(pixel_values=x)
        expected_text = hf.get_text_features(**tokens)
        expected_image = getattr(expected_image, "pooler_output", expected_image)
        expected_text = getattr(expected_text, "pooler_output", expected_text)
        image, text = ours.encode_image(x), ours.encode_text(PROMPTS)
    assert image.dtype == torch.float64
    assert relative_error(image, expected_image) <= EXACT
    assert relative_error(text, expected_text) <= EXACT


def test_hf_clip_zero_shot_logits_equal_logits_per_image(hf_models):
    hf, ours = hf_models
    x = images64()
    tokens = ours.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    classifier = zero_shot(ours, PROMPTS)
    with torch.no_grad():
        expected = hf(pixel_values=x, **tokens).logits_per_image
        logits = classifier(x)
    assert logits.shape == (3, len(PROMPTS)) and logits.dtype == torch.float64
    assert relative_error(logits, expected) <= EXACT
    assert classifier.label_names == PROMPTS and classifier.num_classes == len(PROMPTS)
    # a transformers CLIPModel passed directly (its tokenizer given) is the same classifier
    direct = zero_shot(from_hf_clip(hf, ours.text.tokenizer), PROMPTS)
    with torch.no_grad():
        assert torch.equal(direct(x), logits)


@pytest.mark.parametrize("quick_gelu,layer_scale", [(False, False), (True, True)])
def test_open_clip_image_embeddings_and_logits_float64(quick_gelu, layer_scale):
    model, tokenizer, ours = open_clip_pair(quick_gelu, layer_scale)
    x = images64()
    with torch.no_grad():
        image_features, text_features, scale = model(x, tokenizer(PROMPTS))
        expected_image = model.encode_image(x)
        expected_logits = scale * image_features @ text_features.T
        image = ours.encode_image(x)
        logits = zero_shot(ours, PROMPTS)(x)
    assert relative_error(image, expected_image) <= EXACT
    assert relative_error(logits, expected_logits) <= EXACT
    assert ours.visual.blocks[0].mlp.act.__class__.__name__ == (
        "QuickGELU" if quick_gelu else "GELU")


def test_open_clip_folder_loads_by_checkpoint(tmp_path):
    import json

    from safetensors.torch import save_file
    model, tokenizer, expected = open_clip_pair(False, False)
    cfg = {"model_cfg": {"embed_dim": 16,
                         "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32,
                                        "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
                         "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32,
                                      "heads": 2, "layers": 1}}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    ours = create_clip(checkpoint=str(tmp_path), dtype=torch.float64)
    assert ours.family == "open_clip"
    x = images64()
    with torch.no_grad():
        assert relative_error(zero_shot(ours, PROMPTS)(x), zero_shot(expected, PROMPTS)(x)) \
            <= 1e-6    # the folder holds the float32 weights


def test_word_clip_zero_shot_equals_its_own_logits():
    clip = tiny_word_clip().double()
    x = images64(batch=2)
    with torch.no_grad():
        expected = clip(x, PROMPTS)
        logits = zero_shot(clip, PROMPTS)(x)
    assert relative_error(logits, expected) <= EXACT


def test_templates_average_normalised_embeddings(hf_models):
    _, ours = hf_models
    import torch.nn.functional as F
    templates = CLIP_TEMPLATES[:3]
    got = prompt_embeddings(ours, ["cat", "dog"], templates)
    with torch.no_grad():
        want = torch.stack([F.normalize(F.normalize(ours.encode_text(
            [t.format(p) for t in templates]), dim=-1).mean(0), dim=0) for p in ["cat", "dog"]])
    assert torch.allclose(got, want, rtol=0, atol=1e-15)
    x = images64()
    with torch.no_grad():
        logits = zero_shot(ours, ["cat", "dog"], templates)(x)
        image = F.normalize(ours.encode_image(x), dim=-1)
    assert relative_error(logits, ours.logit_scale * image @ want.T) <= EXACT


# -- B: every method on the zero-shot head, no special case ---------------------------------------
def test_a_prompt_is_explained_as_a_class():
    """The issue's line, and class specificity; every registered method runs on this head in the
    contract test (tests/test_contract.py, variant ``zero_shot_tiny_clip``)."""
    from agcam import get_explainer
    classifier = zero_shot(tiny_word_clip(), ["red", "striped", "circle"])
    x = images64(batch=2).float()
    with torch.no_grad():
        logits = classifier(x)
    for name in ("agcam", "lrp", "gae"):
        explainer = get_explainer(name, classifier)
        predictions, maps = explainer.explain(x, target=1)
        assert torch.equal(predictions, logits.argmax(1)) and maps.shape == (2, 4, 4)
        _, other = explainer.explain(x, target=2)
        assert torch.isfinite(maps).all() and not torch.equal(other, maps), name
    assert all(p.grad is None for p in classifier.parameters())


def test_zero_shot_head_weight_is_the_composed_map():
    torch.manual_seed(0)
    projection = torch.nn.Linear(8, 4, bias=False).double()
    classifier = torch.randn(3, 4, dtype=torch.float64)
    head = ZeroShotHead(projection, classifier)
    x = torch.randn(5, 8, dtype=torch.float64)
    embedding = projection(x)
    expected = (embedding @ classifier.T) / embedding.norm(dim=1, keepdim=True)
    assert relative_error(head(x).detach(), expected.detach()) <= EXACT
    assert relative_error(head.weight.detach(), (classifier @ projection.weight).detach()) <= EXACT


# -- loading and prompts: one-line errors ---------------------------------------------------------
@pytest.fixture
def hub_offline(monkeypatch):
    import huggingface_hub.constants as hub
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    return hub


@pytest.mark.parametrize("name", ["hf:agcam-tests/no-such-clip", "open_clip:ViT-B-16/openai"])
def test_hub_names_fail_fast_offline(name, hub_offline, tmp_path, monkeypatch):
    from models.vit import WeightsUnavailableError
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_clip(name)
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert "\n" not in message and name in message and "--checkpoint" in message


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(ClipError, match="not an image-text model"):
        create_clip("vit_agcam_learnt")
    with pytest.raises(ClipError, match="neither config.json"):
        create_clip(checkpoint=str(tmp_path))
    with pytest.raises(ClipError, match="no such weights file"):
        create_clip("clip_agcam_learnt", checkpoint=str(tmp_path / "none.safetensors"))


def test_load_prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# the synthetic classes\na red plain shape\n\na red striped shape\n")
    assert load_prompts(str(path)) == ["a red plain shape", "a red striped shape"]
    assert load_prompts(str(path), num_classes=2) == ["a red plain shape", "a red striped shape"]
    with pytest.raises(UsageError, match=r"^--prompts .*prompts.txt: 2 prompts for a data set "
                                         r"of 8 classes"):
        load_prompts(str(path), num_classes=8)
    with pytest.raises(UsageError, match="no such file"):
        load_prompts(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(UsageError, match="holds no prompt"):
        load_prompts(str(tmp_path / "empty.txt"))


def test_attention_pooling_is_refused_by_class_token_methods_with_the_reason():
    """SigLIP's kind of tower (no class token, ``global_pool='map'``) as a zero-shot head: the
    methods that read the class token refuse it, naming why; the others run."""
    from timm.models.vision_transformer import VisionTransformer

    from agcam import get_explainer
    from agcam.clip import classifier_from_embeddings
    torch.manual_seed(0)
    tower = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                              class_token=False, global_pool="map", num_classes=16,
                              no_embed_class=True).eval()
    tower.head = torch.nn.Linear(32, 16, bias=False)
    text = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    classifier = classifier_from_embeddings(tower, text, 10.0, torch.tensor(-2.0))
    x = images64(batch=2).float()
    for name in ("agcam", "rollout", "grad_eclip"):
        with pytest.raises(ValueError, match=f"^{name} explains through the class token, and "
                                             "this model has none \\(pooling 'map'\\)"):
            get_explainer(name, classifier)
    for name in ("legrad", "ixg"):
        predictions, maps = get_explainer(name, classifier).explain(x, target=1)
        assert torch.isfinite(maps).all() and (maps != 0).any(), name
