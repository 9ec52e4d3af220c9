"""Hugging Face ``transformers`` checkpoints converted to timm ViTs (models/transformers.py).

Tiny random models of every supported family are built from configs (no hub) in float64, with
every parameter perturbed so that LayerNorm affines, layer scales and biases are not their
initial 1s and 0s. The converted timm model must compute the same function:

* logits against HF's own forward (sdpa attention);
* each block's softmax attention against HF's eager path run with an attention function of our
  own that keeps the softmax in float64 (transformers 5's eager attention computes the softmax in
  float32, only ~1e-7 accurate);
* d(logit)/d(attention) of every block, through the same float64 eager path;

all to <= 1e-12 relative (||a - b|| / ||b||), which float64 rounding meets and no modelling
difference could (a wrong eps, activation, q/k/v order or position embedding is >= 1e-7).
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from timm.models.vision_transformer import VisionTransformer  # noqa: E402

from models.transformers import (  # noqa: E402
    ConversionError,
    from_transformers,
    load_timm_checkpoint,
    model_transform,
    save_timm_checkpoint,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
EXACT = 1e-12
LABELS = {i: f"class {chr(97 + i)}" for i in range(5)}


def rel(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).norm() / expected.norm())


# -- tiny models of each family -------------------------------------------------------------------
def _common(**kw):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                image_size=32, patch_size=8)
    base.update(kw)
    return base


def _labelled(**kw):
    return dict(num_labels=5, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, **kw)


def _vit():
    return transformers.ViTForImageClassification(
        transformers.ViTConfig(**_common(), **_labelled()))


def _vit_variants():
    # gelu_new (-> gelu_tanh), no qkv bias, non-square input
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        **_common(image_size=(32, 48), hidden_act="gelu_new", qkv_bias=False), **_labelled()))


def _deit():
    return transformers.DeiTForImageClassification(
        transformers.DeiTConfig(**_common(), **_labelled()))


def _deit_teacher():
    return transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(**_common(), **_labelled()))


def _dinov2():
    # stored grid 6x6 (48 px); the processor crops 32 px, so the position embeddings are
    # interpolated (HF: on every call; here: once, with HF's own function)
    return transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(**_common(image_size=48), **_labelled()))


def _dinov2_swiglu():
    return transformers.Dinov2ForImageClassification(transformers.Dinov2Config(
        **_common(image_size=48, use_swiglu_ffn=True), **_labelled()))


def _dinov2_registers():
    return transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(**_common(image_size=48, num_register_tokens=3),
                                               **_labelled()))


def _clip_projection():
    return transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**_common(projection_dim=12)))


def _clip_classifier():
    return transformers.CLIPForImageClassification(transformers.CLIPConfig(
        vision_config=_common(), text_config=dict(hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32),
        **_labelled()))


#: family -> (factory, processor config (None: the family default), what the model returns)
FAMILIES = {
    "vit": (_vit, None),
    "vit_gelu_new_nobias_nonsquare": (_vit_variants, None),
    "deit": (_deit, None),
    "deit_teacher": (_deit_teacher, None),
    "dinov2": (_dinov2, {"crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
                         "size": {"shortest_edge": 36}, "resample": 3}),
    "dinov2_swiglu": (_dinov2_swiglu, {"crop_size": {"height": 32, "width": 32},
                                       "do_center_crop": True, "size": {"shortest_edge": 36}}),
    "dinov2_registers": (_dinov2_registers, {"crop_size": {"height": 32, "width": 32},
                                             "do_center_crop": True,
                                             "size": {"shortest_edge": 36}}),
    "clip_projection": (_clip_projection, None),
    "clip_classifier": (_clip_classifier, None),
}


@functools.lru_cache(maxsize=None)
def hf_model(family: str):
    """The family's tiny HF model in float64, parameters perturbed (seeded), eval mode."""
    torch.manual_seed(sum(map(ord, family)))
    model = FAMILIES[family][0]().double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@functools.lru_cache(maxsize=None)
def converted(family: str):
    return from_transformers(hf_model(family), processor=FAMILIES[family][1])


def hf_logits(model, pixels, **kw):
    out = model(pixel_values=pixels, **kw)
    logits = getattr(out, "logits", None)
    return (out.image_embeds if logits is None else logits), out


def inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = model.patch_embed.img_size
    return torch.randn(batch, 3, h, w, generator=g, dtype=torch.float64)


# -- float64 eager attention for HF ---------------------------------------------------------------
def eager64(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """HF's eager attention with the softmax in the inputs' dtype (float64 here)."""
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = weights.softmax(dim=-1)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


transformers.AttentionInterface.register("agcam_eager64", eager64)


@functools.lru_cache(maxsize=None)
def hf_eager64(family: str):
    import copy
    model = copy.deepcopy(hf_model(family))
    model.set_attn_implementation("agcam_eager64")
    return model


# -- exactness per family -------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_equal_hf_sdpa(family):
    hf = hf_model(family)
    assert hf.config._attn_implementation == "sdpa"
    model = converted(family)
    x = inputs(model)
    with torch.no_grad():
        expected, _ = hf_logits(hf, x)
        actual = model(x)
    assert actual.dtype == torch.float64 and not model.training
    assert rel(actual, expected) <= EXACT


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_and_its_gradient_equal_hf_eager64(family):
    from models.attention import AttentionRecorder
    hf, model = hf_eager64(family), converted(family)
    x = inputs(model)
    expected_logits, out = hf_logits(hf, x, output_attentions=True)
    hf_attn = list(out.attentions)
    target = expected_logits.argmax(dim=1)
    hf_grads = torch.autograd.grad(expected_logits.gather(1, target[:, None]).sum(), hf_attn)
    with AttentionRecorder(model, grad=True) as recorder:
        logits = model(x)
        records = recorder.checked_records()
        grads = recorder.gradient_list(logits.gather(1, target[:, None]).sum())
    assert len(records) == len(hf_attn) == len(model.blocks)
    for block, (record, a_hf, g, g_hf) in enumerate(zip(records, hf_attn, grads, hf_grads)):
        assert record.probs.shape == a_hf.shape, block
        assert rel(record.probs, a_hf) <= EXACT, block
        assert rel(g, g_hf) <= EXACT, block
    assert rel(logits, expected_logits) <= EXACT


#: real-shape one-layer models: (factory, processor config) -- the processors of the hub
#: checkpoints of these shapes (DINOv2: 518 px position grid, 224 px crop, so the position
#: embeddings are really interpolated 37x37 -> 16x16)
REAL_SHAPES = {
    "vit_base_patch16_224": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        num_hidden_layers=1, num_labels=10)), None),
    "deit_base_distilled": (lambda: transformers.DeiTForImageClassificationWithTeacher(
        transformers.DeiTConfig(num_hidden_layers=1, num_labels=10)), None),
    "dinov2_small_registers": (lambda: transformers.Dinov2WithRegistersForImageClassification(
        transformers.Dinov2WithRegistersConfig(hidden_size=384, num_attention_heads=6,
                                               num_hidden_layers=1, image_size=518, patch_size=14,
                                               num_register_tokens=4, num_labels=10)),
        {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
         "do_center_crop": True, "resample": 3}),
    "dinov2_giant_swiglu": (lambda: transformers.Dinov2ForImageClassification(
        transformers.Dinov2Config(hidden_size=1536, num_attention_heads=24, num_hidden_layers=1,
                                  image_size=518, patch_size=14, use_swiglu_ffn=True,
                                  num_labels=10)),
        {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224},
         "do_center_crop": True, "resample": 3}),
    "clip_vit_base_patch16": (lambda: transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(num_hidden_layers=2, patch_size=16, projection_dim=512)),
        None),
}


@pytest.mark.parametrize("shape", [
    pytest.param(s, marks=pytest.mark.slow) if "giant" in s else s for s in REAL_SHAPES])
def test_real_shapes_exact(shape):
    from models.attention import AttentionRecorder
    torch.manual_seed(0)
    factory, processor = REAL_SHAPES[shape]
    hf = factory().double().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model = from_transformers(hf, processor=processor)
    x = inputs(model, batch=1)
    with torch.no_grad():
        assert rel(model(x), hf_logits(hf, x)[0]) <= EXACT
    hf.set_attn_implementation("agcam_eager64")
    expected, out = hf_logits(hf, x, output_attentions=True)
    target = expected.argmax(dim=1)
    hf_grads = torch.autograd.grad(expected.gather(1, target[:, None]).sum(), list(out.attentions))
    with AttentionRecorder(model, grad=True) as recorder:
        logits = model(x)
        grads = recorder.gradient_list(logits.gather(1, target[:, None]).sum())
        probs = [r.probs for r in recorder.checked_records()]
    for a, a_hf, g, g_hf in zip(probs, out.attentions, grads, hf_grads):
        assert rel(a, a_hf) <= EXACT and rel(g, g_hf) <= EXACT


