"""Hugging Face ``transformers`` checkpoints -> an equal timm ``VisionTransformer``.

Every explainer here runs on timm's ViT, so a ``transformers`` model is converted once into the
timm model that computes the same function, rather than hooked: one code path for every method.
Supported (``config.model_type``):

* ``vit``: ``ViTForImageClassification``;
* ``deit``: ``DeiTForImageClassification`` (the distillation token becomes timm's second prefix
  token, ``reg_tokens=1``, with its own position embedding) and
  ``DeiTForImageClassificationWithTeacher`` (timm's ``VisionTransformerDistilled``:
  ``(head(x_cls) + head_dist(x_dist)) / 2``);
* ``dinov2`` and ``dinov2_with_registers``: layer scale, SwiGLU (``use_swiglu_ffn``: timm's
  ``GluMlp`` with ``fc1 = [gate; up]``, ``silu(gate) * up``), and the linear head on
  ``[x_cls, mean(patch tokens)]`` (:class:`ClassMeanHeadViT`, registers excluded from the mean).
  HF interpolates the position embeddings on every call (bicubic, in float32); here they are
  interpolated once, with HF's own ``interpolate_pos_encoding``, to the input size of the
  checkpoint's image processor. With registers, HF adds ``pos[:, 0]`` to the class token and
  none to the registers: timm's position embedding gets a row per prefix token, ``pos[:, 0]``
  for the class token and zeros for the registers (``no_embed_class=False``), so a float32
  checkpoint run in float64 equals HF's float64 run to rounding;
* ``clip`` / ``clip_vision_model``: ``CLIPVisionModelWithProjection`` (pre-norm, no patch bias,
  the final norm on the class token, the bias-free projection as the "head") and
  ``CLIPForImageClassification`` (mean of the patch tokens of the last block, no final norm).

What carries over from the config: LayerNorm ``eps`` (``layer_norm_eps``), the activation
(``hidden_act``: ``gelu`` -> erf GELU; ``gelu_new`` / ``gelu_pytorch_tanh`` -> timm's
``gelu_tanh``; ``quick_gelu`` -> ``x * sigmoid(1.702 x)``), ``qkv_bias``, the MLP width (from the
weights). q, k and v are fused into timm's ``qkv`` in the order q, k, v. State dicts load under
both the transformers 5.x in-memory names (``layers.i.attention.q_proj``, ``mlp.fc1``,
``gate_proj``/``up_proj``) and the on-disk names (``encoder.layer.i.attention.attention.query``,
``intermediate.dense``, ``weights_in``).

Preprocessing comes from ``preprocessor_config.json`` and is written into the timm model's
``pretrained_cfg`` (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
``crop_mode``), so :func:`model_transform` (``timm.data.create_transform``) reproduces it:
``size={height, width}`` without a crop is timm's ``squash`` at ``crop_pct=1``; with a crop it is
``squash`` at ``crop_pct = crop / size``; ``size={shortest_edge}`` plus a crop is timm's
``center`` mode. One known difference: HF's centre crop starts at ``floor((H - h) / 2)`` (PIL
backend) or ``int((H - h) / 2.0)`` (torchvision backend), torchvision's ``CenterCrop`` (timm) at
``round((H - h) / 2)`` with Python's half-to-even rounding, so for some image sizes the crop
window is one pixel apart.

Class names come from ``config.id2label`` (``model.label_names``). :func:`save_timm_checkpoint`
writes weights, constructor arguments, label names and preprocessing to one ``.pth`` that
:func:`load_timm_checkpoint` reads back without ``transformers``.

``transformers`` is imported inside the functions that need it only, so ``import agcam`` and
``import models`` never import it. This module imports no other ``models/`` file.
"""
from __future__ import annotations

import json
import math
import os
import re
from functools import partial
from typing import Any, Dict, List, Optional, Tuple

import torch
from timm.layers import GluMlp, Mlp
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

#: The ``model_type`` values that convert, by family.
SUPPORTED_MODEL_TYPES = ("vit", "deit", "dinov2", "dinov2_with_registers", "clip",
                         "clip_vision_model")
