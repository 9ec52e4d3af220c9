"""Image-text models (CLIP): a timm ViT image tower and the model's own text tower.

:class:`ImageTextModel` is what every explanation of a text prompt starts from:

- ``visual``: the image tower as the project's timm ViT (:mod:`models.forward` runs it), whose
  ``head`` is CLIP's final projection (no bias): ``visual(images)`` are the image embeddings,
  before the L2 normalisation;
- ``encode_text(prompts)``: the prompts' embeddings from the model's own tokenizer and text tower
  (before normalisation);
- ``logit_scale``: CLIP's temperature, already exponentiated (100 for OpenAI's CLIP).

``model(images, prompts)`` is CLIP's ``logits_per_image``:
``logit_scale * normalize(visual(images)) @ normalize(encode_text(prompts)).T``.
``agcam.clip`` turns one into a classifier of prompts.

Three families (:func:`create_clip`):

- ``hf:<repo>`` or a folder holding a transformers ``CLIPModel`` (``--checkpoint DIR``):
  the vision tower converted by :func:`models.transformers.from_transformers` (exact in float64),
  the text tower and tokenizer are transformers' own;
- ``open_clip:<arch>/<pretrained>`` (``open_clip_torch``, optional extra ``clip``): the vision
  tower converted by :func:`convert_open_clip_visual` (class-token models; attention-pooling ones
  such as SigLIP keep ``global_pool = "map"``, which the methods that need a class token refuse),
  the text tower and tokenizer are open_clip's;
- ``clip_agcam_learnt``: the small CLIP trained here on the synthetic shapes
  (:mod:`agcam.train.clip`), a word tokenizer and a small text transformer (:class:`TextTower`),
  weights committed in ``models/weights/``.

The heavy libraries (transformers, open_clip) are imported inside the functions that need them.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.vit import ModelError, WeightsUnavailableError, prepare_hub

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
LEARNT_CLIP = "clip_agcam_learnt"
#: the committed weights of the learnt CLIP (float16 safetensors) and its training log
LEARNT_CLIP_WEIGHTS = os.path.join(WEIGHTS_DIR, f"{LEARNT_CLIP}.safetensors")
LEARNT_CLIP_LOG = os.path.join(WEIGHTS_DIR, f"{LEARNT_CLIP}.json")


class ClipError(ModelError):
    """An image-text model that cannot be created (a user error, exit code 2)."""


class ImageTextModel(nn.Module):
    """A CLIP-like model: ``visual`` (timm ViT, head = the final projection), a text encoder
    (``text``: a module mapping a list of prompts to ``[P, E]`` embeddings), the log of the logit
    scale (a buffer, so that the scale is computed in the model's dtype as the libraries do) and
    SigLIP's logit bias (or ``None``). ``family`` names where it came from (``hf``,
    ``open_clip``, ``learnt``)."""

    def __init__(self, visual: nn.Module, text: nn.Module, log_scale, family: str,
                 name: str = "", logit_bias=None):
        super().__init__()
        self.visual, self.text = visual, text
        self.register_buffer("log_scale", torch.as_tensor(log_scale).detach().clone().reshape(()))
        self.register_buffer("logit_bias", None if logit_bias is None else
                             torch.as_tensor(logit_bias).detach().clone().reshape(()))
        self.family, self.name = family, name

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def pretrained_cfg(self) -> Dict[str, Any]:
        return self.visual.pretrained_cfg

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, E]``: the image embeddings (after the final projection)."""
        return self.visual(images)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[P, E]``: the prompts' embeddings (after the text projection)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.text(list(prompts))

    def forward(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP's ``logits_per_image`` ``[B, P]`` (plus SigLIP's bias)."""
        image = F.normalize(self.encode_image(images), dim=-1)
        text = F.normalize(self.encode_text(prompts), dim=-1)
        logits = self.logit_scale * image @ text.T
        return logits if self.logit_bias is None else logits + self.logit_bias


class ZeroShotHead(nn.Linear):
    """The head of a zero-shot classifier: CLIP's projection, the L2 normalisation of the image
    embedding and a linear map onto the prompts' normalised embeddings times the logit scale
    (plus SigLIP's bias): ``logits = classifier @ normalize(projection(x)) (+ logit_bias)``.

    It is an ``nn.Linear`` whose ``weight`` (``[P, C]``, frozen) is the composed linear map
    ``classifier @ projection``, so that code reading a linear classifier's weight (LRP's head
    rule) reads the map the logits are made of: the normalisation is one positive number per
    image, which a rule that shares a linear layer's relevance in proportion to its inputs'
    contributions cancels. ``forward`` is the exact CLIP computation."""

    def __init__(self, projection: nn.Module, classifier: torch.Tensor,
                 logit_bias: Optional[torch.Tensor] = None):
        composed = classifier if isinstance(projection, nn.Identity) else \
            classifier @ projection.weight.to(classifier.dtype)
        super().__init__(composed.shape[1], composed.shape[0], bias=False,
                         dtype=composed.dtype, device=composed.device)
        with torch.no_grad():
            self.weight.copy_(composed)
        self.weight.requires_grad_(False)
        self.projection = projection
        self.register_buffer("classifier", classifier.detach().clone())
        self.register_buffer("logit_bias", None if logit_bias is None else
                             logit_bias.detach().clone().reshape(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.normalize(self.projection(x), dim=-1) @ self.classifier.T
        return logits if self.logit_bias is None else logits + self.logit_bias


# -- the learnt CLIP's text side ------------------------------------------------------------------
#: the words the learnt CLIP knows (any other word is ``<unk>``)
LEARNT_WORDS = ("a", "an", "photo", "of", "the", "shape", "object", "red", "yellow", "green",
                "blue", "plain", "striped", "circle", "disc", "square", "triangle", "cross")
SPECIALS = ("<pad>", "<sot>", "<eot>", "<unk>")


class WordTokenizer:
    """Lower-cased words to ids: ``<sot> words <eot> <pad>...``, cut to ``context`` tokens."""

    def __init__(self, words: Sequence[str] = LEARNT_WORDS, context: int = 12):
        self.vocab = list(SPECIALS) + list(words)
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        self.context = context

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(prompts), self.context, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = re.findall(r"[a-z]+", prompt.lower())[:self.context - 2]
            ids = [1] + [self.ids.get(w, 3) for w in words] + [2]
            out[row, :len(ids)] = torch.tensor(ids)
        return out


#: the learnt CLIP's text tower (and its tokenizer's context)
LEARNT_TEXT = dict(width=64, depth=2, heads=4, context=12)
#: the learnt CLIP's image tower (timm VisionTransformer arguments; head = the projection)
LEARNT_VISION = dict(img_size=112, patch_size=16, embed_dim=128, depth=5, num_heads=4,
                     mlp_ratio=3.0, qkv_bias=True)
LEARNT_EMBED = 64


class TextTower(nn.Module):
    """CLIP's text transformer, small: token and position embeddings, pre-norm blocks with a
    causal mask, the final norm, the ``<eot>`` token's features, a projection (no bias)."""

    def __init__(self, width: int, depth: int, heads: int, context: int, embed: int,
                 tokenizer: Optional[WordTokenizer] = None):
        super().__init__()
        self.tokenizer = tokenizer or WordTokenizer(context=context)
        self.token_embedding = nn.Embedding(len(self.tokenizer), width)
        self.positional_embedding = nn.Parameter(torch.zeros(context, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed, bias=False)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        mask = torch.full((context, context), float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding[:tokens.shape[1]]
        mask = self.causal_mask[:tokens.shape[1], :tokens.shape[1]].to(x.dtype)
        x = self.ln_final(self.blocks(x, mask=mask))
        eot = (tokens == 2).int().argmax(dim=1)
        return self.projection(x[torch.arange(len(tokens)), eot])

    def forward(self, prompts: List[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts).to(self.positional_embedding.device)
        return self.forward_tokens(tokens)


def learnt_visual(num_classes: int = LEARNT_EMBED) -> nn.Module:
    """The learnt CLIP's image tower (random init): a timm ViT whose head is the projection."""
    from timm.models.vision_transformer import VisionTransformer
    visual = VisionTransformer(num_classes=num_classes, global_pool="token", **LEARNT_VISION)
    visual.head = nn.Linear(visual.head.in_features, num_classes, bias=False)
    size = LEARNT_VISION["img_size"]
    cfg = getattr(visual, "pretrained_cfg", None) or {}
    visual.pretrained_cfg = dict(cfg, input_size=(3, size, size),
                                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0,
                                 interpolation="bilinear", architecture=LEARNT_CLIP)
    return visual


def learnt_clip(log_scale: float = math.log(1 / 0.07)) -> ImageTextModel:
    """The learnt CLIP's architecture, randomly initialised."""
    text = TextTower(embed=LEARNT_EMBED, **LEARNT_TEXT)
    return ImageTextModel(learnt_visual(), text, log_scale, family="learnt", name=LEARNT_CLIP)


def load_learnt_clip(path: str = LEARNT_CLIP_WEIGHTS) -> ImageTextModel:
    """The learnt CLIP with the weights at ``path`` (float16 safetensors, float32 model: the
    towers' tensors and ``logit_scale``, the log of the scale)."""
    if not os.path.isfile(path):
        raise ClipError(f"{path}: no such weights file")
    from safetensors.torch import load_file
    state = {k: v.float() for k, v in load_file(path).items()}
    if "logit_scale" not in state:
        raise ClipError(f"{path}: not the weights of {LEARNT_CLIP} (no logit_scale)")
    state["log_scale"] = state.pop("logit_scale")
    model = learnt_clip()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ClipError(f"{path}: not the weights of {LEARNT_CLIP} (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]})")
    return model.eval()


def learnt_state_dict(model: ImageTextModel, log_scale: torch.Tensor) -> Dict[str, torch.Tensor]:
    """What :func:`load_learnt_clip` reads: the towers' tensors and the log of the scale."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k != "log_scale"}
    state["logit_scale"] = log_scale.detach().reshape(())
    return state


# -- Hugging Face CLIPModel ----------------------------------------------------------------------
class HFTextTower(nn.Module):
    """transformers' CLIP text side: its tokenizer, ``text_model`` and ``text_projection``
    (``CLIPModel.get_text_features``)."""

    def __init__(self, text_model: nn.Module, text_projection: nn.Module, tokenizer):
        super().__init__()
        self.text_model, self.text_projection = text_model, text_projection
        self.tokenizer = tokenizer

    def forward(self, prompts: List[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt")
        device = self.text_projection.weight.device
        out = self.text_model(input_ids=tokens["input_ids"].to(device),
                              attention_mask=tokens["attention_mask"].to(device))
        return self.text_projection(out.pooler_output)


def from_hf_clip(hf_model, tokenizer, processor: Optional[Dict[str, Any]] = None
                 ) -> ImageTextModel:
    """An :class:`ImageTextModel` of a transformers ``CLIPModel`` (its vision tower converted
    exactly by :func:`models.transformers.from_transformers`, its text tower kept)."""
    from models.transformers import from_transformers
    if type(hf_model).__name__ != "CLIPModel":
        raise ClipError(f"{type(hf_model).__name__} is not a transformers CLIPModel")
    visual = from_transformers(hf_model, processor=processor)
    text = HFTextTower(hf_model.text_model, hf_model.text_projection, tokenizer)
    return ImageTextModel(visual, text, hf_model.logit_scale, family="hf",
                          name=getattr(hf_model, "name_or_path", "") or "CLIPModel")


def _load_hf_clip(source: str) -> ImageTextModel:
    """``CLIPModel`` and its tokenizer from a hub repository (cache) or a directory."""
    from transformers import AutoTokenizer, CLIPModel

    from models.transformers import ConversionError, _cached_processor
    hf_model = CLIPModel.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    try:
        return from_hf_clip(hf_model, tokenizer, _cached_processor(source)).eval()
    except ConversionError as exc:
        raise ClipError(f"{source}: {exc}") from None


# -- open_clip ------------------------------------------------------------------------------------
class OpenClipTextTower(nn.Module):
    """open_clip's text side: its tokenizer and the model's ``encode_text`` (the vision tower is
    dropped from the kept model)."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def forward(self, prompts: List[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(prompts).to(device))


def _activation(module: nn.Module) -> str:
    """timm's name of an open_clip MLP activation (exact equivalents only)."""
    from models.transformers import ConversionError
    name = type(module).__name__
    if name == "QuickGELU":
        return "quick_gelu"
    if isinstance(module, nn.GELU):
        return "gelu_tanh" if module.approximate == "tanh" else "gelu"
    raise ConversionError(f"open_clip activation {name} has no exact timm equivalent")


def _data_cfg(visual: nn.Module, size) -> Dict[str, Any]:
    """timm's data config of open_clip's evaluation transform (resize the shorter side, centre
    crop, the model's mean, std and interpolation)."""
    cfg = dict(getattr(visual, "preprocess_cfg", None) or {})
    mean = tuple(float(m) for m in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
    std = tuple(float(s) for s in cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    mode = {"squash": "squash"}.get(cfg.get("resize_mode", "shortest"), "center")
    return dict(input_size=(3, *size), interpolation=cfg.get("interpolation", "bicubic"),
                mean=mean, std=std, crop_pct=1.0, crop_mode=mode)


def convert_open_clip_visual(visual: nn.Module) -> nn.Module:
    """An equal timm ViT (its ``head`` the final projection) from open_clip's image tower:
    its own ``VisionTransformer`` with class-token pooling (``conv1`` without bias,
    ``class_embedding``, ``ln_pre``, residual blocks of ``nn.MultiheadAttention``, layer scale,
    ``ln_post``, ``proj``), or a timm trunk (``TimmModel``: SigLIP's attention-pooling
    ``vit_*_siglip`` among them) whose linear projection becomes the head."""
    import copy

    from models.transformers import ConversionError, _finish
    if hasattr(visual, "trunk"):                   # open_clip's TimmModel: already timm
        trunk = copy.deepcopy(visual.trunk)
        if not hasattr(trunk, "blocks") or not hasattr(trunk, "patch_embed"):
            raise ConversionError(f"open_clip timm tower {type(trunk).__name__} is not a ViT")
        layers = dict(visual.head.named_children()) if isinstance(visual.head, nn.Sequential) \
            else {}
        if set(layers) - {"drop", "proj"} or (not isinstance(layers.get("proj", nn.Linear(1, 1)),
                                                              nn.Linear)):
            raise ConversionError(f"open_clip head {sorted(layers)} is not a linear projection")
        if "proj" in layers:
            trunk.head = copy.deepcopy(layers["proj"])
            trunk.num_classes = trunk.head.out_features
        cfg = dict(getattr(trunk, "pretrained_cfg", None) or {})
        cfg.update(_data_cfg(visual, tuple(trunk.patch_embed.img_size)))
        trunk.pretrained_cfg = cfg
        return trunk.eval()
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") \
            != "tok":
        raise ConversionError("open_clip tower pools with attention or by the mean; only "
                              "class-token pooling converts")
    blocks = list(visual.transformer.resblocks)
    first = blocks[0]
    if type(first).__name__ != "ResidualAttentionBlock" or \
            not isinstance(first.attn, nn.MultiheadAttention):
        raise ConversionError(f"open_clip block {type(first).__name__} (custom attention) does "
                              "not convert")
    width = int(visual.class_embedding.shape[0])
    layer_scale = not isinstance(first.ls_1, nn.Identity)
    pre_norm = not isinstance(visual.ln_pre, nn.Identity)
    size, patch = tuple(visual.image_size), tuple(visual.patch_size)
    out: Dict[str, torch.Tensor] = {
        "patch_embed.proj.weight": visual.conv1.weight,
        "cls_token": visual.class_embedding.reshape(1, 1, width),
        "pos_embed": visual.positional_embedding[None],
        "norm.weight": visual.ln_post.weight, "norm.bias": visual.ln_post.bias,
        "head.weight": visual.proj.T,
    }
    if pre_norm:
        out["norm_pre.weight"], out["norm_pre.bias"] = visual.ln_pre.weight, visual.ln_pre.bias
    else:
        out["patch_embed.proj.bias"] = visual.conv1.weight.new_zeros(width)
    for i, blk in enumerate(blocks):
        b = f"blocks.{i}."
        out.update({b + "norm1.weight": blk.ln_1.weight, b + "norm1.bias": blk.ln_1.bias,
                    b + "attn.qkv.weight": blk.attn.in_proj_weight,
                    b + "attn.qkv.bias": blk.attn.in_proj_bias,
                    b + "attn.proj.weight": blk.attn.out_proj.weight,
                    b + "attn.proj.bias": blk.attn.out_proj.bias,
                    b + "norm2.weight": blk.ln_2.weight, b + "norm2.bias": blk.ln_2.bias,
                    b + "mlp.fc1.weight": blk.mlp.c_fc.weight,
                    b + "mlp.fc1.bias": blk.mlp.c_fc.bias,
                    b + "mlp.fc2.weight": blk.mlp.c_proj.weight,
                    b + "mlp.fc2.bias": blk.mlp.c_proj.bias})
        if layer_scale:
            out[b + "ls1.gamma"], out[b + "ls2.gamma"] = blk.ls_1.gamma, blk.ls_2.gamma
    out = {k: v.detach().clone() for k, v in out.items()}
    args = dict(head="token", img_size=list(size), patch_size=list(patch),
                num_classes=int(visual.proj.shape[1]), embed_dim=width, depth=len(blocks),
                num_heads=int(first.attn.num_heads), qkv_bias=True,
                init_values=1.0 if layer_scale else None, reg_tokens=0, no_embed_class=False,
                pre_norm=pre_norm, eps=float(first.ln_1.eps), act=_activation(first.mlp.gelu),
                mlp_hidden=int(first.mlp.c_fc.weight.shape[0]), swiglu=False, head_bias=False)
    model = _finish(args, out, _data_cfg(visual, size), None, visual.conv1.weight.dtype,
                    "open_clip")
    return model.to(visual.conv1.weight.device)


def from_open_clip(model: nn.Module, tokenizer, name: str = "open_clip") -> ImageTextModel:
    """An :class:`ImageTextModel` of an open_clip ``CLIP`` / ``CustomTextCLIP`` (its image tower
    converted by :func:`convert_open_clip_visual`, its text side kept)."""
    import copy

    from models.transformers import ConversionError
    try:
        visual = convert_open_clip_visual(model.visual)
    except ConversionError as exc:
        raise ClipError(f"{name}: {exc}") from None
    text_model = copy.copy(model)          # the same modules, without the image tower
    text_model._modules = {k: v for k, v in model._modules.items() if k != "visual"}
    bias = getattr(model, "logit_bias", None)
    return ImageTextModel(visual, OpenClipTextTower(text_model, tokenizer), model.logit_scale,
                          family="open_clip", name=name, logit_bias=bias)


def _load_open_clip(spec: str, directory: Optional[str] = None) -> ImageTextModel:
    """``open_clip:<arch>/<pretrained>`` (the hub cache) or an open_clip folder
    (``open_clip_config.json`` and its weights)."""
    try:
        import open_clip
    except ImportError as exc:
        raise ClipError(f"open_clip models need the open_clip_torch package (pip install "
                        f"open_clip_torch, or the project's extra [clip]): {exc}") from None
    if directory is not None:
        name = pretrained = None
        model_name = f"local-dir:{directory}"
    else:
        name, _, pretrained = spec.partition("/")
        model_name = name
        if not name:
            raise ClipError(f"--model open_clip:{spec}: give open_clip:<arch>/<pretrained>")
    model = open_clip.create_model(model_name, pretrained=pretrained or None)
    tokenizer = open_clip.get_tokenizer(model_name)
    return from_open_clip(model.eval(), tokenizer, name=directory or spec).eval()


# -- creating one by name -------------------------------------------------------------------------
def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _guarded(load: Callable[[], ImageTextModel], what: str, hub: bool) -> ImageTextModel:
    """Run a loader; every failure is one line naming ``what`` (offline: at once, from the
    hub check of :func:`models.vit.prepare_hub`)."""
    how = prepare_hub() if hub else None
    try:
        return load()
    except ModelError:
        raise
    except ImportError as exc:
        raise ClipError(f"{what}: {_first_line(exc)}") from None
    except Exception as exc:   # hub, network, cache and format errors come in many types
        if hub:
            raise WeightsUnavailableError(
                f"{what}: could not load it ({_first_line(exc)}){'; ' + how if how else ''}; "
                "without network pass a local copy: --checkpoint DIR") from None
        raise ClipError(f"{what}: could not load it ({_first_line(exc)})") from None


def is_clip_name(name: Optional[str]) -> bool:
    """Whether ``--model name`` names an image-text model."""
    return bool(name) and (name.startswith(("hf:", "open_clip:")) or name == LEARNT_CLIP)


def create_clip(name: str = LEARNT_CLIP, checkpoint: Optional[str] = None,
                dtype: Optional[torch.dtype] = None) -> ImageTextModel:
    """An :class:`ImageTextModel` by name or from a folder, in eval mode:

    * ``clip_agcam_learnt`` (the committed weights; ``checkpoint``: another weights file);
    * ``hf:<repo or directory>``: transformers' ``CLIPModel`` and tokenizer (hub cache);
    * ``open_clip:<arch>/<pretrained>``: open_clip's model and tokenizer (hub cache);
    * ``checkpoint`` a directory: a transformers ``CLIPModel`` (``config.json``) or an open_clip
      folder (``open_clip_config.json``), whatever ``name`` says.

    Without network a hub name fails within seconds with one line (:func:`models.vit.prepare_hub`).
    """
    if checkpoint is not None and os.path.isdir(checkpoint):
        if os.path.isfile(os.path.join(checkpoint, "open_clip_config.json")):
            model = _guarded(lambda: _load_open_clip("", checkpoint), f"--checkpoint {checkpoint}",
                             hub=False)
        elif os.path.isfile(os.path.join(checkpoint, "config.json")):
            model = _guarded(lambda: _load_hf_clip(checkpoint), f"--checkpoint {checkpoint}",
                             hub=False)
        else:
            raise ClipError(f"--checkpoint {checkpoint}: holds neither config.json (transformers) "
                            "nor open_clip_config.json (open_clip)")
    elif name == LEARNT_CLIP:
        model = load_learnt_clip(checkpoint or LEARNT_CLIP_WEIGHTS)
    elif name.startswith("hf:"):
        repo = name[len("hf:"):]
        model = _guarded(lambda: _load_hf_clip(repo), f"--model {name}",
                         hub=not os.path.isdir(repo))
    elif name.startswith("open_clip:"):
        spec = name[len("open_clip:"):]
        model = _guarded(lambda: _load_open_clip(spec), f"--model {name}", hub=True)
    else:
        raise ClipError(f"--model {name}: not an image-text model (choose hf:<repo>, "
                        f"open_clip:<arch>/<pretrained> or {LEARNT_CLIP})")
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def as_image_text(model: Any) -> ImageTextModel:
    """``model`` as an :class:`ImageTextModel`: itself, a transformers ``CLIPModel`` (its tokenizer
    from its ``name_or_path``, cache only) or an open_clip model (the tokenizer of a built-in
    architecture is open_clip's default BPE)."""
    if isinstance(model, ImageTextModel):
        return model
    kind = type(model).__module__
    if kind.startswith("transformers."):
        from transformers import AutoTokenizer
        source = getattr(model, "name_or_path", "")
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise ClipError(f"no tokenizer for {source or type(model).__name__} in the cache "
                            f"({_first_line(exc)}); pass models.clip.from_hf_clip(model, "
                            "tokenizer)") from None
        return from_hf_clip(model, tokenizer)
    if kind.startswith("open_clip."):
        import open_clip
        context = int(getattr(model, "context_length", 77) or 77)
        return from_open_clip(model, open_clip.get_tokenizer("", context_length=context))
    raise ClipError(f"{type(model).__name__} is not an image-text model (models.clip."
                    "ImageTextModel, a transformers CLIPModel or an open_clip model)")