def test_float32_eager_softmax_is_why_float64_eager_is_registered():
    """transformers' own eager attention keeps the softmax in float32: its attention is ~1e-8
    from the float64 one, far above the 1e-12 the comparison above needs."""
    import copy
    hf = copy.deepcopy(hf_model("vit"))
    hf.set_attn_implementation("eager")
    x = inputs(converted("vit"))
    _, out32 = hf_logits(hf, x, output_attentions=True)
    _, out64 = hf_logits(hf_eager64("vit"), x, output_attentions=True)
    spread = max(rel(a, b) for a, b in zip(out32.attentions, out64.attentions))
    assert 1e-12 < spread < 1e-6


# -- names, files, dtype, labels, unsupported -----------------------------------------------------
@pytest.mark.parametrize("family", ["vit", "deit_teacher", "dinov2_swiglu", "dinov2_registers",
                                    "clip_projection"])
def test_on_disk_names_load_from_a_checkpoint_directory(family, tmp_path):
    hf = hf_model(family)
    hf.save_pretrained(tmp_path)
    processor = FAMILIES[family][1]
    if processor is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor))
    from safetensors.torch import load_file
    disk = load_file(tmp_path / "model.safetensors")
    if not family.startswith("clip"):   # CLIP's names are the same on disk and in memory
        assert set(disk) != set(hf.state_dict()), "this test needs the on-disk names"
    model = from_transformers(str(tmp_path))
    x = inputs(model)
    with torch.no_grad():
        assert rel(model(x), hf_logits(hf, x)[0]) <= EXACT
    # the same weights as pytorch_model.bin (read with weights_only)
    os.remove(tmp_path / "model.safetensors")
    torch.save(disk, tmp_path / "pytorch_model.bin")
    with torch.no_grad():
        assert torch.equal(from_transformers(str(tmp_path))(x), model(x))


def test_a_full_clip_model_is_read_as_its_vision_tower_with_projection(tmp_path):
    torch.manual_seed(0)
    clip = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=_common(), projection_dim=12,
        text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32))).double().eval()
    clip.save_pretrained(tmp_path)
    model = from_transformers(str(tmp_path))
    x = inputs(model)
    with torch.no_grad():
        expected = clip.get_image_features(pixel_values=x)
        expected = getattr(expected, "pooler_output", expected)
        assert rel(model(x), expected) <= EXACT


def test_dtype_eval_labels_and_caller_model_untouched():
    hf = hf_model("vit")
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    hf.train()
    model = from_transformers(hf, dtype=torch.float32)
    hf.eval()
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.label_names == [LABELS[i] for i in range(5)]
    assert all(torch.equal(before[k], v) for k, v in hf.state_dict().items())
    assert next(hf.parameters()).dtype == torch.float64


def test_placeholder_labels_give_no_names():
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(**_common(), num_labels=3))
    assert from_transformers(hf).label_names is None


@pytest.mark.parametrize("config", [
    lambda: transformers.BeitConfig(**_common()),
    lambda: transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1],
                                    num_heads=[2]),
])
def test_unsupported_families_give_one_line(config):
    model = transformers.AutoModelForImageClassification.from_config(config())
    with pytest.raises(ConversionError) as info:
        from_transformers(model)
    assert "not supported" in str(info.value) and "\n" not in str(info.value)


def test_model_without_a_head_is_refused():
    with pytest.raises(ConversionError, match="no classification head"):
        from_transformers(transformers.ViTModel(transformers.ViTConfig(**_common())))