#: ``hidden_act`` -> timm's activation name (only exact equivalents)
ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "quick_gelu"}
#: what a saved timm checkpoint says it is (checked on load)
CHECKPOINT_FORMAT = "agcam-timm-vit/1"
#: PIL resample codes of ``preprocessor_config.json`` -> timm's interpolation names
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
#: The weight files a checkpoint directory may hold, in the order they are looked for.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: prefixes of the vision tower in each family's state dict
_PREFIXES = ("vit.", "deit.", "dinov2_with_registers.", "dinov2.", "vision_model.")


class ConversionError(ValueError):
    """A ``transformers`` model or checkpoint that cannot be converted (unsupported family,
    missing or unexpected weights)."""


# -- the timm model -------------------------------------------------------------------------------
class ClassMeanHeadViT(VisionTransformer):
    """timm ViT whose linear head reads ``[x_cls, mean(patch tokens)]`` (DINOv2's image
    classifier): the prefix tokens (class token and registers) are excluded from the mean.
    ``global_pool`` is ``"token_mean"``, so code that only knows class-token pooling (the
    class-token fast path, LRP's head rule) sees that this head is different."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, global_pool="token", fc_norm=False, **kwargs)
        self.global_pool = "token_mean"
        self.num_features = self.head_hidden_size = 2 * self.embed_dim
        dd = {"device": self.cls_token.device, "dtype": self.cls_token.dtype}
        self.head = nn.Linear(2 * self.embed_dim, self.num_classes, **dd)

    def pool(self, x: torch.Tensor, pool_type: Optional[str] = None) -> torch.Tensor:
        return torch.cat([x[:, 0], x[:, self.num_prefix_tokens:].mean(dim=1)], dim=1)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """A new head on the same ``[x_cls, mean(patches)]`` features (pooling unchanged)."""
        dd = {"device": self.cls_token.device, "dtype": self.cls_token.dtype}
        self.num_classes = num_classes
        self.head = nn.Linear(2 * self.embed_dim, num_classes, **dd) if num_classes > 0 \
            else nn.Identity()


class _MlpLayer:
    """timm's ``mlp_layer`` with the checkpoint's hidden width (HF's is not always
    ``int(dim * mlp_ratio)``); SwiGLU is timm's ``GluMlp``, ``fc1 = [gate; up]``, SiLU on the
    first half (HF's ``silu(gate_proj(x)) * up_proj(x)``)."""

    def __init__(self, hidden: int, swiglu: bool):
        self.hidden, self.swiglu = hidden, swiglu

    def __call__(self, in_features: int, hidden_features: Optional[int] = None, act_layer=None,
                 **kwargs) -> nn.Module:
        if self.swiglu:
            return GluMlp(in_features, hidden_features=2 * self.hidden, act_layer=nn.SiLU,
                          gate_last=False, **kwargs)
        return Mlp(in_features, hidden_features=self.hidden, act_layer=act_layer, **kwargs)


def build_timm_vit(args: Dict[str, Any], dtype: Optional[torch.dtype] = None) -> nn.Module:
    """The (uninitialised) timm model described by ``args`` (the constructor arguments that
    :func:`from_transformers` derives and :func:`save_timm_checkpoint` stores), in ``dtype``."""
    head = args["head"]
    kwargs = dict(
        img_size=tuple(args["img_size"]), patch_size=tuple(args["patch_size"]),
        num_classes=int(args["num_classes"]), embed_dim=int(args["embed_dim"]),
        depth=int(args["depth"]), num_heads=int(args["num_heads"]), qkv_bias=bool(args["qkv_bias"]),
        init_values=args["init_values"], class_token=True, reg_tokens=int(args["reg_tokens"]),
        no_embed_class=bool(args["no_embed_class"]), pre_norm=bool(args["pre_norm"]),
        norm_layer=partial(nn.LayerNorm, eps=float(args["eps"])), act_layer=args["act"],
        mlp_layer=_MlpLayer(int(args["mlp_hidden"]), bool(args["swiglu"])),
        weight_init="skip", dtype=dtype)
    if head == "distilled":
        model = VisionTransformerDistilled(global_pool="token", **kwargs)
    elif head == "token_mean":
        model = ClassMeanHeadViT(**kwargs)
    elif head == "token":
        model = VisionTransformer(global_pool="token", **kwargs)
    elif head == "avg":          # CLIPForImageClassification: no final norm
        model = VisionTransformer(global_pool="avg", final_norm=False, fc_norm=False, **kwargs)
    else:
        raise ConversionError(f"unknown head kind {head!r}")
    if not args.get("head_bias", True):
        model.head = nn.Linear(model.head.in_features, model.head.out_features, bias=False,
                               dtype=model.head.weight.dtype)
    return model


# -- state dict names -----------------------------------------------------------------------------
# Inner names of a layer (either naming) -> our canonical names.
_LAYER_NAMES = [
    (r"attention\.attention\.query|attention\.q_proj|self_attn\.q_proj", "q"),
    (r"attention\.attention\.key|attention\.k_proj|self_attn\.k_proj", "k"),
    (r"attention\.attention\.value|attention\.v_proj|self_attn\.v_proj", "v"),
    (r"attention\.output\.dense|attention\.o_proj|self_attn\.out_proj", "o"),
    (r"intermediate\.dense|mlp\.fc1", "fc1"),
    (r"output\.dense|mlp\.fc2|mlp\.down_proj|mlp\.weights_out", "fc2"),
    (r"mlp\.weights_in", "gate_up"),
    (r"mlp\.gate_proj", "gate"),
    (r"mlp\.up_proj", "up"),
    (r"layernorm_before|norm1|layer_norm1", "norm1"),
    (r"layernorm_after|norm2|layer_norm2", "norm2"),
    (r"layer_scale1", "ls1"),
    (r"layer_scale2", "ls2"),
]
_LAYER_RE = re.compile(r"^(?:encoder\.)?layers?\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def canonical_state_dict(state_dict: Dict[str, torch.Tensor]
                         ) -> Tuple[Dict[str, torch.Tensor], Dict[int, Dict[str, torch.Tensor]]]:
    """``(top-level tensors, {layer: {canonical name: tensor}})`` from a state dict in either
    naming; the tower prefix (``vit.``, ``vision_model.``, ...) is dropped. Text-tower keys of a
    full ``CLIPModel`` and HF-only buffers (``position_ids``, ``mask_token``) are skipped."""
    top: Dict[str, torch.Tensor] = {}
    layers: Dict[int, Dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        name = key
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name.startswith(("text_model.", "text_projection.")) or name in (
                "logit_scale", "embeddings.mask_token", "embeddings.position_ids"):
            continue
        match = _LAYER_RE.match(name)
        if match is None:
            top[name] = value
            continue
        index, inner, kind = int(match.group(1)), match.group(2), match.group(3)
        for pattern, canonical in _LAYER_NAMES:
            if re.fullmatch(pattern, inner):
                layers.setdefault(index, {})[f"{canonical}.{kind}"] = value
                break
        else:
            raise ConversionError(f"unexpected weight {key!r}")
    return top, layers


def _pop(top: Dict[str, torch.Tensor], *names: str) -> Optional[torch.Tensor]:
    for name in names:
        if name in top:
            return top.pop(name)
    return None


# -- configuration --------------------------------------------------------------------------------
def _vision_config(config):
    """The vision part of a config (``CLIPConfig.vision_config``) and its model type."""
    model_type = getattr(config, "model_type", None)
    if model_type == "clip":
        return config.vision_config, "clip"
    return config, model_type


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def check_supported(config) -> str:
    """The family of a config (``vit``, ``deit``, ``dinov2``, ``clip``); :class:`ConversionError`
    with one line otherwise."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures"
        raise ConversionError(
            f"transformers model type {model_type!r} ({archs}) is not supported; supported: "
            "ViT, DeiT, DINOv2 (with or without registers) and CLIP vision models")
    return {"dinov2_with_registers": "dinov2", "clip_vision_model": "clip"}.get(model_type,
                                                                                 model_type)


# -- preprocessing --------------------------------------------------------------------------------
def preprocessing_config(processor: Optional[Dict[str, Any]], default_size: Tuple[int, int],
                         family: str) -> Dict[str, Any]:
    """timm's data config (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
    ``crop_mode``) equivalent to an HF ``preprocessor_config.json`` dict (see the module
    docstring). Without one: the family's HF default mean/std, a squash to ``default_size``."""
    defaults = {"vit": ((0.5,) * 3, (0.5,) * 3, "bilinear"),
                "deit": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"),
                "dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic"),
                "clip": ((0.48145466, 0.4578275, 0.40821073),
                         (0.26862954, 0.26130258, 0.27577711), "bicubic")}
    mean, std, interpolation = defaults[family]
    cfg = dict(input_size=(3, *default_size), interpolation=interpolation, mean=mean, std=std,
               crop_pct=1.0, crop_mode="squash")
    if not processor:
        return cfg
    if processor.get("do_normalize", True):
        cfg["mean"] = tuple(float(m) for m in processor.get("image_mean", mean))
        cfg["std"] = tuple(float(s) for s in processor.get("image_std", std))
    else:
        cfg["mean"], cfg["std"] = (0.0,) * 3, (1.0,) * 3
    rescale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) \
        else 1.0
    if not math.isclose(rescale, 1 / 255, rel_tol=1e-6):
        raise ConversionError(f"preprocessor rescale_factor {rescale} is not 1/255")
    if "resample" in processor:
        cfg["interpolation"] = _RESAMPLE.get(int(processor["resample"]), "bicubic")
    size = processor.get("size") if processor.get("do_resize", True) else None
    crop = processor.get("crop_size") if processor.get("do_center_crop", False) else None
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if size is None and crop is None:
        return cfg
    if size is not None and "height" in size and "width" in size:
        resized = (int(size["height"]), int(size["width"]))
        if crop is None:
            cfg["input_size"] = (3, *resized)
            return cfg
        out = (int(crop["height"]), int(crop["width"]))
        cfg.update(input_size=(3, *out), crop_mode="squash",
                   crop_pct=_crop_pct(out, resized))
        return cfg
    if size is not None and "shortest_edge" in size and crop is not None \
            and "longest_edge" not in size:
        out = (int(crop["height"]), int(crop["width"]))
        short = int(size["shortest_edge"])
        cfg.update(input_size=(3, *out), crop_mode="center", crop_pct=_crop_pct(out, (short,) * 2))
        return cfg
    raise ConversionError(f"preprocessing size={size} crop_size={crop} has no fixed-size timm "
                          "equivalent")


def _crop_pct(crop: Tuple[int, int], resized: Tuple[int, int]) -> float:
    """timm's ``crop_pct`` such that ``floor(crop / crop_pct) == resized`` in both dimensions."""
    pct = crop[0] / resized[0]
    for _ in range(4):   # a ratio that rounds up loses a pixel to the floor: step down one ulp
        scaled = tuple(math.floor(c / pct) for c in crop)
        if scaled == tuple(resized):
            return pct
        pct = math.nextafter(pct, 0.0)
    raise ConversionError(f"crop {crop} of a {resized} resize has no single timm crop_pct")


def model_transform(model: nn.Module):
    """timm's evaluation transform for ``model``'s ``pretrained_cfg`` (the checkpoint's own
    preprocessing for a converted model): PIL image -> normalised ``[3, H, W]`` tensor."""
    from timm.data import create_transform, resolve_model_data_config
    return create_transform(**resolve_model_data_config(model))


# -- conversion -----------------------------------------------------------------------------------
def _label_names(config, num_classes: int) -> Optional[List[str]]:
    id2label = getattr(config, "id2label", None) or {}
    if len(id2label) != num_classes:
        return None
    names = {int(k): str(v) for k, v in id2label.items()}
    if sorted(names) != list(range(num_classes)):
        return None
    # transformers' placeholder labels carry no information
    if all(names[i] == f"LABEL_{i}" for i in range(num_classes)):
        return None
    return [names[i] for i in range(num_classes)]