def test_agcam_and_saved_timm_checkpoints_need_no_transformers(tmp_path):
    """``import agcam`` does not import transformers, nor does loading a saved checkpoint."""
    path = tmp_path / "model.pth"
    save_timm_checkpoint(converted("dinov2_registers"), str(path))
    code = ("import sys, agcam; from models.transformers import load_timm_checkpoint; "
            "print('transformers' in sys.modules); "
            f"m = load_timm_checkpoint({str(path)!r}); "
            "print(type(m).__name__, m.num_prefix_tokens, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "ClassMeanHeadViT", "4", "False"]


# -- every method: converted model vs the saved timm checkpoint -----------------------------------
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_equal_on_the_reloaded_timm_checkpoint(family, tmp_path):
    import agcam
    model = converted(family)
    path = tmp_path / "model.pth"
    save_timm_checkpoint(model, str(path))
    reloaded = load_timm_checkpoint(str(path))
    assert type(reloaded) is type(model) and reloaded.label_names == model.label_names
    assert reloaded.pretrained_cfg["crop_mode"] == model.pretrained_cfg["crop_mode"]
    x = inputs(model).float()
    model32 = from_transformers(hf_model(family), dtype=torch.float32,
                                processor=FAMILIES[family][1])
    reloaded32 = load_timm_checkpoint(str(path), dtype=torch.float32)
    ran = []
    for name in agcam.available_methods():
        results = []
        for m in (model32, reloaded32):
            try:
                results.append(agcam.get_explainer(name, m).explain(x))
            except Exception as exc:   # a method that refuses a family must refuse both alike
                results.append(f"{type(exc).__name__}: {exc}")
        assert type(results[0]) is type(results[1]), name
        if isinstance(results[0], str):
            assert results[0] == results[1], name
            continue
        (p0, m0), (p1, m1) = results
        assert torch.equal(p0, p1) and torch.equal(m0, m1), name
        ran.append(name)
    assert "agcam" in ran and "rollout" in ran
    # LRP's relevance rules know class-token pooling and DeiT's two heads only
    assert ("lrp" in ran) == (model.global_pool == "token"), family


# -- preprocessing --------------------------------------------------------------------------------
#: The processors of the checkpoints people hold, as their preprocessor_config.json says.
PROCESSORS = {
    # google/vit-base-patch16-224: squash to 224, bilinear, mean/std 0.5
    "vit": ("ViTImageProcessorPil", {"do_resize": True, "size": {"height": 224, "width": 224},
                                     "resample": 2, "image_mean": [0.5] * 3,
                                     "image_std": [0.5] * 3}),
    # facebook/deit-base-distilled-patch16-224: squash to 256, crop 224, bicubic
    "deit": ("DeiTImageProcessorPil", {"size": {"height": 256, "width": 256},
                                       "crop_size": {"height": 224, "width": 224},
                                       "do_center_crop": True, "resample": 3,
                                       "image_mean": [0.485, 0.456, 0.406],
                                       "image_std": [0.229, 0.224, 0.225]}),
    # facebook/dinov2-*: shortest edge 256, crop 224, bicubic
    "dinov2": ("BitImageProcessorPil", {"size": {"shortest_edge": 256},
                                        "crop_size": {"height": 224, "width": 224},
                                        "do_center_crop": True, "resample": 3,
                                        "image_mean": [0.485, 0.456, 0.406],
                                        "image_std": [0.229, 0.224, 0.225]}),
    # openai/clip-vit-base-patch16: shortest edge 224, crop 224, bicubic
    "clip": ("CLIPImageProcessorPil", {"size": {"shortest_edge": 224},
                                       "crop_size": {"height": 224, "width": 224},
                                       "do_center_crop": True, "resample": 3,
                                       "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                       "image_std": [0.26862954, 0.26130258, 0.27577711]}),
}


def crop_offsets(height: int, width: int, crop: int):
    """(HF's floor offsets, torchvision's rounded offsets) of a centre crop."""
    return ((height - crop) // 2, (width - crop) // 2), \
        (int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0)))


@pytest.mark.parametrize("family", list(PROCESSORS))
def test_preprocessing_matches_the_hf_pil_processor(family):
    """timm's transform from the processor config gives HF's PIL processor's tensor bit for bit,
    except where HF's floor-centred crop starts one pixel before torchvision's rounded one
    (rocket.jpg under the DINOv2 and CLIP processors: its resized width is odd-offset, 383 or
    335 px); there the tensors are equal once the window is shifted by that pixel."""
    from PIL import Image
    from timm.data import resolve_model_data_config
    from torchvision.transforms import functional as TF
    cls_name, cfg = PROCESSORS[family]
    processor = getattr(transformers, cls_name)(**cfg)
    from models.transformers import preprocessing_config
    data = preprocessing_config(cfg, (224, 224), family)

    class Holder(torch.nn.Module):
        pretrained_cfg = data
    transform = model_transform(Holder())
    assert resolve_model_data_config(Holder())["crop_pct"] == data["crop_pct"]
    assert SAMPLES
    for path in SAMPLES:
        image = Image.open(path).convert("RGB")
        expected = torch.as_tensor(processor(image, return_tensors="pt")["pixel_values"][0])
        actual = transform(image)
        assert actual.shape == expected.shape == (3, 224, 224)
        diff = float((actual - expected).abs().max())
        if diff == 0:
            continue
        # the one-pixel crop offset: resize as both do, crop at HF's floor offsets
        resize = [t for t in transform.transforms if type(t).__name__ == "Resize"][0]
        resized = resize(image)
        (top, left), (rtop, rleft) = crop_offsets(resized.height, resized.width, 224)
        assert (top, left) != (rtop, rleft), f"{path.name}: {diff} without a crop offset"
        shifted = TF.normalize(TF.to_tensor(TF.crop(resized, top, left, 224, 224)),
                               data["mean"], data["std"])
        assert torch.equal(shifted, expected), path.name


# -- get_explainer on a transformers model --------------------------------------------------------
@pytest.mark.parametrize("family", ["vit", "deit_teacher", "dinov2_registers"])
def test_get_explainer_takes_a_transformers_model(family):
    import agcam
    hf = hf_model(family)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    model = from_transformers(hf)      # no processor config: the model's own image size
    x = inputs(model)
    for name in agcam.available_methods():
        try:
            explainer = agcam.get_explainer(name, hf)
        except Exception as exc:       # refused alike on the converted model
            with pytest.raises(type(exc)):
                agcam.get_explainer(name, model)
            continue
        assert explainer.model is not hf and isinstance(explainer.model, VisionTransformer)
        assert explainer.geometry.num_prefix_tokens == model.num_prefix_tokens
        predictions, maps = explainer.explain(x)
        expected_predictions, expected = agcam.get_explainer(name, model).explain(x)
        assert torch.equal(predictions, expected_predictions) and torch.equal(maps, expected), name
    assert all(torch.equal(before[k], v) for k, v in hf.state_dict().items())
    assert not hf.training and next(hf.parameters()).dtype == torch.float64


def test_a_from_pretrained_model_brings_its_preprocessing(tmp_path):
    """``get_explainer(name, Dinov2...from_pretrained(dir))`` takes the processor's 32 px crop
    (the file next to the weights), not the 48 px position grid of the config."""
    import agcam
    hf_model("dinov2").save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(FAMILIES["dinov2"][1]))
    loaded = transformers.Dinov2ForImageClassification.from_pretrained(tmp_path)
    explainer = agcam.get_explainer("agcam", loaded)
    assert explainer.geometry.input_size == (32, 32) and explainer.geometry.grid == (4, 4)
    assert explainer.model.pretrained_cfg["crop_mode"] == "center"


# -- command line: --checkpoint DIR, hf:<repo>, saved timm checkpoints, offline -------------------
def test_create_model_reads_checkpoint_directories_hub_names_and_saved_files(tmp_path):
    from models.vit import create_model, file_digest
    hf = hf_model("deit_teacher")
    hf.save_pretrained(tmp_path / "hf")
    x = inputs(converted("deit_teacher"))
    with torch.no_grad():
        expected = hf_logits(hf, x)[0]
        # --checkpoint DIR alone: the architecture is config.json's, whatever --model says
        from_dir = create_model("vit_tiny_patch16_224", checkpoint=str(tmp_path / "hf"))
        assert rel(from_dir(x), expected) <= EXACT
        # --model hf:<local directory> goes through from_pretrained
        from_hub = create_model(f"hf:{tmp_path / 'hf'}")
        assert rel(from_hub(x), expected) <= EXACT
        save_timm_checkpoint(from_dir, str(tmp_path / "model.pth"))
        saved = create_model("anything", checkpoint=str(tmp_path / "model.pth"))
        assert torch.equal(saved(x), from_dir(x)) and saved.label_names == from_dir.label_names
    assert len(file_digest(str(tmp_path / "hf"))) == 64


@pytest.mark.parametrize("dataset, classes", [("voc", 20), ("cub", 200)])
def test_fine_tuned_checkpoints_fit_their_data_sets(dataset, classes, tmp_path):
    """A VOC (20 labels) or CUB (200 labels) checkpoint passes the scripts' head check for
    ``--dataset voc|cub`` and fails it, in one line, for ImageNet."""
    from agcam.cli.common import check_head
    from agcam.datasets import get_dataset
    from agcam.errors import UsageError
    from models.vit import create_model
    transformers.ViTForImageClassification(transformers.ViTConfig(
        **_common(), num_labels=classes)).save_pretrained(tmp_path)
    model = create_model(checkpoint=str(tmp_path))

    class Args:
        checkpoint, model = str(tmp_path), None
    check_head(model, get_dataset(dataset), Args())
    with pytest.raises(UsageError, match=f"{classes} classes"):
        check_head(model, get_dataset("ilsvrc"), Args())


def test_checkpoint_directory_errors_are_one_line_model_errors(tmp_path):
    from models.vit import ModelError, create_model
    (tmp_path / "config.json").write_text(json.dumps(transformers.BeitConfig(**_common())
                                                     .to_dict()))
    with pytest.raises(ModelError, match="not supported") as info:
        create_model(checkpoint=str(tmp_path))
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


@pytest.fixture
def hub_state(monkeypatch):
    """Restore huggingface_hub's offline flag and endpoint after a test that changes them."""
    import huggingface_hub.constants as hub
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", hub.HF_HUB_OFFLINE)
    monkeypatch.setattr(hub, "ENDPOINT", hub.ENDPOINT)
    return hub


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable endpoint"])
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                                  "hf:agcam-tests/no-such-repo"])
def test_hub_paths_stop_fast_without_network(name, offline, hub_state):
    import time

    from models.vit import WeightsUnavailableError, create_model
    if offline == "HF_HUB_OFFLINE":
        hub_state.HF_HUB_OFFLINE = True
    else:
        hub_state.HF_HUB_OFFLINE = False
        hub_state.ENDPOINT = "http://127.0.0.1:9"      # nothing listens on the discard port
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_model(name)
    elapsed = time.perf_counter() - start
    message = str(info.value)
    assert elapsed < 10, elapsed
    assert "\n" not in message and "--checkpoint" in message
    assert ("HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else
            "did not answer one 3 s connection check") in message