def _dinov2_positions(config, family_type: str, pos: torch.Tensor, grid: Tuple[int, int],
                      patch: Tuple[int, int]) -> torch.Tensor:
    """HF's own ``interpolate_pos_encoding`` of the checkpoint's position embeddings for an
    input of ``grid * patch`` pixels (returned unchanged when the grid is the stored one)."""
    if family_type == "dinov2_with_registers":
        from transformers.models.dinov2_with_registers.modeling_dinov2_with_registers import (
            Dinov2WithRegistersEmbeddings as Embeddings,
        )
    else:
        from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings as Embeddings
    embeddings = Embeddings(config).to(pos.dtype)
    with torch.no_grad():
        embeddings.position_embeddings.copy_(pos)
        tokens = torch.zeros(1, 1 + grid[0] * grid[1], pos.shape[-1], dtype=pos.dtype)
        return embeddings.interpolate_pos_encoding(tokens, grid[0] * patch[0],
                                                   grid[1] * patch[1]).detach().clone()


def convert_state_dict(config, state_dict: Dict[str, torch.Tensor],
                       processor: Optional[Dict[str, Any]] = None
                       ) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], Dict[str, Any]]:
    """``(constructor args, timm state dict, timm data config)`` from an HF config and state dict
    (either naming, see :func:`canonical_state_dict`) and an optional processor config dict."""
    family = check_supported(config)
    vision, family_type = _vision_config(config)
    top, layers = canonical_state_dict(state_dict)
    depth = len(layers)
    if depth == 0 or sorted(layers) != list(range(depth)):
        raise ConversionError(f"the checkpoint's layers are {sorted(layers)}; expected 0..n-1")
    dim = int(vision.hidden_size)
    patch = _pair(vision.patch_size)
    hf_size = _pair(vision.image_size)
    act = ACTIVATIONS.get(str(vision.hidden_act))
    swiglu = bool(getattr(vision, "use_swiglu_ffn", False))
    if act is None and not swiglu:
        raise ConversionError(f"hidden_act {vision.hidden_act!r} has no exact timm equivalent "
                              f"(supported: {', '.join(ACTIVATIONS)})")
    eps = float(vision.layer_norm_eps)
    first = layers[0]
    if swiglu:
        gate = first["gate_up.weight"].shape[0] // 2 if "gate_up.weight" in first else \
            first["gate.weight"].shape[0]
        mlp_hidden = int(gate)
    else:
        mlp_hidden = int(first["fc1.weight"].shape[0])
    data_cfg = preprocessing_config(processor, hf_size, family)
    input_size = tuple(data_cfg["input_size"][1:])
    if family != "dinov2" and input_size != hf_size:
        raise ConversionError(f"the preprocessor makes {input_size} images but the {family} model "
                              f"takes {hf_size} (config.image_size)")
    if input_size[0] % patch[0] or input_size[1] % patch[1]:
        raise ConversionError(f"input size {input_size} is not a multiple of the patch {patch}")
    grid = (input_size[0] // patch[0], input_size[1] // patch[1])
    reg_tokens = int(getattr(vision, "num_register_tokens", 0) or 0) \
        if family_type == "dinov2_with_registers" else 0

    out: Dict[str, torch.Tensor] = {}
    # embeddings
    if family == "clip":
        cls = _pop(top, "embeddings.class_embedding").reshape(1, 1, dim)
        out["patch_embed.proj.weight"] = _pop(top, "embeddings.patch_embedding.weight")
        pos = _pop(top, "embeddings.position_embedding.weight")[None]
        out["norm_pre.weight"] = _pop(top, "pre_layrnorm.weight", "pre_layernorm.weight")
        out["norm_pre.bias"] = _pop(top, "pre_layrnorm.bias", "pre_layernorm.bias")
    else:
        cls = _pop(top, "embeddings.cls_token")
        out["patch_embed.proj.weight"] = _pop(top, "embeddings.patch_embeddings.projection.weight")
        out["patch_embed.proj.bias"] = _pop(top, "embeddings.patch_embeddings.projection.bias")
        pos = _pop(top, "embeddings.position_embeddings")
    if cls is None or pos is None or out["patch_embed.proj.weight"] is None:
        raise ConversionError("the checkpoint lacks the class token, position or patch embeddings")
    if family == "dinov2":
        pos = _dinov2_positions(config, family_type, pos, grid, patch)
    dist = _pop(top, "embeddings.distillation_token")
    registers = _pop(top, "embeddings.register_tokens")
    if registers is not None:
        # HF: [cls + pos0, registers, patches + pos[1:]]. timm (no_embed_class=False) adds one
        # position per token, prefix tokens included: pos0 for the class token, zeros for the
        # registers, so every sum is made at run time in the run's dtype (exact in float64 from
        # a float32 checkpoint, where folding pos0 into the class token would round it).
        pos = torch.cat([pos[:, :1], pos.new_zeros(1, registers.shape[1], pos.shape[-1]),
                         pos[:, 1:]], dim=1)
        out["reg_token"] = registers
    elif dist is not None:
        out["reg_token" if "cls_classifier.weight" not in top else "dist_token"] = dist
    out["cls_token"] = cls
    out["pos_embed"] = pos
    # final norm
    norm_w = _pop(top, "layernorm.weight", "post_layernorm.weight")
    norm_b = _pop(top, "layernorm.bias", "post_layernorm.bias")
    # head
    head_bias = True
    if "cls_classifier.weight" in top:            # DeiT with teacher
        head = "distilled"
        out["head.weight"], out["head.bias"] = top.pop("cls_classifier.weight"), \
            top.pop("cls_classifier.bias")
        out["head_dist.weight"], out["head_dist.bias"] = \
            top.pop("distillation_classifier.weight"), top.pop("distillation_classifier.bias")
    elif "visual_projection.weight" in top and "classifier.weight" not in top:
        head, head_bias = "token", False          # CLIP with projection
        out["head.weight"] = top.pop("visual_projection.weight")
    elif "classifier.weight" in top:
        out["head.weight"], out["head.bias"] = top.pop("classifier.weight"), \
            top.pop("classifier.bias")
        head = {"dinov2": "token_mean", "clip": "avg"}.get(family, "token")
        top.pop("visual_projection.weight", None)
    else:
        raise ConversionError("the checkpoint has no classification head (classifier, "
                              "cls_classifier or visual_projection); explanations need class "
                              "logits: load it with an *ForImageClassification class")
    if head == "avg":
        norm_w = norm_b = None                     # CLIPForImageClassification skips it
    elif norm_w is None:
        raise ConversionError("the checkpoint lacks its final layernorm")
    else:
        out["norm.weight"], out["norm.bias"] = norm_w, norm_b
    top.pop("pooler.dense.weight", None)
    top.pop("pooler.dense.bias", None)
    if top:
        raise ConversionError(f"unexpected weights: {', '.join(sorted(top))[:300]}")
    # blocks
    for i in range(depth):
        layer = layers[i]
        b = f"blocks.{i}."
        for name in ("norm1", "norm2"):
            out[b + name + ".weight"] = layer.pop(name + ".weight")
            out[b + name + ".bias"] = layer.pop(name + ".bias")
        out[b + "attn.qkv.weight"] = torch.cat([layer.pop(f"{n}.weight") for n in "qkv"], dim=0)
        if "q.bias" in layer:
            out[b + "attn.qkv.bias"] = torch.cat([layer.pop(f"{n}.bias") for n in "qkv"], dim=0)
        out[b + "attn.proj.weight"] = layer.pop("o.weight")
        out[b + "attn.proj.bias"] = layer.pop("o.bias")
        if swiglu:
            for kind in ("weight", "bias"):
                if f"gate_up.{kind}" in layer:
                    out[b + f"mlp.fc1.{kind}"] = layer.pop(f"gate_up.{kind}")
                else:
                    out[b + f"mlp.fc1.{kind}"] = torch.cat(
                        [layer.pop(f"gate.{kind}"), layer.pop(f"up.{kind}")], dim=0)
        else:
            out[b + "mlp.fc1.weight"] = layer.pop("fc1.weight")
            out[b + "mlp.fc1.bias"] = layer.pop("fc1.bias")
        out[b + "mlp.fc2.weight"] = layer.pop("fc2.weight")
        out[b + "mlp.fc2.bias"] = layer.pop("fc2.bias")
        for name in ("ls1", "ls2"):
            if f"{name}.lambda1" in layer:
                out[b + name + ".gamma"] = layer.pop(f"{name}.lambda1")
        if layer:
            raise ConversionError(f"layer {i}: unexpected weights {sorted(layer)}")
    has_ls = "blocks.0.ls1.gamma" in out
    num_classes = int(out["head.weight"].shape[0])
    args = dict(head=head, img_size=list(input_size), patch_size=list(patch),
                num_classes=num_classes, embed_dim=dim, depth=depth,
                num_heads=int(vision.num_attention_heads),
                qkv_bias="blocks.0.attn.qkv.bias" in out,
                init_values=1.0 if has_ls else None, reg_tokens=reg_tokens + (
                    1 if "reg_token" in out and registers is None else 0),
                no_embed_class=False, pre_norm=family == "clip",
                eps=eps, act=act or "gelu", mlp_hidden=mlp_hidden, swiglu=swiglu,
                head_bias=head_bias)
    return args, out, data_cfg


def _finish(args: Dict[str, Any], state_dict: Dict[str, torch.Tensor], data_cfg: Dict[str, Any],
            label_names: Optional[List[str]], dtype: Optional[torch.dtype],
            source: str) -> nn.Module:
    dtype = dtype or state_dict["cls_token"].dtype
    model = build_timm_vit(args, dtype=dtype)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise ConversionError(f"converted weights do not fit: missing {missing}, "
                              f"unexpected {unexpected}")
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    cfg.update(data_cfg)
    cfg.update(num_classes=args["num_classes"], source=source)
    model.pretrained_cfg = cfg
    model.label_names = label_names
    model.timm_args = dict(args)
    return model.eval()


def _read_processor(path: Optional[str]) -> Optional[Dict[str, Any]]:
    if not path:
        return None
    file = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as handle:
        return json.load(handle)


def _cached_processor(name: str) -> Optional[Dict[str, Any]]:
    """The ``preprocessor_config.json`` of a model loaded with ``from_pretrained(name)``: from the
    directory ``name``, else from the hub cache (never the network); ``None`` if there is none."""
    if not name:
        return None
    if os.path.isdir(name):
        return _read_processor(name)
    try:
        from transformers.utils import cached_file
        path = cached_file(name, "preprocessor_config.json", local_files_only=True,
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:   # not a repository id, no cache: the family's defaults apply
        return None
    if not path:
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def is_transformers_model(obj: Any) -> bool:
    """Whether ``obj`` is a ``transformers`` model (judged by its class's module, so nothing is
    imported)."""
    return isinstance(obj, nn.Module) and type(obj).__module__.startswith("transformers.")


def find_weights(directory: str) -> str:
    """The weight file of a checkpoint directory (``model.safetensors``, else
    ``pytorch_model.bin``); :class:`ConversionError` when there is none."""
    for name in WEIGHT_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise ConversionError(f"{directory}: holds no {' or '.join(WEIGHT_FILES)}")


def read_weights(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a ``.bin`` (``torch.load(weights_only=True)``)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: not a state dict")
    return obj


def from_transformers(hf_model_or_path, dtype: Optional[torch.dtype] = None,
                      processor: Optional[Dict[str, Any]] = None) -> nn.Module:
    """An equal timm ``VisionTransformer`` (eval mode, on the given model's device) from a
    ``transformers`` model or a checkpoint directory (``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``).

    Args:
        hf_model_or_path: a ``transformers`` model object (left untouched) or a directory.
        dtype: the timm model's dtype (default: the checkpoint's); the model is built in it
            before the weights are loaded.
        processor: the ``preprocessor_config.json`` contents; default: the file next to the
            weights (a directory, or the model's ``name_or_path``: that directory or that hub
            repository's cached file, never fetched).

    The result carries ``pretrained_cfg`` (the preprocessing, see :func:`model_transform`),
    ``label_names`` (from ``id2label``, ``None`` for HF's ``LABEL_i`` placeholders) and
    ``timm_args`` (for :func:`save_timm_checkpoint`).
    """
    if isinstance(hf_model_or_path, (str, os.PathLike)):
        path = os.fspath(hf_model_or_path)
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConversionError(f"{path}: no config.json (not a transformers checkpoint)")
        from transformers import AutoConfig
        config = AutoConfig.from_pretrained(path)
        check_supported(config)
        state_dict = read_weights(find_weights(path))
        processor = processor if processor is not None else _read_processor(path)
        source = path
    elif is_transformers_model(hf_model_or_path):
        config = hf_model_or_path.config
        check_supported(config)
        state_dict = {k: v.detach() for k, v in hf_model_or_path.state_dict().items()}
        if processor is None:
            processor = _cached_processor(getattr(hf_model_or_path, "name_or_path", "") or "")
        source = getattr(hf_model_or_path, "name_or_path", "") or type(hf_model_or_path).__name__
    else:
        raise ConversionError(f"{type(hf_model_or_path).__name__} is neither a transformers "
                              "model nor a checkpoint directory")
    args, timm_sd, data_cfg = convert_state_dict(config, state_dict, processor)
    data_cfg = dict(data_cfg, architecture=(
        type(hf_model_or_path).__name__ if is_transformers_model(hf_model_or_path) else
        ((getattr(config, "architectures", None) or [config.model_type])[0])))
    model = _finish(args, timm_sd, data_cfg, _label_names(config, args["num_classes"]), dtype,
                    f"transformers:{source}")
    if is_transformers_model(hf_model_or_path):   # on the caller's model's device
        model.to(next(hf_model_or_path.parameters()).device)
    return model


#: ``config.architectures`` that hold a CLIP vision tower but are not vision-only classes
_CLIP_TOWERS = ("CLIPModel", "CLIPVisionModel")


def hf_model_class(config):
    """The ``transformers`` class to load a checkpoint with: its ``config.architectures[0]``,
    a full ``CLIPModel`` read as ``CLIPVisionModelWithProjection``."""
    import transformers
    check_supported(config)
    name = (getattr(config, "architectures", None) or [None])[0]
    if name in _CLIP_TOWERS:
        name = "CLIPVisionModelWithProjection"
    cls = getattr(transformers, name, None) if name else None
    if cls is None:
        raise ConversionError(f"config.architectures names {name!r}, which this transformers "
                              f"{transformers.__version__} does not have")
    return cls


def from_pretrained(repo_id: str, dtype: Optional[torch.dtype] = None, **kwargs) -> nn.Module:
    """:func:`from_transformers` of ``from_pretrained(repo_id)`` (a hub repository, downloaded
    and cached by ``transformers`` as usual, or a local directory), with the repository's
    ``preprocessor_config.json`` when it has one. ``kwargs`` go to ``from_pretrained``."""
    from transformers import AutoConfig
    from transformers.utils import cached_file
    config = AutoConfig.from_pretrained(repo_id, **kwargs)
    model = hf_model_class(config).from_pretrained(repo_id, **kwargs)
    processor_file = cached_file(repo_id, "preprocessor_config.json",
                                 _raise_exceptions_for_missing_entries=False, **kwargs)
    processor = None
    if processor_file:
        with open(processor_file, encoding="utf-8") as handle:
            processor = json.load(handle)
    return from_transformers(model, dtype=dtype, processor=processor)


# -- timm checkpoints that need no transformers ---------------------------------------------------
def save_timm_checkpoint(model: nn.Module, path: str) -> None:
    """Write a converted model to one ``.pth``: weights, constructor arguments (``timm_args``),
    label names and preprocessing (``pretrained_cfg``), read back by
    :func:`load_timm_checkpoint` with ``weights_only=True`` and without ``transformers``."""
    args = getattr(model, "timm_args", None)
    if args is None:
        raise ValueError("the model has no timm_args: save a model made by from_transformers")
    cfg = {k: (list(v) if isinstance(v, tuple) else v)
           for k, v in (getattr(model, "pretrained_cfg", {}) or {}).items()
           if isinstance(v, (str, int, float, bool, list, tuple, type(None)))}
    torch.save({"format": CHECKPOINT_FORMAT, "args": dict(args),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "label_names": list(model.label_names) if getattr(model, "label_names", None)
                else None,
                "pretrained_cfg": cfg}, path)


def is_timm_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def model_from_timm_checkpoint(obj: Dict[str, Any], dtype: Optional[torch.dtype] = None,
                               source: str = "") -> nn.Module:
    """The model of an already read :func:`save_timm_checkpoint` dict."""
    cfg = dict(obj["pretrained_cfg"])
    for key in ("input_size", "mean", "std"):
        if key in cfg:
            cfg[key] = tuple(cfg[key])
    model = _finish(obj["args"], obj["state_dict"], cfg, obj.get("label_names"), dtype,
                    cfg.get("source", source))
    return model


def load_timm_checkpoint(path: str, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """The model saved by :func:`save_timm_checkpoint` (eval mode, no ``transformers``)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not is_timm_checkpoint(obj):
        raise ConversionError(f"{path}: not a checkpoint written by save_timm_checkpoint")
    return model_from_timm_checkpoint(obj, dtype, path)