@pytest.mark.slow
@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
@pytest.mark.parametrize("model", [None, "hf:google/vit-base-patch16-224"])
def test_scripts_offline_one_line_exit_2(env, model, tmp_path):
    """``python localization.py`` without network: exit code 2, one line, within 10 s of a
    process that only imports what the run imports (torch, timm: seconds on a loaded machine;
    ``--help`` imports neither since the light start)."""
    import time
    run_env = dict(os.environ, HF_HOME=str(tmp_path / "hf_home"), **env)
    run_env.pop("HF_HUB_OFFLINE", None) if "HF_ENDPOINT" in env else None
    cmd = [sys.executable, "localization.py", "--limit", "2", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, timm, agcam.registry"], cwd=ROOT,
                   env=run_env, capture_output=True, check=True)
    baseline = time.perf_counter() - start
    start = time.perf_counter()
    out = subprocess.run(cmd + (["--model", model] if model else []), cwd=ROOT, env=run_env,
                         capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--checkpoint" in lines[0], out.stderr
    assert elapsed - baseline < 10, (elapsed, baseline)


# -- agcam convert, class names -------------------------------------------------------------------
def test_convert_command_and_explain_with_the_models_class_names(tmp_path, capsys):
    """``agcam convert DIR --out model.pth`` writes a checkpoint equal to the conversion;
    ``agcam explain --checkpoint model.pth`` prints and draws the checkpoint's own class names
    and takes one as ``--target``."""
    from PIL import Image

    from agcam.__main__ import entry
    hf = hf_model("dinov2_registers")
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "preprocessor_config.json").write_text(
        json.dumps(FAMILIES["dinov2_registers"][1]))
    out = tmp_path / "out" / "model.pth"
    assert entry(["convert", str(tmp_path / "hf"), "--out", str(out)]) == 0
    assert "reloaded logits equal" in capsys.readouterr().out
    model, expected = load_timm_checkpoint(str(out)), converted("dinov2_registers")
    x = inputs(expected)
    with torch.no_grad():
        assert torch.equal(model(x), expected(x))
    assert model.label_names == [LABELS[i] for i in range(5)]
    assert entry(["convert", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # the scripts feed float32 images: a float32 copy
    out32 = tmp_path / "out" / "model32.pth"
    assert entry(["convert", str(tmp_path / "hf"), "--out", str(out32), "--dtype", "float32"]) == 0
    assert all(p.dtype == torch.float32 for p in load_timm_checkpoint(str(out32)).parameters())
    out = out32
    image = tmp_path / "photo.png"
    Image.fromarray((torch.rand(40, 52, 3) * 255).byte().numpy()).save(image)
    code = entry(["explain", str(image), "--checkpoint", str(out), "--out",
                  str(tmp_path / "figures"), "--device", "cpu", "--target", "Class C"])
    printed = capsys.readouterr().out
    assert code == 0 and f"{LABELS[0]} (0)" in printed and f"{LABELS[4]} (4)" in printed
    assert len(list((tmp_path / "figures").glob("*.png"))) == 1
    assert entry(["explain", str(image), "--checkpoint", str(out), "--out",
                  str(tmp_path / "figures"), "--target", "no such class"]) == 2
    assert "none of the model's class names" in capsys.readouterr().err


def test_class_names_and_parse_class_use_the_models_names():
    from agcam.figures.heatmaps import class_name, parse_class
    names = ["cat", "Dog", "dog house"]
    assert class_name(1, 3, names) == "Dog" and class_name(1, 3) == "class 1"
    assert parse_class("dog", 3, names) == 1 and parse_class("2", 3, names) == 2
    with pytest.raises(ValueError, match="none of the model's class names"):
        parse_class("horse", 3, names)


# -- round trip: save_pretrained -> --checkpoint DIR -> every script ------------------------------
@pytest.mark.slow
def test_round_trip_save_pretrained_then_every_script(tmp_path):
    """A 1000-class tiny ViT saved with ``save_pretrained`` runs through ``localization.py``,
    ``save_h5.py``, ``ABPC.py`` and ``python -m agcam explain`` with ``--checkpoint DIR`` alone,
    on the golden ILSVRC fixture, offline."""
    names = {i: f"hf class {i}" for i in range(1000)}
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        image_size=224, patch_size=16, num_labels=1000, id2label=names,
        label2id={v: k for k, v in names.items()}))
    hf.save_pretrained(tmp_path / "ckpt")
    golden = ROOT / "tests" / "fixtures" / "golden" / "ILSVRC"
    images = sorted(str(p) for p in (golden / "Data").rglob("*") if p.suffix.lower() in
                    (".jpeg", ".jpg"))[:2]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    common = ["--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu"]
    runs = {
        "localization": [str(ROOT / "localization.py"), "--data_root", str(golden),
                         "--limit", "2", "--no_progress", "--output", str(tmp_path / "loc")],
        "save_h5": [str(ROOT / "save_h5.py"), "--data_root", str(golden), "--limit", "2",
                    "--save_root", str(tmp_path / "h5"), "--no_progress"],
        "abpc": [str(ROOT / "ABPC.py"), "--h5_root", str(tmp_path / "h5"), "--no_progress"],
        "explain": ["-m", "agcam", "explain", "--out", str(tmp_path / "figures"), *images],
    }
    outputs = {}
    for name, args in runs.items():
        out = subprocess.run([sys.executable, *args, *common], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
        assert out.returncode == 0, f"{name}: {out.stderr[-2000:]}"
        outputs[name] = out.stdout
    assert "ABPC" in outputs["abpc"]
    assert (tmp_path / "h5" / "ILSVRC_agcam.hdf5").is_file()
    assert len(list((tmp_path / "figures").glob("*.png"))) == 2
    # the class names are the checkpoint's own (id2label), not ImageNet's
    assert "hf class" in outputs["explain"]
    import csv
    with open(tmp_path / "loc" / "localization_agcam.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and all(r["label_name"] == names[int(r["label"])] for r in rows)
